"""Strong scaling of `hhjax sweep`: one 10⁶-neuron sweep on 1 process, then on 2 processes
(jax.distributed on 127.0.0.1, gloo), each process on one thread.

    python benchmarks/scaling.py [repeats] [t1_ms]

Workload: HHParams.neuron, 100 g_na values × 10,000 step amplitudes (0–20 µA/cm² from 5 ms),
float32, dt 0.025 ms, `t1` ms (default 200: 8,000 steps, 8 × 10⁹ neuron-steps), 16 shards.
Each run is a fresh `hhjax sweep` command (import, compilation and Parquet writing included);
the sweep's own time (from the command's summary line, compilation included) is recorded
beside the command's wall time. The two folders are checked to hold the same table. Each
repeat also times the bare kernel (65,536 neurons, one thread) alone and as two processes at
once: the efficiency this machine itself gives two busy cores, the ceiling for the sweep's.
Last, one process on both cores: two threads on one CPU device (the default) against two XLA
CPU devices (`shard_map`).
Writes benchmarks/results/scaling_t<t1>.json and prints the medians.
"""

import json
import os
import pathlib
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
HHJAX = [sys.executable, "-m", "hhjax", "sweep"]
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

CONFIG = """
[model]
name = "HHParams.neuron"

[axes]
g_na = {{start = 100.0, stop = 140.0, num = 100}}

[stimulus]
amplitude = {{start = 0.0, stop = 20.0, num = 10000}}
start = 5.0

[run]
t1 = {t1}
dt = 0.025
shard_size = 62500
max_spikes = 16
dtype = "float32"
workers = 1
"""


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sweep_seconds(text):
    """The sweep's own time from each process's summary line (the slowest process)."""
    found = [float(x) for x in re.findall(r"points, ([0-9.]+) s\)", text)]
    return max(found)


def run(config, out, processes):
    env = dict(os.environ, XLA_FLAGS=ONE_THREAD)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    if processes == 1:
        jobs = [subprocess.Popen(HHJAX + [str(config), "--out", str(out)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)]
    else:
        port = _port()
        jobs = [subprocess.Popen(HHJAX + [str(config), "--out", str(out), "--coordinator",
                                          f"127.0.0.1:{port}", "--num-processes", str(processes),
                                          "--process-id", str(k)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
                for k in range(processes)]
    texts = [job.communicate()[0] for job in jobs]
    wall = time.perf_counter() - start
    if any(job.returncode for job in jobs):
        raise SystemExit(f"sweep failed: {texts}")
    return wall, _sweep_seconds("\n".join(texts))


KERNEL = """
import sys, time, jax.numpy as jnp, hhjax
p = hhjax.HHParams.neuron().astype(jnp.float32)
st = hhjax.Step(jnp.linspace(0, 20, 65536, dtype=jnp.float32), 5.0)
run = lambda t1: hhjax.simulate_batch(p, st, t1, workers=1, progress=False, distribute=False)
run(float(sys.argv[1]))  # compiles
start = time.perf_counter()
run(float(sys.argv[1]))
print(time.perf_counter() - start)
"""


def ceiling(t1):
    """The machine's own efficiency for two single-thread processes: the kernel (65,536
    neurons, `t1` ms, no sweep machinery, timed after compiling), alone and then two at once."""
    env = dict(os.environ, XLA_FLAGS=ONE_THREAD)
    cmd = [sys.executable, "-c", KERNEL, str(t1)]
    alone = float(subprocess.run(cmd, env=env, capture_output=True, text=True,
                                 check=True).stdout)
    jobs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    both = max(float(job.communicate()[0]) for job in jobs)
    return alone, both


DEVICES = """
import os, statistics, sys, time, jax, jax.numpy as jnp, hhjax
p = hhjax.HHParams.neuron().astype(jnp.float32)
st = hhjax.Step(jnp.linspace(0, 20, 131072, dtype=jnp.float32), 5.0)
run = lambda: hhjax.simulate_batch(p, st, float(sys.argv[1]), progress=False)
run()
times = []
for _ in range(3):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
print(jax.local_device_count(), statistics.median(times))
"""


def devices_vs_threads(t1):
    """One process, both cores: two threads on one CPU device (the default) against two XLA
    CPU devices (one `shard_map`ped program); 131,072 neurons, `t1` ms, medians of 3."""
    out = {}
    for label, flags in (("threads", ""), ("devices", "--xla_force_host_platform_device_count=2")):
        env = dict(os.environ, XLA_FLAGS=flags)
        text = subprocess.run([sys.executable, "-c", DEVICES, str(t1)], env=env, check=True,
                              capture_output=True, text=True).stdout.split()
        out[label] = dict(devices=int(text[0]), median_s=float(text[1]),
                          neuron_steps_per_s=131072 * round(t1 / 0.025) / float(text[1]))
    return out


def main(repeats=3, t1=200.0):
    import numpy as np

    import hhjax

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hhjax-scaling-"))
    config = tmp / "sweep.toml"
    config.write_text(CONFIG.format(t1=t1))
    cfg = hhjax.SweepConfig.from_toml(config)
    steps = round(t1 / 0.025)
    load_before = os.getloadavg()
    rows = {1: [], 2: []}
    pairs = []
    for _ in range(repeats):  # interleaved, so that a change of load hits both alike
        for p in (1, 2):
            rows[p].append(run(config, tmp / f"out{p}", p))
            print(p, "process(es):", rows[p][-1], flush=True)
        pairs.append(ceiling(t1))
        print("kernel alone / two at once:", pairs[-1], flush=True)
    one, two = hhjax.load_sweep(tmp / "out1"), hhjax.load_sweep(tmp / "out2")
    same = one.column_names == two.column_names
    for name in one.column_names:
        a, b = one.column(name).combine_chunks(), two.column(name).combine_chunks()
        if name == "spike_times_ms":
            a, b = a.flatten(), b.flatten()
        a, b = a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False)
        same = same and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    both_cores = devices_vs_threads(t1)
    print("one process, both cores:", both_cores, flush=True)
    shard_bytes = sum(f.stat().st_size for f in (tmp / "out1").glob("shard-*.parquet"))
    med = {p: (statistics.median(w for w, _ in r), statistics.median(s for _, s in r))
           for p, r in rows.items()}
    result = dict(
        date=time.strftime("%Y-%m-%d"),
        machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                     load_before=load_before, load_after=os.getloadavg()),
        workload=dict(neurons=cfg.size, steps=steps, dt=0.025, dtype="float32",
                      shards=cfg.n_shards, threads_per_process=1),
        runs={str(p): [dict(wall_s=w, sweep_s=s) for w, s in r] for p, r in rows.items()},
        median_wall_s={str(p): m[0] for p, m in med.items()},
        median_sweep_s={str(p): m[1] for p, m in med.items()},
        efficiency_wall=med[1][0] / (2 * med[2][0]),
        efficiency_sweep=med[1][1] / (2 * med[2][1]),
        # Two processes each doing the work one did alone: what this machine allows.
        kernel_alone_s=[a for a, _ in pairs], kernel_two_at_once_s=[b for _, b in pairs],
        machine_efficiency=statistics.median(a / b for a, b in pairs),
        neuron_steps_per_s_one_process=cfg.size * steps / med[1][1],
        one_process_both_cores=both_cores,
        parquet_bytes_per_neuron=shard_bytes / cfg.size,
        identical_tables=bool(same),
    )
    (HERE / "results" / f"scaling_t{t1:g}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3,
         float(sys.argv[2]) if len(sys.argv) > 2 else 200.0)
