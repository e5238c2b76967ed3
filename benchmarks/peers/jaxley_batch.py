"""Jaxley: one HH compartment, `jit(vmap)` over step amplitudes, features reduced inside jit."""

import os

import jax

if os.environ.get("BENCH_X64") == "1":
    jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import jaxley as jx
import numpy as np
from _common import amplitudes, emit, n_steps, timed, workload
from jaxley.channels import HH

w = workload()
dt, t_max = w["dt_ms"], w["t_ms"]
comp = jx.Compartment()
comp.set("radius", 56.41895835477563 / 2)  # µm; area 10,000 µm² as in NEURON
comp.set("length", 56.41895835477563)
comp.insert(HH())
comp.set("v", -65.0)
comp.init_states()
comp.record("v", verbose=False)
max_spikes = w["max_spikes"]
dtype = jnp.float64 if os.environ.get("BENCH_X64") == "1" else jnp.float32
ts = jnp.arange(n_steps(w) + 1) * dt


def features(amp):
    current = jx.step_current(w["t_on"], 1e9, amp, dt, t_max)  # nA
    stim = comp.data_stimulate(current, verbose=False)
    v = jx.integrate(comp, data_stimuli=stim, delta_t=dt, t_max=t_max)[0]
    v = v[: ts.shape[0]]
    up = (v[:-1] < 0.0) & (v[1:] >= 0.0)
    (k,) = jnp.nonzero(up, size=max_spikes, fill_value=0)
    times = ts[k] + (0.0 - v[k]) * dt / (v[k + 1] - v[k])
    valid = jnp.arange(max_spikes) < jnp.sum(up)
    return jnp.sum(up), jnp.where(valid, times, jnp.nan)


simulate = jax.jit(jax.vmap(features))
amps_na = jnp.asarray(amplitudes(w) * 0.1, dtype)  # µA/cm² × 1e-4 cm² -> nA


def run():
    return jax.block_until_ready(simulate(amps_na))


first, times, (counts, spike_times) = timed(run, w["repeats"])
sub = w["subset"]
counts, spike_times = np.asarray(counts), np.asarray(spike_times)
emit(
    w,
    f"Jaxley ({jnp.dtype(dtype).name}), jit(vmap), features",
    jx.__version__ if hasattr(jx, "__version__") else "?",
    first,
    times,
    counts[sub],
    [st[~np.isnan(st)] for st in spike_times[sub]],
    jax=jax.__version__,
)
