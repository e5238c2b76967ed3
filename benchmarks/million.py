"""10⁶ HH neurons × 1 s, features only, float32: simulate_batch chunks automatically.

Run:  python benchmarks/million.py [neurons]   (one CPU device: one thread per core)
Writes benchmarks/results/million.json (wall time, peak memory, features summary).
"""

import json
import os
import pathlib
import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import hhjax

HERE = pathlib.Path(__file__).resolve().parent


def main(n=1_000_000, t1=1000.0, dt=0.025):
    p = hhjax.HHParams.neuron().astype(jnp.float32)
    amplitudes = jnp.linspace(0.0, 20.0, n, dtype=jnp.float32)
    start = time.perf_counter()
    feats = hhjax.simulate_batch(p, hhjax.Step(amplitudes, 5.0), t1, dt=dt, max_spikes=32)
    jax.block_until_ready(feats.spike_count)
    wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    counts = np.asarray(feats.spike_count)
    result = dict(
        neurons=n,
        t_ms=t1,
        dt_ms=dt,
        dtype="float32",
        devices=jax.local_device_count(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        wall_s_including_compile=wall,
        neuron_steps_per_s=n * round(t1 / dt) / wall,
        peak_rss_gb=peak_gb,
        spike_count_min_mean_max=[int(counts.min()), float(counts.mean()), int(counts.max())],
        dropped_spikes=int(np.sum(np.asarray(feats.dropped))),
        machine=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        load_average_at_end=os.getloadavg(),
    )
    print(json.dumps(result, indent=1))
    out = HERE / "results" / ("million.json" if n == 1_000_000 else f"million_{n}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
