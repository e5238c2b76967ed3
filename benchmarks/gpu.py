"""The fused Pallas kernel against the XLA kernel on a GPU: 10⁴ … 10⁷ HH neurons × 1 s.

    python benchmarks/gpu.py [--t1 1000] [--max 1e7] [--budget 420] [--dtypes float32,float64]

One process, one device. For each dtype and batch size, `simulate_batch` runs the same
workload with `kernel="xla"` (a `lax.scan` over time) and `kernel="fused"` (`hhjax._fused`:
one Pallas/Triton program per block of neurons, the whole time loop inside): the first call
(compilation) and the median of `--repeats` calls after it, each ended by
`block_until_ready` and the copy of the features to the host, as a user sees it. The two
kernels' spike counts and times are compared on every batch. Before the table, the fused
kernel's block size and warps are tried on 10⁶ neurons × 100 ms (float32) and the fastest is
kept. Jaxley (one HH compartment, `jit(vmap)`) runs beside them at 10⁴ and 10⁵ neurons when
it is importable.

Workload: NEURON hh.mod parameters, 6.3 °C, dt 0.025 ms, step currents 0–20 µA/cm² from
5 ms (one amplitude per neuron), start at `finitialize(-65)`, features only (16 spike times).

A time budget (`--budget` seconds for the measurements) keeps the run inside a lent machine's
minutes: a size whose projected time would overrun it is skipped and recorded as skipped.
Results are written after every row to `benchmarks/results/gpu_<device>.json` (and to
`$OUT` when set), so a run stopped early keeps what it measured.

XLA's on-device while loops (command buffers that include `WHILE`) can be tried for the XLA
kernel with a tag in the file name:

    XLA_FLAGS=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUSTOM_CALL,WHILE,CONDITIONAL \
        HHJAX_BENCH_TAG=while python benchmarks/gpu.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 rows; float32 rows cast the model

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import hhjax  # noqa: E402
from hhjax import _fused  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
DT = 0.025


def workload(n, dtype):
    p = hhjax.HHParams.neuron().astype(dtype)
    y0 = hhjax.steady_state(p, -65.0)
    stim = hhjax.Step(jnp.linspace(0.0, 20.0, n, dtype=dtype), 5.0)
    return p, stim, y0


def run_once(n, dtype, t1, kernel):
    p, stim, y0 = workload(n, dtype)
    out = hhjax.simulate_batch(p, stim, t1, dt=DT, y0=y0, max_spikes=16, progress=False,
                               kernel=kernel)
    return jax.tree_util.tree_map(np.asarray, (out.spike_count, out.spike_times))


def timed(fn, repeats):
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), times, out


def jaxley_run(n, t1, repeats):
    """Jaxley on the same workload: the CPU table's own peer script (`peers/jaxley_batch.py`,
    one HH compartment, `jit(vmap)`), run here in a subprocess on the GPU. None if Jaxley is
    not importable."""
    try:
        import jaxley  # noqa: F401
    except ImportError:
        return None
    w = dict(n=n, t_ms=t1, dt_ms=DT, amp_lo=0.0, amp_hi=20.0, t_on=5.0, repeats=repeats,
             max_spikes=16, subset=[0, n - 1])
    proc = subprocess.run([sys.executable, str(HERE / "peers" / "jaxley_batch.py"),
                           json.dumps(w)], capture_output=True, text=True, cwd=HERE / "peers")
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        return dict(error=proc.stderr[-500:])
    return json.loads(lines[-1][len("RESULT "):])


class Budget:
    def __init__(self, seconds):
        self.end = time.perf_counter() + seconds

    def left(self):
        return self.end - time.perf_counter()


def tune(budget, rows_out):
    """Block size and warps of the fused kernel on 10⁶ neurons × 100 ms, float32."""
    best, best_time = (_fused._BLOCK, _fused._NUM_WARPS), np.inf
    for block, warps in ((64, 2), (128, 4), (256, 4), (256, 8), (512, 8)):
        if budget.left() < 60:
            break
        _fused._BLOCK, _fused._NUM_WARPS = block, warps
        try:
            first, median, _, _ = timed(lambda: run_once(10**6, jnp.float32, 100.0, "fused"), 2)
        except Exception as error:  # a shape Triton refuses: recorded, not fatal
            rows_out.append(dict(tune=True, block=block, warps=warps, error=str(error)[:300]))
            continue
        rate = 10**6 * round(100.0 / DT) / median
        rows_out.append(dict(tune=True, block=block, warps=warps, first_call_s=first,
                             median_s=median, neuron_steps_per_s=rate))
        print(rows_out[-1], flush=True)
        if median < best_time:
            best, best_time = (block, warps), median
    _fused._BLOCK, _fused._NUM_WARPS = best
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--t1", type=float, default=1000.0)
    parser.add_argument("--max", type=float, default=1e7)
    parser.add_argument("--budget", type=float, default=420.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--no-tune", action="store_true")
    args = parser.parse_args()
    device = jax.devices()[0]
    budget = Budget(args.budget)
    tag = os.environ.get("HHJAX_BENCH_TAG", "")
    name = f"gpu_{device.device_kind.replace(' ', '_')}{'_' + tag if tag else ''}.json"
    path = HERE / "results" / name
    rows = []
    result = dict(
        date=datetime.date.today().isoformat(), device=str(device.device_kind),
        platform=device.platform, jax=jax.__version__, t1_ms=args.t1, dt_ms=DT,
        xla_flags=os.environ.get("XLA_FLAGS", ""), rows=rows,
    )

    def save():
        path.write_text(json.dumps(result, indent=1) + "\n")
        if os.environ.get("OUT"):
            shutil.copy(path, pathlib.Path(os.environ["OUT"]) / name)

    if not args.no_tune and device.platform == "gpu":
        result["fused_block"], result["fused_warps"] = tune(budget, rows)
        save()
    steps = round(args.t1 / DT)
    for dtype_name in args.dtypes.split(","):
        dtype = jnp.dtype(dtype_name)
        last_rate = {}
        n = 10**4
        while n <= args.max:
            outputs = {}
            for kernel in ("xla", "fused"):
                row = dict(dtype=dtype_name, neurons=n, kernel=kernel)
                # Projected from the last size's rate (plus compilation): skip what won't fit.
                projected = n * steps / last_rate[kernel] * (args.repeats + 1) \
                    if kernel in last_rate else 0.0
                if projected > budget.left():
                    row["skipped"] = f"projected {projected:.0f} s > {budget.left():.0f} s left"
                    rows.append(row)
                    print(row, flush=True)
                    continue
                first, median, times, out = timed(
                    lambda k=kernel, n=n, d=dtype: run_once(n, d, args.t1, k), args.repeats
                )
                last_rate[kernel] = n * steps / median
                outputs[kernel] = out
                row.update(first_call_s=first, median_s=median, times_s=times,
                           neuron_steps_per_s=n * steps / median,
                           mean_spike_count=float(np.mean(out[0])))
                rows.append(row)
                print(row, flush=True)
                save()
            if len(outputs) == 2:
                (c_x, t_x), (c_f, t_f) = outputs["xla"], outputs["fused"]
                both = ~np.isnan(t_x) & ~np.isnan(t_f)
                rows.append(dict(
                    dtype=dtype_name, neurons=n, compare=True,
                    counts_equal=float(np.mean(c_x == c_f)),
                    max_time_diff_ms=float(np.max(np.abs(t_x - t_f)[both])) if both.any() else 0.0,
                    speedup=rows[-1]["neuron_steps_per_s"] / rows[-2]["neuron_steps_per_s"],
                ))
                print(rows[-1], flush=True)
            if dtype == jnp.float32 and n <= 10**5 and budget.left() > 120:
                jl = jaxley_run(n, args.t1, args.repeats)  # float32, as the peer defaults
                if jl is not None:
                    rows.append(dict(dtype=dtype_name, neurons=n, kernel="jaxley", **jl))
                    print(rows[-1], flush=True)
            save()
            n *= 10
    save()
    print("wrote", path)


if __name__ == "__main__":
    main()
