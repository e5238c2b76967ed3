"""hhjax.simulate_batch on the Pospischil regular-spiking cortical model (this repository).

The same batch workload as `hhjax_batch.py` (neurons, duration, step, amplitude ramp), on
`hhjax.models.Pospischil.regular_spiking()` instead of HH: the generic Rush–Larsen step of the
model contract, four gates (m, h, n, p) against HH's three. Amplitudes are scaled by 0.25 (the
cortical cell's rheobase is a few µA/cm², not HH's ~6), so both models fire over most of the
ramp. Compared per neuron-step with HH, not for accuracy (no reference here).
"""

import os

import jax

if os.environ.get("BENCH_X64") == "1":
    jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from _common import amplitudes, emit, timed, workload

import hhjax
from hhjax.models import Pospischil

w = workload()
dtype = jnp.float64 if os.environ.get("BENCH_X64") == "1" else jnp.float32
model = Pospischil.regular_spiking().astype(dtype)
stim = hhjax.Step(jnp.asarray(0.25 * amplitudes(w), dtype), w["t_on"])
y0 = hhjax.rest_state(model)


def run():
    feats = hhjax.simulate_batch(
        model, stim, w["t_ms"], dt=w["dt_ms"], y0=y0, max_spikes=w["max_spikes"], progress=False
    )
    return jax.block_until_ready(feats)


first, times, feats = timed(run, w["repeats"])
sub = w["subset"]
counts, spike_times = np.asarray(feats.spike_count), np.asarray(feats.spike_times)
devices = jax.local_device_count()
emit(
    w,
    f"hhjax simulate_batch, Pospischil RS ({jnp.dtype(dtype).name}, {devices} CPU device"
    f"{'s' * (devices > 1)})",
    hhjax.__version__,
    first,
    times,
    counts[sub],
    [st[~np.isnan(st)] for st in spike_times[sub]],
    devices=devices,
    jax=jax.__version__,
    mean_spikes=float(np.mean(np.asarray(feats.spike_count))),
)
