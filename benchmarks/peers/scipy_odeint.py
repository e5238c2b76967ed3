"""Seed 001's approach: scipy.integrate.odeint (LSODA, default tolerances), one neuron at a time.

Run on the accuracy subset; sampled every dt for spike detection. Throughput counts simulated
neuron-ms at the workload's dt (equal work), not LSODA's internal steps.
"""

import numpy as np
import scipy
from _common import amplitudes, crossings, emit, n_steps, timed, workload
from scipy.integrate import odeint

w = workload()
amps = amplitudes(w)
ts = np.arange(n_steps(w) + 1) * w["dt_ms"]


def rates(v):
    am = 0.1 * (v + 40.0) / -np.expm1(-(v + 40.0) / 10.0) if v != -40.0 else 1.0
    bm = 4.0 * np.exp(-(v + 65.0) / 18.0)
    ah = 0.07 * np.exp(-(v + 65.0) / 20.0)
    bh = 1.0 / (1.0 + np.exp(-(v + 35.0) / 10.0))
    an = 0.01 * (v + 55.0) / -np.expm1(-(v + 55.0) / 10.0) if v != -55.0 else 0.1
    bn = 0.125 * np.exp(-(v + 65.0) / 80.0)
    return am, bm, ah, bh, an, bn


def rhs(y, t, amp):
    v, m, h, n = y
    am, bm, ah, bh, an, bn = rates(v)
    i_stim = amp if t >= w["t_on"] else 0.0
    i_ion = 120.0 * m**3 * h * (v - 50.0) + 36.0 * n**4 * (v + 77.0) + 0.3 * (v + 54.3)
    return [
        i_stim - i_ion,
        am * (1 - m) - bm * m,
        ah * (1 - h) - bh * h,
        an * (1 - n) - bn * n,
    ]


def y0():
    am, bm, ah, bh, an, bn = rates(-65.0)
    return [-65.0, am / (am + bm), ah / (ah + bh), an / (an + bn)]


def one(amp):
    # Integrate across the step edge in two pieces so LSODA does not smooth it.
    on = w["t_on"]
    first = ts[ts <= on]
    y_a = odeint(rhs, y0(), first, args=(amp,))
    rest = np.concatenate([[on], ts[ts > on]])
    y_b = odeint(rhs, y_a[-1], rest, args=(amp,))
    v = np.concatenate([y_a[:, 0], y_b[1:, 0]])
    return crossings(ts, v, 0.0, w["max_spikes"])


sub = w["subset"]
first, times, results = timed(lambda: [one(amps[i]) for i in sub], w["repeats"])
emit(
    w,
    "seed 001 scipy odeint (LSODA, default tolerances; one neuron at a time)",
    scipy.__version__,
    first,
    times,
    [c for c, _ in results],
    [t for _, t in results],
    n_simulated=len(sub),
)
