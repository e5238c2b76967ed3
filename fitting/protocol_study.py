"""The protocol study: does `hhjax.fitting.fit` recover a perturbed truth on protocols it was
never tuned on, from no guess and from random guesses?

For each model family (classic HH, cortical regular spiking) and each protocol of
`protocols.PROTOCOLS` (steps from rest, random steps whose first sample is non-zero, an
Ornstein–Uhlenbeck current, a slow ramp): `--seeds` perturbed truths, each recorded for 200 ms
at 0.025 ms with σ = 1 mV of white noise added to a tight scipy solve, fitted

- from no guess (`params0` = the family's preset, `init="auto"`), and
- from 3 random guesses each (every free conductance and C ×2^U(-1, 1) around the preset,
  potentials ±U(10) mV),

all with the library's defaults (`y0="fit"`, nudging fallback, multi-start escalation), in one
`fit_batch` per family, protocol and start. A fit passes when every conductance and C is
within 2 % (g_L 5 %), every potential within 1 mV, and the residuals are white
(|lag-1| < 0.1). Timing: single fits with every compiled program cleared first (so each
includes its compilation), and one 20-fit `fit_batch`, likewise from cold.

    python fitting/protocol_study.py                 # the full study (≈ 1 h on 2 cores)
    python fitting/protocol_study.py --seeds 2 --families hh --protocols steps   # a smoke run

Writes `fitting/results/protocols/{results.json, summary.md}`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import protocols as P  # noqa: E402

import hhjax  # noqa: E402
from hhjax import fitting as hf  # noqa: E402
from hhjax.models import Pospischil  # noqa: E402

T1, DT, SIGMA = 200.0, 0.025, 1.0
OUT = pathlib.Path(__file__).resolve().parent / "results" / "protocols"
POTENTIALS = ("e_l", "v_t", "e_na", "e_k")


def family(name):
    """`(truth(seed), free, preset)` of a model family."""
    if name == "hh":
        return P.hh_truth, P.HH_FREE, hhjax.HHParams()
    return P.rs_truth, P.RS_FREE, Pospischil.regular_spiking()


def noise_rng(proto, seed):
    """The generator of the noise drawn into a protocol's recording of `seed`."""
    return np.random.default_rng(1_000_000 + 1000 * seed + P.PROTOCOLS.index(proto))


def recording(fam, proto, seed):
    truth_of, _, _ = family(fam)
    truth = truth_of(seed)
    ts = P.grid(T1, DT)
    i = P.current(proto, seed, ts)
    v = P.reference(truth, i, ts)
    noise = noise_rng(proto, seed)
    return truth, hf.Recording(ts, v + SIGMA * noise.standard_normal(v.shape), i)


def random_guesses(preset, free, seeds, k=3):
    """`k` random starting models per seed, as one batched model of `k * len(seeds)`."""
    rng = np.random.default_rng(7)
    cols = {}
    for n in free:
        x = float(getattr(preset, n))
        if n in POTENTIALS:
            cols[n] = x + rng.uniform(-10.0, 10.0, k * len(seeds))
        else:
            cols[n] = x * 2.0 ** rng.uniform(-1.0, 1.0, k * len(seeds))
    return preset.replace(**cols).broadcast()


def judge(res, truth, free):
    err = {}
    for n in free:
        t = float(getattr(truth, n))
        err[n] = res.values[n] - t if n in POTENTIALS else (res.values[n] - t) / t
    ok_p = all(abs(err[n]) <= (1.0 if n in POTENTIALS else 0.05 if n == "g_l" else 0.02)
               for n in free)
    white = abs(res.residual_lag1) < 0.1
    cover = {n: bool(res.ci[n][0] <= float(getattr(truth, n)) <= res.ci[n][1]) for n in free}
    return dict(err=err, params_ok=ok_p, white=white, passed=bool(ok_p and white),
                loss=float(res.noise_floor), lag1=float(res.residual_lag1),
                at_noise_floor=bool(res.at_noise_floor), stages=list(res.stages),
                converged=bool(res.converged), covered=cover, ok=bool(res.ok))


def cold():
    """Forget every compiled program, so the next fit pays its compilation."""
    jax.clear_caches()
    from hhjax.fitting import _fit

    _fit._batch_cache.clear()


def wilson(k, n, z=1.96):
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def run(args):
    global OUT
    OUT = pathlib.Path(args.out) if args.out else OUT
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.exists() and args.resume else {}
    seeds = list(range(args.seeds))
    for fam in args.families:
        truth_of, free, preset = family(fam)
        for proto in args.protocols:
            key = f"{fam}/{proto}"
            if key in results:
                print(f"{key}: done before, kept", flush=True)
                continue
            t0 = time.perf_counter()
            data = [recording(fam, proto, s) for s in seeds]
            truths = [d[0] for d in data]
            recs = [d[1] for d in data]
            t_data = time.perf_counter() - t0
            entry = dict(seeds=seeds, data_s=t_data)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Single fits from cold (compilation included), then batches.
                single = []
                for s in seeds[: args.timed]:
                    cold()
                    t = time.perf_counter()
                    hf.fit(recs[s], free=free, params0=preset)
                    single.append(time.perf_counter() - t)
                entry["single_fit_s"] = single
                t = time.perf_counter()
                res = hf.fit_batch(recs, free=free, params0=preset, throw=False)
                entry["batch_no_guess_s"] = time.perf_counter() - t
                entry["no_guess"] = [judge(r, tr, free) for r, tr in zip(res, truths)]
                guesses = random_guesses(preset, free, seeds)
                t = time.perf_counter()
                res = hf.fit_batch(recs * 3, free=free, params0=guesses, throw=False)
                entry["batch_random_s"] = time.perf_counter() - t
                entry["random"] = [judge(r, tr, free) for r, tr in zip(res, truths * 3)]
            results[key] = entry
            fits = entry["no_guess"] + entry["random"]
            k = sum(f["passed"] for f in fits)
            print(f"{key}: {k}/{len(fits)} pass; single fit {np.median(single):.1f} s "
                  f"(median of {len(single)}), data {t_data:.0f} s", flush=True)
            path.write_text(json.dumps(results, indent=1))
    if args.batch20:
        fam, proto = args.families[0], "random_steps"
        _, free, preset = family(fam)
        recs = [recording(fam, proto, s)[1] for s in range(20)]
        cold()
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf.fit_batch(recs, free=free, params0=preset, throw=False)
        results["batch20"] = dict(family=fam, protocol=proto, wall_s=time.perf_counter() - t)
        print(f"20 fits in one fit_batch ({fam}, {proto}, cold): "
              f"{results['batch20']['wall_s']:.1f} s", flush=True)
        path.write_text(json.dumps(results, indent=1))
    write_summary(results)


def timing(args):
    """Wall times alone: cold single fits (3 seeds of random steps per family; compilation
    included, every compiled program cleared first) and one cold 20-fit `fit_batch` (HH)."""
    OUT.mkdir(parents=True, exist_ok=True)
    out = dict(load_before=os.getloadavg()[0])
    for fam in args.families:
        _, free, preset = family(fam)
        walls = []
        for s in range(3):
            rec = recording(fam, "random_steps", s)[1]
            cold()
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hf.fit(rec, free=free, params0=preset)
            walls.append(time.perf_counter() - t)
            print(f"{fam} single fit (cold) {walls[-1]:.1f} s", flush=True)
        out[f"{fam}_single_s"] = walls
    _, free, preset = family("hh")
    recs = [recording("hh", "random_steps", s)[1] for s in range(20)]
    cold()
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf.fit_batch(recs, free=free, params0=preset)
    out["hh_batch20_s"] = time.perf_counter() - t
    out["load_after"] = os.getloadavg()[0]
    print(f"20 HH fits in one fit_batch (cold): {out['hh_batch20_s']:.1f} s; load "
          f"{out['load_before']:.1f} before, {out['load_after']:.1f} after", flush=True)
    (OUT / "timing.json").write_text(json.dumps(out, indent=1))


def write_summary(results):
    load = os.getloadavg()
    lines = [
        "# Protocol study", "",
        "`python fitting/protocol_study.py` — σ = 1 mV, dt = 0.025 ms, 200 ms per recording, "
        "scipy DOP853 (rtol = atol = 1e-10) data; pass = conductances and C within 2 %, g_L "
        "5 %, potentials 1 mV, |lag-1| < 0.1. Intervals: Wilson 95 % for the pass rate.", "",
        f"Machine: {os.cpu_count()} cores, load average at the end {load[0]:.1f}; "
        f"jax {jax.__version__}.", "",
        "| family/protocol | start | pass | 95 % CI | at noise floor | escalated to multistart "
        "| 95 % CI coverage (all params) | median single fit (s, cold) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, e in results.items():
        if key == "batch20":
            continue
        for start in ("no_guess", "random"):
            fits = e[start]
            k = sum(f["passed"] for f in fits)
            lo, hi = wilson(k, len(fits))
            floor = sum(f["at_noise_floor"] for f in fits)
            esc = sum("multistart" in f["stages"] for f in fits)
            cov = [c for f in fits for c in f["covered"].values()]
            single = (f"{np.median(e['single_fit_s']):.1f}"
                      if start == "no_guess" and e["single_fit_s"] else "")
            lines.append(
                f"| {key} | {start.replace('_', ' ')} | {k}/{len(fits)} | "
                f"{lo:.2f}–{hi:.2f} | {floor}/{len(fits)} | {esc}/{len(fits)} | "
                f"{sum(cov)}/{len(cov)} | {single} |")
    if "batch20" in results:
        b = results["batch20"]
        lines += ["", f"20 fits in one `fit_batch` ({b['family']}, {b['protocol']}, cold): "
                      f"{b['wall_s']:.1f} s."]
    lines += ["", "## Failures", ""]
    for key, e in results.items():
        if key == "batch20":
            continue
        for start in ("no_guess", "random"):
            for j, f in enumerate(e[start]):
                if not f["passed"]:
                    seed = e["seeds"][j % len(e["seeds"])]
                    errs = ", ".join(f"{n} {v:+.3g}" for n, v in f["err"].items())
                    lines.append(f"- {key} {start} seed {seed}: loss {f['loss']:.3f}, lag-1 "
                                 f"{f['lag1']:+.3f}, stages {'>'.join(f['stages'])}; {errs}")
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", default=["hh", "rs"], choices=["hh", "rs"])
    ap.add_argument("--protocols", nargs="+", default=list(P.PROTOCOLS), choices=P.PROTOCOLS)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--timed", type=int, default=3, help="single fits timed from cold")
    ap.add_argument("--no-batch20", dest="batch20", action="store_false")
    ap.add_argument("--resume", action="store_true", help="keep finished family/protocols")
    ap.add_argument("--out", default=None, help=f"results folder (default {OUT})")
    ap.add_argument("--timing", action="store_true",
                    help="only the timing runs (run them on an otherwise idle machine)")
    args = ap.parse_args(argv)
    if args.timing:
        timing(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
