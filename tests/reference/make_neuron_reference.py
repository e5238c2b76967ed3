"""Generate an independent NEURON reference for the hhjax Hodgkin-Huxley tests.

NEURON is an *optional* extra: it is not a dependency of hhjax and must not be
installed into the project venv.  This script is run by hand, in its own venv,
and writes ``neuron_hh_step10.json`` next to this file.  The tests only read that
JSON; they never import NEURON.

How to run::

    python3 -m venv /work/venvs/neuron
    /work/venvs/neuron/bin/pip install neuron numpy
    /work/venvs/neuron/bin/python tests/reference/make_neuron_reference.py

Model and protocol (NEURON's built-in ``hh.mod``, default parameters):

* one section, one segment, ``insert hh``; ``h.usetable_hh = 0`` (exact rate
  functions, no lookup tables); ``h.celsius = 6.3`` (q10 factor 1); cm = 1 uF/cm2;
  gnabar 0.12, gkbar 0.036, gl 0.0003 S/cm2; el -54.3, ena 50, ek -77 mV.
* ``h.finitialize(-65)``: V = -65 mV, gates at their steady state at -65 mV.
* 10 uA/cm2 current step, on from t = 5 ms to the end of a 1005 ms run
  (IClamp with del = 5 ms, dur = 1e9 ms).
* spikes: upward crossings of V = 0 mV detected by a NetCon (with CVODE the
  crossing time is found by interpolation; ``cvode.condition_order(2)`` is set).

Runs stored in the JSON:

* CVODE (variable order BDF, dense Jacobian) at a sweep of tolerances
  (rtol = atol), the tightest converged one being the reference;
* NEURON fixed step (backward Euler, ``secondorder = 0``) at dt 0.01, 0.025, 0.05 ms,
  to document fixed-step drift ("spike_times_ms": linearly interpolated 0 mV
  crossings of the per-step V; "spike_times_netcon_ms": NetCon times, which are
  step-quantised);
* a 50 ms voltage trace from the reference CVODE setting, sampled every 0.025 ms;
* wall-clock cost of a 1005 ms CVODE run at several tolerances ("cvode_cost").
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import neuron
from neuron import h

OUT = Path(__file__).with_name("neuron_hh_step10.json")

T_STOP = 1005.0  # ms
T_ON = 5.0  # ms, current switched on here and left on
I_DENSITY = 10.0  # uA/cm2
V_INIT = -65.0  # mV
THRESHOLD = 0.0  # mV
N_SPIKES_KEEP = 70
N_SPIKES_CMP = 60

TOL_REF = 1e-13  # reference CVODE tolerance (rtol = atol)
TOL_SWEEP = [1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 1e-13, 1e-14]
TOL_COST = [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]
FIXED_DTS = [0.01, 0.025, 0.05]
TRACE_T_STOP = 50.0  # ms
TRACE_DT = 0.025  # ms
COST_REPEATS = 5

h.load_file("stdrun.hoc")

# --- model --------------------------------------------------------------------
soma = h.Section(name="soma")
soma.nseg = 1
# L = diam = sqrt(1e4/pi) um gives a lateral area pi*diam*L = 1e4 um2 = 1e-4 cm2.
_D = math.sqrt(1.0e4 / math.pi)
soma.L = _D
soma.diam = _D
soma.cm = 1.0
soma.Ra = 35.4  # irrelevant for a single segment
soma.insert("hh")
soma.ena = 50.0
soma.ek = -77.0
for seg in soma:
    seg.hh.gnabar = 0.12
    seg.hh.gkbar = 0.036
    seg.hh.gl = 0.0003
    seg.hh.el = -54.3
h.usetable_hh = 0
h.celsius = 6.3
h.secondorder = 0

AREA_UM2 = h.area(0.5, sec=soma)
AREA_CM2 = AREA_UM2 * 1e-8  # 1 um2 = 1e-8 cm2
# I [nA] = J [uA/cm2] * A [cm2] * 1e3 [nA/uA]; here 10 * 1e-4 * 1e3 = 1 nA.
AMP_NA = I_DENSITY * AREA_CM2 * 1e3

stim = h.IClamp(soma(0.5))
stim.delay = T_ON
stim.dur = 1e9
stim.amp = AMP_NA

cvode = h.CVode()
try:
    COND_ORDER = int(cvode.condition_order(2))
except Exception:  # older NEURON without condition_order
    COND_ORDER = 1

spike_vec = h.Vector()
netcon = h.NetCon(soma(0.5)._ref_v, None, sec=soma)
netcon.threshold = THRESHOLD
netcon.record(spike_vec)


def _announce_step() -> None:
    # Tell the variable-step integrator about the discontinuity at T_ON
    # (stops exactly there and re-initialises).  Harmless for fixed step.
    if cvode.active():
        cvode.event(T_ON)


_fih = h.FInitializeHandler(_announce_step)


def run_cvode(tol: float, t_stop: float = T_STOP) -> tuple[list[float], float]:
    cvode.active(1)
    cvode.atol(tol)
    cvode.rtol(tol)
    h.finitialize(V_INIT)
    t0 = time.perf_counter()
    h.continuerun(t_stop)
    wall = time.perf_counter() - t0
    return list(spike_vec), wall


def run_fixed(dt: float, t_stop: float = T_STOP) -> tuple[list[float], list[float], float]:
    """Fixed-step run; returns (NetCon spike times, interpolated spike times, wall s).

    In NEURON 9.0.2 the fixed-step NetCon time is the end of the step in which V
    first exceeds the threshold (no interpolation, despite condition_order(2)),
    so the upward crossing is also located by linear interpolation of the
    per-step voltage record.
    """
    cvode.active(0)
    h.dt = dt
    h.steps_per_ms = 1.0 / dt
    tvec = h.Vector()
    vvec = h.Vector()
    tvec.record(h._ref_t)
    vvec.record(soma(0.5)._ref_v)
    h.finitialize(V_INIT)
    t0 = time.perf_counter()
    h.continuerun(t_stop)
    wall = time.perf_counter() - t0
    tt = list(tvec)
    vv = list(vvec)
    tvec.play_remove()
    vvec.play_remove()
    interp = []
    for i in range(1, len(vv)):
        if vv[i - 1] < THRESHOLD <= vv[i]:
            frac = (THRESHOLD - vv[i - 1]) / (vv[i] - vv[i - 1])
            interp.append(tt[i - 1] + frac * (tt[i] - tt[i - 1]))
    return list(spike_vec), interp, wall


def count_cvode_steps(tol: float) -> int:
    tvec = h.Vector()
    tvec.record(h._ref_t)
    run_cvode(tol)
    n = int(tvec.size())
    tvec.play_remove()
    del tvec
    return n


def max_diff(a: list[float], b: list[float], n: int = N_SPIKES_CMP) -> float:
    if len(a) < n or len(b) < n:
        return float("nan")
    return max(abs(x - y) for x, y in zip(a[:n], b[:n], strict=True))


def main() -> None:
    # --- CVODE tolerance sweep ------------------------------------------------
    sweep: dict[str, list[float]] = {}
    for tol in TOL_SWEEP:
        sp, _ = run_cvode(tol)
        sweep[f"{tol:.0e}"] = sp
    ref = sweep[f"{TOL_REF:.0e}"]
    n_spikes = len(ref)

    convergence = {
        "max_abs_diff_first60_ms__1e-08_vs_1e-10": max_diff(sweep["1e-08"], sweep["1e-10"]),
        "max_abs_diff_first60_ms__1e-10_vs_1e-13": max_diff(sweep["1e-10"], ref),
        "max_abs_diff_first60_ms__1e-12_vs_1e-13": max_diff(sweep["1e-12"], ref),
        "max_abs_diff_first60_ms__1e-14_vs_1e-13": max_diff(sweep["1e-14"], ref),
    }

    # --- CVODE cost -----------------------------------------------------------
    cost = []
    for tol in TOL_COST:
        walls = []
        sp: list[float] = []
        for _ in range(COST_REPEATS):
            sp, wall = run_cvode(tol)
            walls.append(wall)
        cost.append(
            {
                "rtol_atol": tol,
                "wall_s_min": min(walls),
                "wall_s_median": sorted(walls)[len(walls) // 2],
                "repeats": COST_REPEATS,
                "n_steps": count_cvode_steps(tol),
                "n_spikes": len(sp),
                "max_abs_spike_err_first60_ms": max_diff(sp, ref),
            }
        )

    # --- fixed step -------------------------------------------------------------
    fixed = {}
    for dt in FIXED_DTS:
        sp_nc, sp, wall = run_fixed(dt)
        n60 = N_SPIKES_CMP - 1
        fixed[f"{dt:g}"] = {
            "dt_ms": dt,
            "wall_s": wall,
            "n_spikes": len(sp),
            "spike_times_ms": sp[:N_SPIKES_KEEP],
            "spike_times_netcon_ms": sp_nc[:N_SPIKES_KEEP],
            "max_abs_diff_first60_vs_cvode_ms": max_diff(sp, ref),
            "spike60_minus_cvode_ms": (sp[n60] - ref[n60]) if len(sp) > n60 else None,
        }

    # --- 50 ms voltage trace ------------------------------------------------------
    tvec = h.Vector()
    vvec = h.Vector()
    tvec.record(h._ref_t, TRACE_DT)
    vvec.record(soma(0.5)._ref_v, TRACE_DT)
    # run slightly past the end: the last Dt samples are not taken at exactly t_stop
    run_cvode(TOL_REF, TRACE_T_STOP + 2 * TRACE_DT)
    keep = [i for i, x in enumerate(tvec) if x <= TRACE_T_STOP + 1e-9]
    trace_t = [round(tvec[i], 9) for i in keep]
    trace_v = [round(vvec[i], 9) for i in keep]
    tvec.play_remove()
    vvec.play_remove()

    data = {
        "description": (
            "NEURON hh.mod single compartment, 10 uA/cm2 step on from 5 ms to the end "
            "of a 1005 ms run; spike = upward crossing of 0 mV."
        ),
        "generator": "tests/reference/make_neuron_reference.py",
        "neuron_version": neuron.__version__,
        "python_version": platform.python_version(),
        "settings": {
            "t_stop_ms": T_STOP,
            "t_on_ms": T_ON,
            "i_density_uA_per_cm2": I_DENSITY,
            "v_init_mV": V_INIT,
            "threshold_mV": THRESHOLD,
            "celsius": h.celsius,
            "usetable_hh": int(h.usetable_hh),
            "secondorder": int(h.secondorder),
            "cm_uF_per_cm2": soma.cm,
            "gnabar_S_per_cm2": soma(0.5).hh.gnabar,
            "gkbar_S_per_cm2": soma(0.5).hh.gkbar,
            "gl_S_per_cm2": soma(0.5).hh.gl,
            "el_mV": soma(0.5).hh.el,
            "ena_mV": soma.ena,
            "ek_mV": soma.ek,
            "nseg": soma.nseg,
            "L_um": soma.L,
            "diam_um": soma.diam,
            "area_um2": AREA_UM2,
            "area_cm2": AREA_CM2,
            "iclamp_amp_nA": AMP_NA,
            "cvode_condition_order": COND_ORDER,
            "cvode_reference_rtol_atol": TOL_REF,
            "cvode_sweep_rtol_atol": TOL_SWEEP,
            "fixed_dts_ms": FIXED_DTS,
        },
        "cvode_reference": {
            "rtol_atol": TOL_REF,
            "n_spikes": n_spikes,
            "spike_times_ms": ref[:N_SPIKES_KEEP],
        },
        "cvode_tolerance_sweep_spike_times_ms": {k: v[:N_SPIKES_KEEP] for k, v in sweep.items()},
        "convergence": convergence,
        "fixed_step": fixed,
        "trace_50ms": {
            "rtol_atol": TOL_REF,
            "dt_sample_ms": TRACE_DT,
            "t_ms": trace_t,
            "v_mV": trace_v,
        },
        "cvode_cost": {
            "note": (
                "wall clock of h.finitialize + h.continuerun(1005) on one CPU core, "
                f"min/median of {COST_REPEATS} repeats; error vs rtol=atol={TOL_REF:g}"
            ),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "runs": cost,
        },
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")

    print(f"NEURON {neuron.__version__}; area {AREA_UM2:.6f} um2, amp {AMP_NA:.6f} nA")
    print("CVODE ref first 5:", [f"{x:.6f}" for x in ref[:5]], f"60th: {ref[59]:.6f}")
    for k, v in convergence.items():
        print(f"  {k}: {v:.3e}")
    for dt, r in fixed.items():
        d60 = r["spike60_minus_cvode_ms"]
        print(f"fixed dt={dt}: n={r['n_spikes']} 60th-cvode = {d60:+.4f} ms")
    for c in cost:
        print(
            f"cost tol={c['rtol_atol']:.0e}: {c['wall_s_min'] * 1e3:.1f} ms "
            f"({c['n_steps']} steps), err60 {c['max_abs_spike_err_first60_ms']:.2e} ms"
        )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
