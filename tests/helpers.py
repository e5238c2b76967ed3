"""Independent references for the tests: the seeds' algorithms re-stated in plain numpy and a
tight scipy solve. None of this imports hhjax."""

from __future__ import annotations

import json
import pathlib

import numpy as np

REFERENCE_DIR = pathlib.Path(__file__).parent / "reference"


def _xexpm1(x):
    return x / np.expm1(x)


def rates_1952(u):
    """The 1952 rates at depolarisation u (mV), written directly from the paper's formulas."""
    am = 0.1 * (25.0 - u) / (np.exp((25.0 - u) / 10.0) - 1.0)
    bm = 4.0 * np.exp(-u / 18.0)
    ah = 0.07 * np.exp(-u / 20.0)
    bh = 1.0 / (np.exp((30.0 - u) / 10.0) + 1.0)
    an = 0.01 * (10.0 - u) / (np.exp((10.0 - u) / 10.0) - 1.0)
    bn = 0.125 * np.exp(-u / 80.0)
    return am, bm, ah, bh, an, bn


def seed000_euler(stim, dt=0.05, e_l=10.6):
    """Seed 000's forward-Euler loop, re-stated: returns Vm, m, h, n recorded after each step.

    Start: V = 0 mV with every gate at its steady state; each iteration computes the rates at
    the old V, advances V with the old gates and the given stimulus sample, then the gates.
    """
    e_na, e_k, g_na, g_k, g_l = 115.0, -12.0, 120.0, 36.0, 0.3
    v = 0.0
    am, bm, ah, bh, an, bn = rates_1952(v)
    m, h, n = am / (am + bm), ah / (ah + bh), an / (an + bn)
    out = np.empty((4, len(stim)))
    for i, current in enumerate(stim):
        am, bm, ah, bh, an, bn = rates_1952(v)
        i_na = m**3 * g_na * h * (v - e_na)
        i_k = n**4 * g_k * (v - e_k)
        i_l = g_l * (v - e_l)
        v_new = v + dt * (current - i_na - i_k - i_l)
        m += dt * (am * (1 - m) - bm * m)
        h += dt * (ah * (1 - h) - bh * h)
        n += dt * (an * (1 - n) - bn * n)
        v = v_new
        out[:, i] = v, m, h, n
    return out


def hh_rhs(g_na=120.0, g_k=36.0, g_l=0.3, e_na=115.0, e_k=-12.0, e_l=10.613, c_m=1.0,
           v_ref=0.0, current=lambda t: 0.0):
    """Right-hand side in scipy's (t, y) form, y = (v, m, h, n), 6.3 °C."""

    def f(t, y):
        v, m, h, n = y
        am, bm, ah, bh, an, bn = rates_1952(v - v_ref)
        i_ion = g_na * m**3 * h * (v - e_na) + g_k * n**4 * (v - e_k) + g_l * (v - e_l)
        return [
            (current(t) - i_ion) / c_m,
            am * (1 - m) - bm * m,
            ah * (1 - h) - bh * h,
            an * (1 - n) - bn * n,
        ]

    return f


def radau_piecewise(f, y0, edges, t_eval, tol=1e-10):
    """Solve with scipy Radau at rtol = atol = `tol`, restarting at each stimulus edge."""
    from scipy.integrate import solve_ivp

    y = np.asarray(y0, dtype=float)
    out = np.empty((4, len(t_eval)))
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (t_eval >= a) & (t_eval <= b)
        sol = solve_ivp(f, (a, b), y, method="Radau", rtol=tol, atol=tol, t_eval=t_eval[sel],
                        first_step=1e-6)
        assert sol.success, sol.message
        out[:, sel] = sol.y
        y = solve_ivp(f, (a, b), y, method="Radau", rtol=tol, atol=tol, first_step=1e-6).y[:, -1]
    return out


def neuron_reference() -> dict:
    """The stored NEURON hh.mod reference (see tests/reference/make_neuron_reference.py)."""
    return json.loads((REFERENCE_DIR / "neuron_hh_step10.json").read_text())
