"""hhjax adaptive float64 on one neuron: wall time and spike-time error per tolerance (1 s run).

Run like the NEURON CVODE script, in a fresh process pinned to one core, on the same workload.
Two routes: `simulate` (the dense solution on a 0.025 ms grid, crossings interpolated) and
`spike_times_adaptive` (solves that save nothing, ended by events at the crossings).
"""

import functools
import json
import statistics
import sys

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
from _common import timed  # noqa: E402

import hhjax  # noqa: E402

cfg = json.loads(sys.argv[1])
ref = np.asarray(cfg["reference"])
p = hhjax.HHParams.neuron()
y0 = hhjax.steady_state(p, -65.0)
t1 = cfg["t_ms"]
stim = hhjax.Step(cfg["amp"], cfg["t_on"], t1)


def via_simulate(tol):
    traj = jax.block_until_ready(hhjax.simulate(p, stim, t1, y0=y0, rtol=tol, atol=tol))
    return np.asarray(hhjax.spike_times(traj.ts, traj.v)), int(traj.num_steps)


def via_events(tol):
    out = jax.block_until_ready(hhjax.spike_times_adaptive(p, stim, t1, y0=y0, rtol=tol, atol=tol))
    return np.asarray(out.times)[: int(out.count)], int(out.num_steps)


rows = []
for method, fn in (("simulate", via_simulate), ("spike_times_adaptive", via_events)):
    for tol in cfg["tolerances"]:
        first, walls, (spikes, steps) = timed(functools.partial(fn, tol), cfg["repeats"])
        n = min(len(spikes), len(ref))
        rows.append(
            dict(
                method=method,
                tol=tol,
                median_s=statistics.median(walls),
                first_call_s=first,
                n_spikes=len(spikes),
                steps=steps,
                max_abs_err_ms=float(np.max(np.abs(spikes[:n] - ref[:n]))) if n else None,
            )
        )
        print(f"  hhjax {method} rtol=atol={tol:g}: {rows[-1]}", file=sys.stderr, flush=True)
print("RESULT " + json.dumps(dict(name="hhjax", version=hhjax.__version__, rows=rows)))
