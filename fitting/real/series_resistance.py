"""The recording model on the shared cells: series resistance fitted by the trace objective
against the voltage jumps at the current steps.

For each file, up to three subthreshold sweeps (the most hyperpolarising first steps; a sweep
counts as subthreshold when its step window has no spike at the adaptive threshold) are cut to
their step window (20 ms before, 30 ms after) and fitted jointly with `hhjax.fitting.fit`:
the regular-spiking cortical model with its passive fields free (g_L, E_L, C_m, and the M
conductance, which shapes the slow part of hyperpolarising responses) and
`Electrode(time_constant=True)` (R_s and its time constant), each sweep's initial voltage
fitted, plain Levenberg–Marquardt from the linear estimate (no nudging refit, no
multi-start). The fitted R_s is compared with the estimate from the jumps alone
(`estimate_series_resistance`, pooled over the same sweeps).

    python fitting/real/series_resistance.py            # all six files, ~1 min each here

Writes `fitting/results/real/series_resistance.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)


from hhjax import fitting as hf  # noqa: E402
from hhjax import io as hio  # noqa: E402
from hhjax.fitting._recording import onset_jumps  # noqa: E402
from hhjax.models import Pospischil  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "abf"
OUT = HERE.parent / "results" / "real"
FILES = ("171116sh_0018", "171116sh_0019", "17o05028_ic_steps", "2019_07_24_0055_fsi",
         "190619B_0003", "File_axon_5")
FREE = ("g_l", "e_l", "c_m", "g_m")


def subthreshold_sweeps(path, n=3):
    sweeps = [s for s in (hf.step_sweep(r, pre=20.0, post=30.0) for r in hio.read(path))
              if s is not None and s.amplitude < 0]
    quiet = [s for s in sweeps
             if hf.data_features(s.t, s.v, s.t_on, s.t_off, threshold="auto").count == 0]
    return sorted(quiet, key=lambda s: s.amplitude)[:n]


def fit_cell(name, base):
    sweeps = subthreshold_sweeps(DATA / f"{name}.abf")
    if not sweeps:
        return dict(file=name, error="no subthreshold hyperpolarising sweep")
    recs = [hf.step_recording(s, float(base.area)) for s in sweeps]
    jumps = [onset_jumps(r.v, r.i_inj, r.dt) for r in recs]
    rho = sum(x * e for x, e in jumps) / max(1, sum(e for _, e in jumps))
    r_jump = rho / (float(base.area) * 1e3)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # No nudging refit or multi-start: a passive model does not reach a real cell's noise
        # floor, so they would always run, and R_s is set by the jumps, not by the minimum
        # the escalation looks for.
        res = hf.fit(recs, FREE, base, electrode=hf.Electrode(time_constant=True),
                     fallback=False, escalate=False, throw=False)
    wall = time.perf_counter() - t0
    e = res.electrode
    return dict(file=name, sweeps=[s.sweep for s in sweeps],
                amplitudes_pA=[s.amplitude for s in sweeps], dt_ms=sweeps[0].dt,
                r_s_jump_mohm=r_jump, r_s_fit_mohm=e.get("r_s_mohm"),
                r_s_fit_se_mohm=e.get("r_s_mohm_se"), tau_e_ms=e.get("tau_e"),
                loss_sigma2=res.noise_floor,
                lag1=res.residual_lag1, at_noise_floor=res.at_noise_floor,
                stages=list(res.stages), values={k: res.values[k] for k in FREE}, wall_s=wall)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", nargs="+", default=list(FILES), choices=FILES)
    args = ap.parse_args(argv)
    base = Pospischil.regular_spiking().astype(jax.numpy.float64)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "series_resistance.json"
    rows = {r["file"]: r for r in (json.loads(path.read_text()) if path.exists() else [])}
    for name in args.files:
        row = fit_cell(name, base)
        rows[name] = row
        print(json.dumps(row), flush=True)
        path.write_text(json.dumps([rows[k] for k in FILES if k in rows], indent=1))
    lines = ["# Series resistance of the shared cells: fitted vs the onset jumps", "",
             "Trace objective (`hhjax.fitting.fit`, `Electrode(time_constant=True)`), "
             f"regular-spiking model with {', '.join(FREE)} free, jointly on up to 3 "
             "subthreshold hyperpolarising step windows per file; the jump estimate pools the "
             "same sweeps' steps.", "",
             "| file | sweeps (pA) | R_s from jumps (MΩ) | R_s fitted (MΩ) | fit / jumps | "
             "τ_e (ms) | loss (σ²) | lag-1 | wall (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for name in FILES:
        r = rows.get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | | | | |")
            continue
        ratio = r["r_s_fit_mohm"] / r["r_s_jump_mohm"] if abs(r["r_s_jump_mohm"]) > 0.5 else None
        amps = ", ".join(f"{a:+.0f}" for a in r["amplitudes_pA"])
        lines.append(
            f"| {name} | {amps} | {r['r_s_jump_mohm']:.2f} | {r['r_s_fit_mohm']:.2f} ± "
            f"{r['r_s_fit_se_mohm']:.2f} | {'' if ratio is None else f'{ratio:.2f}'} | "
            f"{r['tau_e_ms']:.3f} | {r['loss_sigma2']:.3g} | {r['lag1']:+.2f} | "
            f"{r['wall_s']:.0f} |")
    (OUT / "series_resistance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
