"""Coverage of hhjax.fitting's 95 % intervals over many noise seeds (the recovery study's data).

The recovery study checks its intervals on 20 seeds (and 40 for a coverage figure). Twenty draws
cannot tell a calibrated interval from a slightly narrow one: a perfectly calibrated 95 %
interval covers at least 18 of 20 seeds with probability 0.925 for one parameter, and less for
five at once. This script fits many more seeds (the same data, noise and fit as the study's
no-guess condition, through `fit_batch`) and reports, per parameter:

- coverage k/N with a Wilson 95 % interval, and the binomial probability of a result this far
  from 95 %;
- the spread of the z-scores (fit − truth) / SE, which is 1 for calibrated intervals;
- consecutive blocks of 20 seeds (0–19, 20–39, ...): how many meet "at least 18 of 20" for every
  parameter, next to the probability that exactly calibrated intervals meet it (from the fits'
  own correlation matrix at the truth, by Monte Carlo);
- the match of each fit to its Gauss–Newton linearisation at the truth (the study's
  `calibration`).

Run from the repository root (white noise: 200 seeds in ~2.5 min on 2 cores, compilation included;
AR(1) noise from the truth ~2 s per seed):

    python fitting/coverage.py                 # 200 seeds, σ = 1 mV
    python fitting/coverage.py --seeds 400     # more; seeds already fitted are kept
    python fitting/coverage.py --tau 1 --seeds 100   # AR(1) noise, 1 ms: both noise models

Each part of `--part` seeds is written to `results/coverage_rows.json` as soon as it is done, so an
interrupted run resumes where it stopped (`--fresh` starts over). Outputs:
`results/coverage.json` and `results/coverage.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import jax  # noqa: E402
import study  # noqa: E402  (sets float64 before anything is traced)

from hhjax import fitting as hf  # noqa: E402

FREE, TRUTH = study.FREE, study.TRUTH
Z95 = 1.959963984540054
BLOCK = 20  # seeds per block, as in the "at least 18 of 20"
NEED = 18
SIGMA = 1.0  # mV, as the study's coverage figure (its linearisation check assumes it)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n."""
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return mid - half, mid + half


def binom_two_sided(k: int, n: int, p: float = 0.95) -> float:
    """Exact two-sided binomial p-value (sum of outcomes no more likely than k)."""
    pmf = [math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(n + 1)]
    return float(min(1.0, sum(q for q in pmf if q <= pmf[k] * (1 + 1e-9))))


def chance_of_line(corr: np.ndarray, blocks: int = 200_000, seed: int = 0) -> dict:
    """Probability that exactly calibrated intervals with the fits' correlation cover the truth
    in at least NEED of BLOCK seeds, per parameter and for all parameters at once."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(corr)
    hit = np.zeros((blocks, len(FREE)), dtype=np.int32)
    for _ in range(BLOCK):
        z = rng.standard_normal((blocks, len(FREE))) @ chol.T
        hit += np.abs(z) <= Z95
    ok = hit >= NEED
    return dict(per_parameter={n: float(ok[:, k].mean()) for k, n in enumerate(FREE)},
                all_parameters=float(ok.all(axis=1).mean()), blocks=blocks)


def ar1_noisy(ts, v, i_inj, tau, seed):
    """The recording with AR(1) noise of correlation time `tau` (ms), marginal SD SIGMA."""
    rng = np.random.default_rng(777_000 + seed)
    rho = math.exp(-study.DT / tau)
    z = rng.standard_normal(v.shape) * math.sqrt(1 - rho * rho)
    e = np.empty_like(z)
    e[0] = rng.standard_normal()
    for k in range(1, len(z)):
        e[k] = rho * e[k - 1] + z[k]
    # The noise SD is given: estimate_noise reads white noise from second differences, which
    # coloured noise mostly lacks (it would report ~0.2 mV here).
    return hf.Recording(ts, v + SIGMA * e, i_inj, sigma=SIGMA,
                        metadata=dict(seed=seed, tau=tau))


def guesses(seeds, spread, el_spread):
    """A batch of starting models: g_na, g_k, g_l, C log-uniform within ×`spread` of the truth,
    E_L uniform within ±`el_spread` mV (one per seed, reproducible)."""
    import jax.numpy as jnp

    rows = []
    for s in seeds:
        rng = np.random.default_rng(90_000 + s)
        g = {n: TRUTH[n] * spread ** rng.uniform(-1, 1) for n in ("g_na", "g_k", "g_l", "c_m")}
        g["e_l"] = TRUTH["e_l"] + rng.uniform(-el_spread, el_spread)
        rows.append(g)
    return study.TRUTH_P.replace(**{n: jnp.asarray([g[n] for g in rows]) for n in FREE})


def fit_seeds(ts, v, i_inj, tau, seeds, part, rows_path, rows, start="truth",
              spread=(1.5, 5.0)):
    done = {r["seed"] for r in rows}
    todo = [s for s in seeds if s not in done]
    print(f"{len(done & set(seeds))} of {len(seeds)} seeds already fitted; {len(todo)} to go",
          flush=True)
    for k in range(0, len(todo), part):
        chunk = todo[k:k + part]
        t0 = time.perf_counter()
        if tau == 0:
            recs = [study.noisy(ts, v, i_inj, SIGMA, s) for s in chunk]
            res = hf.fit_batch(recs, FREE, init="linear")
        else:
            # Started at the truth by default: this tests the intervals, not the start (the
            # linear initialiser is biased by coloured noise; `start="linear"` measures that).
            recs = [ar1_noisy(ts, v, i_inj, tau, s) for s in chunk]
            if start == "truth":
                res = hf.fit_batch(recs, FREE, study.TRUTH_P, init="guess", noise="correlated")
            elif start == "guess":
                res = hf.fit_batch(recs, FREE, guesses(chunk, *spread), init="guess",
                                   noise="correlated")
            else:
                res = hf.fit_batch(recs, FREE, init="linear", noise="correlated")
        wall = time.perf_counter() - t0
        for r, s in zip(res, chunk):
            row = study.row_of(r, "coverage", s, SIGMA)
            row["part_wall_s"] = wall
            row["residual_lag1"] = r.residual_lag1
            for n in FREE:
                # The other noise model's interval from the same fit: SE_corr = ratio * SE_white.
                ratio = r.se_ratio[n]
                se_white = r.stderr[n] / ratio if tau else r.stderr[n]
                row[f"se_ratio_{n}"] = ratio
                row[f"covered_white_{n}"] = bool(abs(row[f"{n}"] - TRUTH[n]) <= Z95 * se_white)
                row[f"covered_corr_{n}"] = bool(
                    abs(row[f"{n}"] - TRUTH[n]) <= Z95 * se_white * ratio)
            rows.append(row)
        rows_path.write_text(json.dumps(rows, indent=0))
        print(f"seeds {chunk[0]}-{chunk[-1]}: {wall:.1f} s "
              f"({len(rows)}/{len(seeds)} done, {sum(r.fallback_used for r in res)} fallbacks)",
              flush=True)
    return rows


def summarise(rows, calib, chance):
    n = len(rows)
    out = dict(n=n, per_parameter={}, blocks=[])
    for p in FREE:
        k = sum(r[f"covered_{p}"] for r in rows)
        z = np.asarray(calib["z_fit"][p])
        # 95 % interval of a standard deviation from n draws (chi-square, normal approximation).
        half = Z95 / math.sqrt(2 * (n - 1))
        out["per_parameter"][p] = dict(
            covered=int(k), fraction=k / n, wilson95=wilson(k, n),
            p_value_vs_95=binom_two_sided(int(k), n), z_sd=float(z.std(ddof=1)),
            z_sd_expected_range=(1 - half, 1 + half), z_mean=float(z.mean()),
            max_abs_z=float(np.abs(z).max()))
    rows = sorted(rows, key=lambda r: r["seed"])
    for b in range(n // BLOCK):
        rs = rows[b * BLOCK:(b + 1) * BLOCK]
        cov = {p: sum(r[f"covered_{p}"] for r in rs) for p in FREE}
        out["blocks"].append(dict(seeds=(rs[0]["seed"], rs[-1]["seed"]), covered=cov,
                                  meets_line=all(c >= NEED for c in cov.values())))
    out["blocks_meeting_line"] = sum(b["meets_line"] for b in out["blocks"])
    out["success"] = sum(r["success"] for r in rows)
    out["fallbacks"] = sum(r["fallback_used"] for r in rows)
    out["chance_calibrated"] = chance
    out["max_abs_z_difference_vs_linearisation"] = calib["max_abs_z_difference"]
    return out


def exact_se_ratio(ts, v, i_inj, tau):
    """SE under AR(1) noise of correlation time `tau` over the white-noise SE, exactly:
    $(J^T J)^{-1} J^T \\Sigma J (J^T J)^{-1}$, $\\Sigma_{ij} = \\rho^{|i-j|}$, J at the truth."""
    jac = study.truth_jacobian(ts, v, i_inj)[0]
    inv = np.linalg.inv(jac.T @ jac)
    rho = math.exp(-study.DT / tau)
    jsj = jac.T @ jac
    for lag in range(1, len(jac)):
        if rho**lag < 1e-12:
            break
        m = jac[lag:].T @ jac[:-lag]
        jsj += rho**lag * (m + m.T)
    return dict(zip(FREE, np.sqrt(np.diag(inv @ jsj @ inv) / np.diag(inv)).tolist()))


def summarise_tau(rows, exact):
    n = len(rows)
    # A fit at the optimum leaves the noise: final mean squared residual ≈ 1 σ² (0.82–1.25 over
    # 200 seeds from the truth at τ = 1 ms); a local minimum leaves 3–50 σ².
    out = dict(n=n, per_parameter={}, success=sum(r["success"] for r in rows),
               at_optimum=sum(r["final_loss"] < 1.5 for r in rows),
               fallbacks=sum(r["fallback_used"] for r in rows),
               median_residual_lag1=float(np.median([r["residual_lag1"] for r in rows])))
    for p in FREE:
        z = np.asarray([r[f"err_{p}"] * (TRUTH[p] if p != "e_l" else 1.0) / r[f"se_{p}"]
                        for r in rows])
        ratio = np.asarray([r[f"se_ratio_{p}"] for r in rows])
        k_corr = sum(r[f"covered_corr_{p}"] for r in rows)
        k_white = sum(r[f"covered_white_{p}"] for r in rows)
        out["per_parameter"][p] = dict(
            covered_correlated=int(k_corr), wilson95_correlated=wilson(k_corr, n),
            covered_white=int(k_white), wilson95_white=wilson(k_white, n),
            z_sd_correlated=float(np.nanstd(np.where(np.isfinite(z), z, np.nan), ddof=1)),
            se_ratio_median=float(np.nanmedian(ratio)),
            se_ratio_range=(float(np.nanmin(ratio)), float(np.nanmax(ratio))),
            se_ratio_exact=exact[p])
    return out


def _machine_line(res) -> str:
    m = res["meta"]
    return (f"Machine: {m['cpus']} CPUs, JAX {m['jax']}; load average at the start of the "
            f"latest run {m['load_at_start'][0]:.1f}. Fitting took {res['wall_s']:.0f} s (all "
            "parts, compilation included).")


def markdown_tau(res) -> str:
    s = res["summary"]
    lines = [
        f"# Interval coverage under coloured noise, τ = {res['tau']:g} ms "
        "(generated by `fitting/coverage.py --tau`)", "",
        _machine_line(res), "",
        f"The recovery study's trace with AR(1) noise (correlation time {res['tau']:g} ms, "
        f"marginal SD {res['sigma']:g} mV, the SD given to `Recording`), seeds 0–{s['n'] - 1}. "
        + ("Each fit starts at the truth (`init=\"guess\"`): this tests the intervals, not "
           "the start. " if res.get("start", "truth") == "truth" else
           "Each fit starts from the linear initialiser (`init=\"linear\"`, no guess), as "
           "the study's no-guess condition: this tests the whole pipeline. "
           if res.get("start") == "linear" else
           f"Each fit starts from a random guess (`init=\"guess\"`, conductances and C "
           f"log-uniform within ×{res['spread'][0]:g} of the truth, E_L within "
           f"±{res['spread'][1]:g} mV), LM then the nudging fallback: this tests the "
           "pipeline given a guess. ")
        + "Both intervals come from the same fit: white-noise SE and "
        "`noise=\"correlated\"` SE (= white × `se_ratio`). Success (the study's "
        f"tolerances, which assume 1 mV white noise): {s['success']}/{s['n']}; at the "
        f"optimum (final mean squared residual < 1.5 σ²): {s['at_optimum']}/{s['n']}; "
        "median lag-1 "
        f"autocorrelation of the residuals {s['median_residual_lag1']:.3f}.", "",
        "| parameter | covered, correlated | Wilson 95 % | covered, white | z spread, "
        "correlated (1 expected) | SE ratio: median (range; fits with finite SE) "
        "| SE ratio, exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, d in s["per_parameter"].items():
        lo, hi = d["wilson95_correlated"]
        a, b = d["se_ratio_range"]
        lines.append(
            f"| {p} | {d['covered_correlated']}/{s['n']} | {100 * lo:.1f}–{100 * hi:.1f} % | "
            f"{d['covered_white']}/{s['n']} | {d['z_sd_correlated']:.3f} | "
            f"{d['se_ratio_median']:.2f} ({a:.2f}–{b:.2f}) | {d['se_ratio_exact']:.2f} |")
    lines += ["", "SE ratio, exact: $(J^T J)^{-1} J^T \\Sigma J (J^T J)^{-1}$ for this AR(1) "
              "noise over the white-noise $(J^T J)^{-1}$, J at the truth (independent of the "
              "fits)."]
    return "\n".join(lines) + "\n"


def markdown(res) -> str:
    s = res["summary"]
    lines = [
        "# Interval coverage over many seeds (generated by `fitting/coverage.py`)", "",
        _machine_line(res), "",
        f"Data, noise and fit as the recovery study's no-guess condition (σ = {res['sigma']:g} "
        f"mV, `fit_batch(..., init=\"linear\")`), seeds 0–{s['n'] - 1}. Success (the study's "
        f"tolerances): {s['success']}/{s['n']}; nudging fallbacks {s['fallbacks']}. Each fit "
        f"matches its Gauss–Newton linearisation at the truth to "
        f"{s['max_abs_z_difference_vs_linearisation']:.3f} standard errors (largest, any "
        "parameter).", "",
        "| parameter | covered | fraction | Wilson 95 % | P(this far from 95 %) | z spread "
        "(1 expected) | expected range | max abs z |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p, d in s["per_parameter"].items():
        lo, hi = d["wilson95"]
        elo, ehi = d["z_sd_expected_range"]
        lines.append(f"| {p} | {d['covered']}/{s['n']} | {100 * d['fraction']:.1f} % | "
                     f"{100 * lo:.1f}–{100 * hi:.1f} % | {d['p_value_vs_95']:.2f} | "
                     f"{d['z_sd']:.3f} | {elo:.2f}–{ehi:.2f} | {d['max_abs_z']:.2f} |")
    ch = s["chance_calibrated"]
    lines += [
        "", f"Blocks of {BLOCK} consecutive seeds meeting \"at least {NEED} of {BLOCK} covered\" "
        f"for all five parameters: **{s['blocks_meeting_line']} of {len(s['blocks'])}**. "
        f"Exactly calibrated intervals with these parameters' correlation meet it with "
        f"probability {ch['all_parameters']:.3f} per block (Monte Carlo, {ch['blocks']} blocks; "
        "per parameter " + ", ".join(f"{p} {q:.3f}" for p, q in ch["per_parameter"].items())
        + ").", "",
        "| seeds | " + " | ".join(FREE) + " | meets |",
        "|---|" + "---|" * (len(FREE) + 1),
    ]
    for b in s["blocks"]:
        lines.append(f"| {b['seeds'][0]}–{b['seeds'][1]} | "
                     + " | ".join(str(b["covered"][p]) for p in FREE)
                     + f" | {'yes' if b['meets_line'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=200, help="seeds 0..N-1 (default 200)")
    ap.add_argument("--part", type=int, default=40,
                    help="seeds per fit_batch call; each part is saved when done (default 40)")
    ap.add_argument("--fresh", action="store_true", help="ignore seeds fitted by earlier runs")
    ap.add_argument("--tau", type=float, default=0.0,
                    help="AR(1) noise correlation time, ms (default 0: white noise, as the "
                         "study); > 0 fits from the truth and compares both noise models")
    ap.add_argument("--start", choices=("truth", "linear", "guess"), default="truth",
                    help="with --tau: start each fit at the truth (default; tests the "
                         "intervals), from the linear initialiser (tests the pipeline), or "
                         "from random guesses (--spread)")
    ap.add_argument("--spread", type=float, nargs=2, default=(1.5, 5.0),
                    metavar=("FACTOR", "EL_MV"),
                    help="with --start guess: conductances and C within ×FACTOR of the truth "
                         "(log-uniform), E_L within ±EL_MV (default 1.5 5)")
    args = ap.parse_args()
    if args.seeds < BLOCK or args.part < 1 or args.tau < 0:
        ap.error(f"--seeds must be at least {BLOCK}, --part at least 1, --tau at least 0")
    out_dir = study.HERE / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = {"truth": "", "linear": "_linear",
              "guess": f"_guess{args.spread[0]:g}x{args.spread[1]:g}mV"}[args.start]
    tag = f"_tau{args.tau:g}{suffix}" if args.tau else ""
    rows_path = out_dir / f"coverage_rows{tag}.json"
    rows = [] if args.fresh or not rows_path.exists() else json.loads(rows_path.read_text())
    meta = dict(python=platform.python_version(), jax=jax.__version__, cpus=os.cpu_count(),
                load_at_start=os.getloadavg())
    ts, v, i_inj, _ = study.clean_data()
    rows = fit_seeds(ts, v, i_inj, args.tau, list(range(args.seeds)), args.part, rows_path,
                     rows, args.start, tuple(args.spread))
    rows = [r for r in rows if r["seed"] < args.seeds]
    # Fit time of all parts, including those fitted by earlier (resumed) runs; each part's
    # rows share its wall time.
    wall = float(sum({r["part_wall_s"] for r in rows}))
    if args.tau:
        res = dict(meta=meta, sigma=SIGMA, tau=args.tau, start=args.start,
                   spread=list(args.spread), wall_s=wall,
                   summary=summarise_tau(rows, exact_se_ratio(ts, v, i_inj, args.tau)))
        (out_dir / f"coverage{tag}.json").write_text(json.dumps(res, indent=1))
        (out_dir / f"coverage{tag}.md").write_text(markdown_tau(res))
        print(markdown_tau(res))
        return
    calib = study.calibration(ts, v, i_inj, rows)
    chance = chance_of_line(np.asarray(calib["correlation"]))
    res = dict(meta=meta, sigma=SIGMA, wall_s=wall,
               summary=summarise(rows, calib, chance), calibration=calib)
    (out_dir / "coverage.json").write_text(json.dumps(res, indent=1))
    (out_dir / "coverage.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
