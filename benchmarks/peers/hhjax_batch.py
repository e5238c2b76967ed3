"""hhjax.simulate_batch: features only, exponential Euler, one compiled scan (this repository)."""

import os

import jax

if os.environ.get("BENCH_X64") == "1":
    jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from _common import amplitudes, emit, timed, workload

import hhjax

w = workload()
dtype = jnp.float64 if os.environ.get("BENCH_X64") == "1" else jnp.float32
# BENCH_MODEL=pospischil_rs: the same workload on the Pospischil regular-spiking cell (the
# model contract's generic step, 4 gates against HH's 3), amplitudes scaled by 0.25 (its
# rheobase is a few µA/cm², not HH's ~6) so that both fire over most of the ramp. Speed only:
# the HH reference does not apply.
cortical = os.environ.get("BENCH_MODEL") == "pospischil_rs"
if cortical:
    from hhjax.models import Pospischil

    p = Pospischil.regular_spiking().astype(dtype)
    stim = hhjax.Step(jnp.asarray(0.25 * amplitudes(w), dtype), w["t_on"])
    y0 = hhjax.rest_state(p)
else:
    p = hhjax.HHParams.neuron().astype(dtype)
    stim = hhjax.Step(jnp.asarray(amplitudes(w), dtype), w["t_on"])
    y0 = hhjax.steady_state(p, -65.0)


def run():
    feats = hhjax.simulate_batch(
        p, stim, w["t_ms"], dt=w["dt_ms"], y0=y0, max_spikes=w["max_spikes"], progress=False
    )
    return jax.block_until_ready(feats)


first, times, feats = timed(run, w["repeats"])
sub = w["subset"]
counts, spike_times = np.asarray(feats.spike_count), np.asarray(feats.spike_times)
devices = jax.local_device_count()
emit(
    w,
    f"hhjax simulate_batch{', Pospischil RS' if cortical else ''} ({jnp.dtype(dtype).name}, "
    f"{devices} CPU device{'s' * (devices > 1)})",
    hhjax.__version__,
    first,
    times,
    counts[sub],
    [st[~np.isnan(st)] for st in spike_times[sub]],
    devices=devices,
    jax=jax.__version__,
)
