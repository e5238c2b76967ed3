"""simulate_batch on an accelerator: batches of 10⁴…10⁷ neurons, 250 ms, dt 0.025 ms.

    python benchmarks/gpu.py [float32|float64] [max_neurons]

Writes benchmarks/results/gpu_<device>_<dtype>[_<tag>].json with the device named. Same
workload as the CPU batch table (NEURON hh.mod parameters, steps 0–20 µA/cm² from 5 ms,
features only).

XLA's on-device while loops (command buffers that include `WHILE`) are tried by running the
script a second time with the flag and a tag for the file name:

    XLA_FLAGS=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUSTOM_CALL,WHILE,CONDITIONAL \
        HHJAX_BENCH_TAG=while python benchmarks/gpu.py float32
"""

import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp

import hhjax

DTYPE = sys.argv[1] if len(sys.argv) > 1 else "float32"
if DTYPE == "float64":
    jax.config.update("jax_enable_x64", True)
HERE = pathlib.Path(__file__).resolve().parent


def main(max_neurons=10**7, t1=250.0, dt=0.025):
    dtype = jnp.dtype(DTYPE)
    device = jax.devices()[0]
    p = hhjax.HHParams.neuron().astype(dtype)
    y0 = hhjax.steady_state(p, -65.0)
    rows = []
    n = 10**4
    while n <= max_neurons:
        stim = hhjax.Step(jnp.linspace(0.0, 20.0, n, dtype=dtype), 5.0)
        run = lambda stim=stim: jax.block_until_ready(
            hhjax.simulate_batch(p, stim, t1, dt=dt, y0=y0, max_spikes=16, progress=False)
        )
        start = time.perf_counter()
        feats = run()
        first = time.perf_counter() - start
        times = []
        for _ in range(5):
            start = time.perf_counter()
            feats = run()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        rows.append(
            dict(
                neurons=n,
                median_s=median,
                first_call_s=first,
                neuron_steps_per_s=n * round(t1 / dt) / median,
                mean_spike_count=float(jnp.mean(feats.spike_count)),
            )
        )
        print(rows[-1], flush=True)
        n *= 10
    tag = os.environ.get("HHJAX_BENCH_TAG", "")
    out = dict(device=str(device.device_kind), platform=device.platform, dtype=DTYPE, rows=rows,
               xla_flags=os.environ.get("XLA_FLAGS", ""), devices=jax.local_device_count())
    name = f"gpu_{device.device_kind.replace(' ', '_')}_{DTYPE}{'_' + tag if tag else ''}.json"
    (HERE / "results" / name).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(int(float(sys.argv[2])) if len(sys.argv) > 2 else 10**7)
