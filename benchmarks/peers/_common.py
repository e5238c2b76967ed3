"""Shared by the peer scripts (each runs in its own interpreter; numpy is the only dependency).

The workload arrives as JSON on argv[1]; the script prints one line `RESULT {json}` at the end.
Workload: HH (NEURON hh.mod parameters, 6.3 °C), neuron i gets a step of amplitude
`amplitudes(w)[i]` µA/cm² from `t_on` to the end, starting from v = -65 mV with gates at steady
state (NEURON's finitialize(-65)); spike = upward crossing of 0 mV.
"""

import json
import os
import statistics
import sys
import time

import numpy as np


def workload() -> dict:
    return json.loads(sys.argv[1])


def amplitudes(w) -> np.ndarray:
    return np.linspace(w["amp_lo"], w["amp_hi"], w["n"])


def n_steps(w) -> int:
    return round(w["t_ms"] / w["dt_ms"])


CPU_TIMES: list = []


def timed(run, repeats: int):
    """Call `run()` once to compile/build, then `repeats` times; return (first, times, last).

    The process CPU time of each repeat goes to CPU_TIMES (all threads: on a shared machine it
    is a steadier measure of the work than wall time).
    """
    start = time.perf_counter()
    out = run()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        out = run()
        times.append(time.perf_counter() - start)
        CPU_TIMES.append(time.process_time() - cpu)
    return first, times, out


def crossings(t, v, threshold=0.0, max_spikes=None):
    """Upward crossings of `threshold`, linearly interpolated: (count, times)."""
    v = np.asarray(v, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    k = np.flatnonzero((v[:-1] < threshold) & (v[1:] >= threshold))
    times = t[k] + (threshold - v[k]) * (t[k + 1] - t[k]) / (v[k + 1] - v[k])
    return len(k), times[:max_spikes].tolist()


def emit(w, name, version, first, times, subset_counts, subset_times, **extra):
    median = statistics.median(times)
    n_sim = extra.pop("n_simulated", w["n"])
    result = dict(
        name=name,
        version=version,
        n_neurons=n_sim,
        t_ms=w["t_ms"],
        dt_ms=w["dt_ms"],
        repeats=len(times),
        times_s=times,
        median_s=median,
        first_call_s=first,
        neuron_steps_per_s=n_sim * n_steps(w) / median,
        cpu_s=CPU_TIMES[-len(times) :],
        neuron_steps_per_cpu_s=n_sim * n_steps(w) / statistics.median(CPU_TIMES[-len(times) :]),
        load_average=list(os.getloadavg()),
        subset_counts=[int(c) for c in subset_counts],
        subset_spike_times=[[float(x) for x in ts] for ts in subset_times],
        **extra,
    )
    print("RESULT " + json.dumps(result))
