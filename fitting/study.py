"""Recovery study for hhjax.fitting: can we get the conductances back, every time, fast?

Classic HH (g_na 120, g_k 36, g_l 0.3 mS/cm², E_L -54.387 mV, C 1 µF/cm²), 300 ms current clamp
(20 ms rest, then 50 ms steps of 3, 7, 12, 20 µA/cm² separated by 20 ms rests), sampled every
0.025 ms, Gaussian noise. Free: g_na, g_k, g_l, E_L, C. Ground truth is simulated with the
default tight adaptive solver (Tsit5, rtol = atol = 1e-8, steps onto every current edge),
independent of the fit's fixed-step RK4 on the sample grid.

Run from the repository root:

    python fitting/study.py            # full study (~10-15 min on 2 cores), writes fitting/results/
    python fitting/study.py --quick    # a 3-seed smoke run into fitting/results/quick/

Outputs: `recovery.json` (everything), `fits.csv` (one row per fit), `summary.md` (the table),
and figures `example_fit.png`, `errors.png`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import hhjax  # noqa: E402
from hhjax import fitting as hf  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
# Conditions renamed since an earlier results file (for --reuse): the old "sigma1_random_guess"
# ran init="auto", now "sigma1_random_guess_auto".
PREVIOUS_NAMES = {"sigma1_random_guess_auto": "sigma1_random_guess"}
FREE = ("g_na", "g_k", "g_l", "e_l", "c_m")
TRUTH_P = hhjax.HHParams()
TRUTH = {n: float(getattr(TRUTH_P, n)) for n in FREE}
# Acceptance tolerances: relative for g_na, g_k, c_m (1 %) and g_l (3 %); absolute for E_L (mV).
TOL = dict(g_na=0.01, g_k=0.01, g_l=0.03, c_m=0.01, e_l=0.5)
DT = 0.025
T1 = 300.0


def protocol():
    amps, starts = (3.0, 7.0, 12.0, 20.0), (20.0, 90.0, 160.0, 230.0)
    stim = None
    for a, s in zip(amps, starts):
        step = hhjax.Step(a, s, s + 50.0)
        stim = step if stim is None else stim + step
    return stim


def clean_data():
    """The noise-free truth on the 0.025 ms grid, from the tight adaptive solve."""
    stim = protocol()
    ts = np.round(np.arange(int(round(T1 / DT)) + 1) * DT, 10)
    t0 = time.perf_counter()
    traj = hhjax.simulate(TRUTH_P, stim, T1, ts=ts)
    wall = time.perf_counter() - t0
    i_inj = np.asarray(jax.vmap(stim)(jnp.asarray(ts)))
    return ts, np.asarray(traj.v), i_inj, dict(num_steps=int(traj.num_steps), wall_s=wall)


def noisy(ts, v, i_inj, sigma, seed):
    rng = np.random.default_rng(1000 * int(round(10 * sigma)) + seed)
    return hf.Recording(ts, v + sigma * rng.standard_normal(v.shape), i_inj,
                        metadata=dict(seed=seed, sigma_true=sigma))


def random_guess(seed):
    rng = np.random.default_rng(50_000 + seed)
    g = {n: TRUTH[n] * 3.0 ** rng.uniform(-1, 1) for n in ("g_na", "g_k", "g_l", "c_m")}
    g["e_l"] = TRUTH["e_l"] + rng.uniform(-15, 15)
    return TRUTH_P.replace(**g)


def errors(values):
    return {n: (values[n] - TRUTH[n]) if n == "e_l" else (values[n] - TRUTH[n]) / TRUTH[n]
            for n in FREE}


def success(err):
    return all(abs(err[n]) <= TOL[n] for n in FREE)


def row_of(res, condition, seed, sigma, guess=None):
    err = errors(res.values)
    row = dict(condition=condition, seed=seed, sigma=sigma, wall_s=res.wall_time,
               n_iter=res.n_iter, converged=res.converged, success=success(err),
               fallback_used=res.fallback_used,
               final_loss=float(res.loss_history[-1]),
               poorly_identified=" ".join(res.poorly_identified))
    for n in FREE:
        row[f"{n}"] = res.values[n]
        row[f"err_{n}"] = err[n]
        row[f"se_{n}"] = res.stderr[n]
        lo, hi = res.ci[n]
        row[f"covered_{n}"] = bool(lo <= TRUTH[n] <= hi)
        if guess is not None:
            row[f"guess_{n}"] = float(getattr(guess, n))
    row["all_covered"] = all(row[f"covered_{n}"] for n in FREE)
    return row


def summarise(rows, condition):
    rs = [r for r in rows if r["condition"] == condition]
    if not rs:
        return None
    out = dict(condition=condition, n=len(rs), success=sum(r["success"] for r in rs),
               all_covered=sum(r["all_covered"] for r in rs),
               median_wall_s=float(np.median([r["wall_s"] for r in rs])),
               median_cpu_s=float(np.median([r.get("cpu_s", np.nan) for r in rs])),
               max_wall_s=float(np.max([r["wall_s"] for r in rs])),
               median_iter=float(np.median([r["n_iter"] for r in rs])),
               fallbacks=sum(r["fallback_used"] for r in rs))
    for n in FREE:
        e = np.abs([r[f"err_{n}"] for r in rs])
        out[f"max_abs_err_{n}"] = float(e.max())
        out[f"median_abs_err_{n}"] = float(np.median(e))
        out[f"covered_{n}"] = sum(r[f"covered_{n}"] for r in rs)
        out[f"within5pct_{n}"] = int(np.sum(
            np.abs([r[f"err_{n}"] / (TRUTH[n] if n == "e_l" else 1.0) for r in rs]) <= 0.05))
    out["all_within_5pct"] = sum(
        all(abs(r[f"err_{n}"] / (TRUTH[n] if n == "e_l" else 1.0)) <= 0.05 for n in FREE)
        for r in rs)
    return out


def truth_jacobian(ts, v, i_inj):
    """The fit's residual function at the truth: its Jacobian (samples × free, in the fit's
    coordinates), its value there (the discretisation residual) and the `FreeParams`."""
    from hhjax.fitting._core import _make_residual
    from hhjax.fitting._free import FreeParams

    spec = FreeParams.make(FREE, TRUTH_P, None, None)
    th_true = jnp.asarray(spec.to_theta(spec.values(TRUTH_P)))
    clean = [(jnp.asarray(v), jnp.asarray(i_inj), jnp.asarray(1.0))]
    resid = _make_residual(spec, TRUTH_P, clean, (DT,), "rest")
    return np.asarray(jax.jacfwd(resid)(th_true)), np.asarray(resid(th_true)), spec


def calibration(ts, v, i_inj, rows):
    """How well the reported intervals are calibrated, separated from the luck of the seeds.

    At the truth, the Gauss–Newton linearisation predicts each fit's error exactly as
    $(J^T J)^{-1} J^T \\varepsilon$ for the seed's noise vector $\\varepsilon$, distributed as
    $N(0, (J^T J)^{-1})$ by construction. If the real fits match this prediction, the intervals
    are as well calibrated as the linear theory, and how many seeds they cover is set by the
    noise draws alone. Returns the match (in standard errors) and, per parameter, the z-scores
    of the fits and of the linear prediction.
    """
    jac, r0, spec = truth_jacobian(ts, v, i_inj)  # r0: discretisation residual, ~1e-4 mV
    cov = np.linalg.inv(jac.T @ jac)
    se_theta = np.sqrt(np.diag(cov))
    dx = np.asarray(spec.dx_dtheta(spec.to_theta(spec.values(TRUTH_P))))
    out = dict(seeds=[], z_fit={n: [] for n in FREE}, z_linear={n: [] for n in FREE})
    worst = 0.0
    for row in sorted(rows, key=lambda r: r["seed"]):
        s = row["seed"]
        eps = (noisy(ts, v, i_inj, 1.0, s).v - v) / 1.0
        lin = cov @ jac.T @ (np.asarray(eps) - r0)  # theta_hat - theta_true (r = sim - obs)
        out["seeds"].append(int(s))
        for k, n in enumerate(FREE):
            z_lin = float(lin[k] / se_theta[k])
            z_fit = float((row[n] - TRUTH[n]) / (dx[k] * se_theta[k]))
            out["z_linear"][n].append(z_lin)
            out["z_fit"][n].append(z_fit)
            worst = max(worst, abs(z_fit - z_lin))
    out["max_abs_z_difference"] = worst
    out["z_sd_fit"] = {n: float(np.std(out["z_fit"][n], ddof=1)) for n in FREE}
    out["correlation"] = (cov / np.outer(se_theta, se_theta)).tolist()  # of the fitted theta
    return out


def solver_check(ts, v_true, i_inj):
    """The fit's RK4 on the sample grid against the tight adaptive truth, and costs."""
    rec = hf.Recording(ts, v_true, i_inj, sigma=1.0)
    sim = jax.jit(lambda p, i: hf.simulate_grid(p, i, DT, hhjax.rest_state(p, i[0])))
    v_rk4 = np.asarray(sim(TRUTH_P, rec.i_inj))
    t0 = time.perf_counter()
    for _ in range(5):
        jax.block_until_ready(sim(TRUTH_P, rec.i_inj))
    rk4_s = (time.perf_counter() - t0) / 5
    stim = protocol()
    hhjax.simulate(TRUTH_P, stim, T1, ts=ts)
    t0 = time.perf_counter()
    jax.block_until_ready(hhjax.simulate(TRUTH_P, stim, T1, ts=ts).v)
    tsit_s = time.perf_counter() - t0
    err = v_rk4 - v_true
    return dict(rk4_max_abs_err_mV=float(np.max(np.abs(err))),
                rk4_rms_err_mV=float(np.sqrt(np.mean(err**2))), rk4_solve_s=rk4_s,
                tsit5_1e8_solve_s=tsit_s)


def cold_fit_time(repeats):
    """Wall time of one fit in a fresh process (so it includes all tracing and compilation)."""
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--cold-fit"], capture_output=True,
                             text=True, check=True)
        times.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return times


def _cold_fit():
    ts, v, i_inj, _ = _cached_clean()
    rec = noisy(ts, v, i_inj, 1.0, 0)
    cpu0, t0 = time.process_time(), time.perf_counter()
    res = hf.fit(rec, FREE, init="linear")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(json.dumps(dict(wall_s=wall, cpu_s=cpu, load=os.getloadavg()[0],
                          success=success(errors(res.values)))))


def _cached_clean():
    path = HERE / "results" / "clean_trace.npz"
    if path.exists():
        d = np.load(path)
        return d["t"], d["v"], d["i_inj"], {}
    ts, v, i_inj, info = clean_data()
    path.parent.mkdir(exist_ok=True, parents=True)
    np.savez_compressed(path, t=ts, v=v, i_inj=i_inj)
    return ts, v, i_inj, info


def negative_control(ts, v, i_inj, seeds, steps, lr):
    """Plain Adam (no clipping, no initialiser, no LM) on the raw MSE from the ×3 guesses,
    all seeds in one vmapped compiled loop."""
    spec = hf.FreeParams.make(FREE, TRUTH_P)
    recs = [noisy(ts, v, i_inj, 1.0, s) for s in seeds]
    vobs = jnp.stack([r.v for r in recs])
    ii = jnp.asarray(recs[0].i_inj)
    th0 = jnp.stack([spec.to_theta(spec.values(random_guess(s))) for s in seeds])
    opt = optax.adam(lr)

    def mse(th, vo):
        p = spec.apply(th, TRUTH_P)
        vs = hf.simulate_grid(p, ii, DT, hhjax.rest_state(p, ii[0]))
        return jnp.mean((vs - vo) ** 2)

    def one(th, vo):
        def step(carry, _):
            th, st = carry
            loss, g = jax.value_and_grad(mse)(th, vo)
            ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(g))
            up, st2 = opt.update(jnp.where(ok, g, 0.0), st, th)
            return (jnp.where(ok, optax.apply_updates(th, up), th), st2), loss

        (th, _), losses = jax.lax.scan(step, (th, opt.init(th)), None, length=steps)
        return th, losses, mse(th, vo)

    t0 = time.perf_counter()
    th, losses, final = jax.block_until_ready(jax.jit(jax.vmap(one))(th0, vobs))
    wall = time.perf_counter() - t0
    rows = []
    for k, s in enumerate(seeds):
        vals = {n: float(x) for n, x in zip(FREE, np.asarray(spec.to_natural(th[k])))}
        err = errors(vals)
        rows.append(dict(condition="negative_control_adam", seed=s, sigma=1.0,
                         success=success(err), final_mse=float(final[k]),
                         **{f"err_{n}": err[n] for n in FREE}))
    return rows, dict(wall_s=wall, steps=steps, lr=lr, seeds=list(seeds),
                      loss_curves=np.asarray(losses).tolist())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 seeds, into results/quick/")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--sigma2-seeds", type=int, default=10)
    ap.add_argument("--control-seeds", type=int, default=4)
    ap.add_argument("--control-steps", type=int, default=100)
    ap.add_argument("--cold-repeats", type=int, default=2)
    ap.add_argument("--coverage-seeds", type=int, default=40,
                    help="σ = 1 no-guess seeds for the coverage figure (beyond --seeds: batch)")
    ap.add_argument("--reuse", default="",
                    help="comma-separated conditions whose rows are taken from the existing "
                         "recovery.json instead of refitted (code unchanged for them), e.g. "
                         "sigma2_no_guess,sigma1_random_guess_auto,negative_control")
    ap.add_argument("--cold-fit", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cold_fit:
        return _cold_fit()
    out_dir = HERE / "results"
    if args.quick:
        out_dir = out_dir / "quick"
        args.seeds, args.control_seeds, args.control_steps, args.cold_repeats = 3, 2, 20, 1
        args.sigma2_seeds, args.coverage_seeds = 3, 6
    out_dir.mkdir(parents=True, exist_ok=True)
    t_study = time.perf_counter()
    meta = dict(python=platform.python_version(), jax=jax.__version__, cpus=os.cpu_count(),
                load_at_start=os.getloadavg(), machine=platform.machine())
    ts, v, i_inj, gen = clean_data()
    np.savez_compressed(HERE / "results" / "clean_trace.npz", t=ts, v=v, i_inj=i_inj)
    print(f"truth simulated: {gen}", flush=True)
    solver = solver_check(ts, v, i_inj)
    print(f"solver check: {solver}", flush=True)
    seeds = list(range(args.seeds))
    rows = []
    reuse = [c for c in args.reuse.split(",") if c]
    prev = json.loads((out_dir / "recovery.json").read_text()) if reuse else {}
    reused = {}
    for c in reuse:
        if c == "negative_control":
            continue
        old = c
        if c not in {r["condition"] for r in prev["rows"]}:
            old = PREVIOUS_NAMES.get(c, c)
        rs = [dict(r, condition=c) for r in prev["rows"] if r["condition"] == old]
        if not rs:
            raise SystemExit(f"--reuse: no rows for {c!r} in the previous recovery.json")
        rows += rs
        reused[c] = dict(rows=len(rs), from_condition=old,
                         load_at_start=prev["meta"]["load_at_start"][0])

    # Discretisation bias: fit the noise-free trace (the fit's RK4 vs the adaptive truth).
    res = hf.fit(hf.Recording(ts, v, i_inj, sigma=1.0), FREE, init="linear")
    bias = errors(res.values)
    print(f"noise-free fit errors (discretisation bias): {bias}", flush=True)

    def run(condition, sigma, make_params0, init, n_seeds=None):
        if condition in reused:
            return
        for s in seeds[:n_seeds]:
            rec = noisy(ts, v, i_inj, sigma, s)
            p0 = make_params0(s)
            cpu0 = time.process_time()
            r = hf.fit(rec, FREE, p0, init=init)
            rows.append(row_of(r, condition, s, sigma, p0 if init != "linear" else None))
            rows[-1]["cpu_s"] = time.process_time() - cpu0
            print(f"{condition} seed {s}: {r.wall_time:.2f} s, {r.n_iter} it, "
                  f"fallback={r.fallback_used}, loss={r.loss_history[-1]:.4f}, "
                  f"success={rows[-1]['success']}, "
                  + " ".join(f"{n}={rows[-1]['err_' + n]:+.2e}" for n in FREE), flush=True)
            if condition == "sigma1_no_guess" and s == 0:
                fig = hf.plot_fit(r, truth=TRUTH, title="σ = 1 mV, seed 0, no starting guess")
                fig.savefig(out_dir / "example_fit.png", dpi=120)

    # No starting guess: params0=None supplies only the fixed kinetics and reversals; the free
    # fields come from the linear initialiser alone.
    run("sigma1_no_guess", 1.0, lambda s: None, "linear")
    # LM genuinely from the ×3 random guess (nudging fallback from the same guess if the LM
    # ends in a local minimum); the linear estimate is not used.
    run("sigma1_random_guess", 1.0, random_guess, "guess")
    # init="auto": the better (lower loss) of the guess and the linear estimate.
    run("sigma1_random_guess_auto", 1.0, random_guess, "auto")
    run("sigma2_no_guess", 2.0, lambda s: None, "linear", args.sigma2_seeds)

    # 20 fits in one vmapped call (includes compiling the vmapped program).
    recs = [noisy(ts, v, i_inj, 1.0, s) for s in seeds]
    t0, cpu0 = time.perf_counter(), time.process_time()
    batch = hf.fit_batch(recs, FREE, init="linear")
    batch_wall, batch_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    batch_rows = [row_of(r, "sigma1_batch_vmap", s, 1.0) for r, s in zip(batch, seeds)]
    rows += batch_rows
    print(f"vmapped batch of {len(recs)}: {batch_wall:.1f} s, "
          f"{sum(r.fallback_used for r in batch)} fallbacks", flush=True)

    # Coverage over more seeds: seeds 0..19 from the single no-guess fits above plus further
    # seeds from a second vmapped batch (the same fit; it matches `fit` to 1e-6).
    extra = list(range(len(seeds), args.coverage_seeds))
    if extra:
        t0 = time.perf_counter()
        more = hf.fit_batch([noisy(ts, v, i_inj, 1.0, s) for s in extra], FREE, init="linear")
        rows += [row_of(r, "sigma1_no_guess_extra_seeds", s, 1.0) for r, s in zip(more, extra)]
        print(f"coverage batch of {len(extra)} more seeds: {time.perf_counter() - t0:.1f} s",
              flush=True)

    calib = calibration(ts, v, i_inj, [r for r in rows if r["condition"] in (
        "sigma1_no_guess", "sigma1_no_guess_extra_seeds")])
    print(f"calibration: fits vs linear prediction max |dz| {calib['max_abs_z_difference']:.3f}",
          flush=True)

    cold = cold_fit_time(args.cold_repeats)
    print(f"cold single fits (fresh process): {cold}", flush=True)

    if "negative_control" in reuse:
        control_rows, control = prev["control_rows"], prev["negative_control_run"]
        reused["negative_control"] = dict(rows=len(control_rows),
                                          load_at_start=prev["meta"]["load_at_start"][0])
    else:
        control_rows, control = negative_control(
            ts, v, i_inj, list(range(args.control_seeds)), args.control_steps, 0.02)
    print(f"negative control: {control['wall_s']:.1f} s, "
          f"success {sum(r['success'] for r in control_rows)}/{len(control_rows)}", flush=True)

    summaries = [summarise(rows, c) for c in ("sigma1_no_guess", "sigma1_random_guess",
                                              "sigma1_random_guess_auto", "sigma2_no_guess",
                                              "sigma1_batch_vmap")]
    cov_rows = [dict(r, condition="coverage") for r in rows
                if r["condition"] in ("sigma1_no_guess", "sigma1_no_guess_extra_seeds")]
    coverage = summarise(cov_rows, "coverage")
    ctrl = dict(condition="negative_control_adam", n=len(control_rows),
                success=sum(r["success"] for r in control_rows))
    for n in FREE:
        e = np.abs([r[f"err_{n}"] for r in control_rows])
        ctrl[f"median_abs_err_{n}"] = float(np.median(e))
        ctrl[f"max_abs_err_{n}"] = float(e.max())
    result = dict(meta=meta, truth=TRUTH, tolerances=TOL, generation=gen, solver=solver,
                  noise_free_fit_errors=bias, summaries=summaries, coverage=coverage,
                  calibration=calib,
                  negative_control=ctrl, reused=reused,
                  negative_control_run=control, control_rows=control_rows,
                  batch_wall_s=batch_wall, batch_cpu_s=batch_cpu, cold_fits=cold,
                  study_wall_s=time.perf_counter() - t_study, load_at_end=os.getloadavg(),
                  rows=rows)
    (out_dir / "recovery.json").write_text(json.dumps(result, indent=1))
    keys = sorted({k for r in rows for k in r})
    with open(out_dir / "fits.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    (out_dir / "summary.md").write_text(markdown(result))
    figure_errors(rows, control_rows, out_dir / "errors.png")
    print(markdown(result))


LABELS = {
    "sigma1_no_guess": "σ=1, no guess (`init=\"linear\"`)",
    "sigma1_random_guess": "σ=1, ×3 random guess, LM from the guess (`init=\"guess\"`)",
    "sigma1_random_guess_auto": "σ=1, ×3 random guess, auto: better of guess and linear "
                                "estimate (`init=\"auto\"`)",
    "sigma2_no_guess": "σ=2, no guess (`init=\"linear\"`)",
    "sigma1_batch_vmap": "σ=1, no guess, 20 in one vmapped `fit_batch`",
}


def _binom_le(k, n, p=0.95):
    """P(X <= k) for X ~ Binomial(n, p)."""
    from math import comb

    return sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k + 1))


def _fmt_err(s, n):
    if n == "e_l":
        return f"{s[f'median_abs_err_{n}']:.3f} / {s[f'max_abs_err_{n}']:.3f} mV"
    return f"{100 * s[f'median_abs_err_{n}']:.2f} / {100 * s[f'max_abs_err_{n}']:.2f} %"


def markdown(res):
    lines = ["# Recovery study (generated by `fitting/study.py`)", ""]
    m = res["meta"]
    lines += [f"Machine: {m['cpus']} CPUs, JAX {m['jax']}; load average at start "
              f"{m['load_at_start'][0]:.1f}, at end {res['load_at_end'][0]:.1f} (other jobs "
              f"share these cores). Study wall time {res['study_wall_s']:.0f} s.", ""]
    for c, info in res.get("reused", {}).items():
        lines += [f"Rows of `{c}` are reused from the previous run (its code path is unchanged; "
                  f"load average at that run's start {info['load_at_start']:.1f}).", ""]
    lines += ["Success: g_na, g_k, C within 1 %, g_l within 3 %, E_L within 0.5 mV. "
              "Errors are median / max absolute over seeds. Coverage: seeds whose 95 % interval "
              "contains the truth.", ""]
    head = ("| condition | fits | success | all 5 CIs cover | "
            + " | ".join(f"{n} err" for n in FREE)
            + " | median wall (s) | max wall (s) | median CPU (s) | median LM it"
            + " | nudging fallbacks |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for s in res["summaries"]:
        if s is None:
            continue
        lines.append(
            f"| {LABELS.get(s['condition'], s['condition'])} | {s['n']} | "
            f"{s['success']}/{s['n']} | "
            f"{s['all_covered']}/{s['n']} | " + " | ".join(_fmt_err(s, n) for n in FREE) +
            f" | {s['median_wall_s']:.2f} | {s['max_wall_s']:.2f} | {s['median_cpu_s']:.2f} |"
            f" {s['median_iter']:.0f} | {s['fallbacks']} |")
    c, cr = res["negative_control"], res["negative_control_run"]
    lines.append(
        f"| negative control: plain Adam, raw MSE, ×3 guesses, {cr['steps']} steps, "
        f"lr {cr['lr']} | {c['n']} | {c['success']}/{c['n']} | – | "
        + " | ".join(_fmt_err(c, n) for n in FREE) + f" | {cr['wall_s'] / c['n']:.1f} (vmapped "
        f"total {cr['wall_s']:.0f}) | – | – | – | – |")
    lines += ["", "Per-parameter CI coverage (out of fits):", ""]
    for s in res["summaries"]:
        if s is None:
            continue
        lines.append(f"- {s['condition']}: " + ", ".join(f"{n} {s[f'covered_{n}']}" for n in FREE)
                     + f"; all five within 5 %: {s['all_within_5pct']}/{s['n']}")
    cv = res.get("coverage")
    if cv is not None and cv["n"] > res["summaries"][0]["n"]:
        lines += ["", f"Coverage over {cv['n']} seeds (σ = 1, no guess; seeds 0–"
                  f"{res['summaries'][0]['n'] - 1} the single fits above, the rest one more "
                  "vmapped batch): " + ", ".join(
                      f"{n} {cv[f'covered_{n}']}/{cv['n']} "
                      f"({100 * cv[f'covered_{n}'] / cv['n']:.0f} %,"
                      f" P(≤ this | 95 %) {_binom_le(cv[f'covered_{n}'], cv['n']):.2f})"
                      for n in FREE)
                  + f"; all five at once {cv['all_covered']}/{cv['n']}; success {cv['success']}/"
                  f"{cv['n']}."]
    cal = res.get("calibration")
    if cal is not None:
        p18 = 1.0 - _binom_le(17, 20)
        lines += ["", "Calibration (`calibration()`): at the truth the linearised fit predicts "
                  "each seed's error as (JᵀJ)⁻¹Jᵀε from that seed's own noise vector ε; this "
                  "prediction is N(0, (JᵀJ)⁻¹) by construction, so intervals that match it "
                  "are exactly calibrated and the number of seeds they cover is decided by "
                  "the noise draws. "
                  f"Over the {len(cal['seeds'])} no-guess seeds the real fits match the "
                  f"prediction to {cal['max_abs_z_difference']:.3f} standard errors (largest "
                  "difference, any parameter). Spread of the fits' z-scores over these seeds "
                  "(1 expected): " + ", ".join(f"{n} {cal['z_sd_fit'][n]:.2f}" for n in FREE)
                  + f". For exactly calibrated 95 % intervals, P(at least 18 of 20 seeds "
                  f"covered) = {p18:.3f} per parameter."]
    cold = res["cold_fits"]
    lines += ["", "Timing:", "",
              "- one fit in a fresh process (tracing + compilation + run), wall: "
              + ", ".join(f"{t['wall_s']:.1f} s (CPU {t['cpu_s']:.1f} s, load {t['load']:.1f})"
                          for t in cold)
              + f"; median {np.median([t['wall_s'] for t in cold]):.1f} s",
              f"- {res['summaries'][0]['n']} fits in one vmapped `fit_batch` call, including "
              f"compilation: {res['batch_wall_s']:.1f} s wall, {res['batch_cpu_s']:.1f} s CPU",
              "- in-process fits above reuse the compiled program after the first; "
              "their median is the warm per-fit cost.", ""]
    sv = res["solver"]
    lines += ["Solver (fit: RK4 on the 0.025 ms sample grid, current held per sample; truth: "
              "Tsit5 rtol=atol=1e-8 with jump times):", "",
              f"- RK4 vs truth: max |Δv| {sv['rk4_max_abs_err_mV']:.2e} mV, rms "
              f"{sv['rk4_rms_err_mV']:.2e} mV",
              f"- one 300 ms solve: RK4 grid {1e3 * sv['rk4_solve_s']:.0f} ms, "
              f"Tsit5 1e-8 {1e3 * sv['tsit5_1e8_solve_s']:.0f} ms",
              "- noise-free fit (discretisation bias of the fit's solver): " + ", ".join(
                  f"{n} {v_:+.2e}" + (" mV" if n == "e_l" else " (rel)")
                  for n, v_ in res["noise_free_fit_errors"].items()), ""]
    return "\n".join(lines)


def figure_errors(rows, control_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FREE), figsize=(14, 3.2))
    conds = [("sigma1_no_guess", "σ=1, no guess"), ("sigma1_random_guess", "σ=1, ×3 guess (LM)"),
             ("sigma1_random_guess_auto", "σ=1, ×3 guess (auto)"),
             ("sigma2_no_guess", "σ=2, no guess")]
    for ax, n in zip(axes, FREE):
        scale = 1.0 if n == "e_l" else 100.0
        for k, (c, label) in enumerate(conds):
            e = [scale * r[f"err_{n}"] for r in rows if r["condition"] == c]
            ax.plot(np.full(len(e), k) + np.linspace(-0.15, 0.15, len(e)), e, "o", ms=3,
                    label=label)
        e = [scale * r[f"err_{n}"] for r in control_rows]
        ax.plot(np.full(len(e), float(len(conds))), e, "x", color="k", label="Adam control")
        tol = TOL[n] * scale
        ax.axhspan(-tol, tol, color="0.9", zorder=0)
        ax.set_xticks(range(len(conds) + 1), ["σ1", "σ1 g", "σ1 auto", "σ2", "Adam"])
        ax.set_title(n + (" (mV)" if n == "e_l" else " (%)"))
        ax.set_yscale("symlog", linthresh=tol)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
