"""Seed 000's algorithm re-stated: a pure-Python forward-Euler loop, one neuron at a time.

Run on the accuracy subset only (it is ~1000x slower); throughput is per simulated neuron.
"""

import math

from _common import amplitudes, crossings, emit, n_steps, timed, workload

w = workload()
amps = amplitudes(w)
dt, steps = w["dt_ms"], n_steps(w)


def rates(v):
    def vtrap(x):  # x / (exp(x) - 1), the seeds' formula guarded at its 0/0 point
        return 1.0 - x / 2.0 if abs(x) < 1e-6 else x / math.expm1(x)

    am = vtrap(-(v + 40.0) / 10.0)
    bm = 4.0 * math.exp(-(v + 65.0) / 18.0)
    ah = 0.07 * math.exp(-(v + 65.0) / 20.0)
    bh = 1.0 / (1.0 + math.exp(-(v + 35.0) / 10.0))
    an = 0.1 * vtrap(-(v + 55.0) / 10.0)
    bn = 0.125 * math.exp(-(v + 65.0) / 80.0)
    return am, bm, ah, bh, an, bn


def one(amp):
    v = -65.0
    am, bm, ah, bh, an, bn = rates(v)
    m, h, n = am / (am + bm), ah / (ah + bh), an / (an + bn)
    ts, vs = [0.0], [v]
    for k in range(steps):
        t = k * dt
        i_stim = amp if t >= w["t_on"] else 0.0
        am, bm, ah, bh, an, bn = rates(v)
        i_ion = 120.0 * m**3 * h * (v - 50.0) + 36.0 * n**4 * (v + 77.0) + 0.3 * (v + 54.3)
        v, m, h, n = (
            v + dt * (i_stim - i_ion),
            m + dt * (am * (1 - m) - bm * m),
            h + dt * (ah * (1 - h) - bh * h),
            n + dt * (an * (1 - n) - bn * n),
        )
        ts.append((k + 1) * dt)
        vs.append(v)
    return crossings(ts, vs, 0.0, w["max_spikes"])


sub = w["subset"]
first, times, results = timed(lambda: [one(amps[i]) for i in sub], w["repeats"])
emit(
    w,
    "seed 000 pure-Python forward Euler (one neuron at a time)",
    "-",
    first,
    times,
    [c for c, _ in results],
    [t for _, t in results],
    n_simulated=len(sub),
)
