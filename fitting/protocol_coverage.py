"""Interval coverage on every protocol of the suite, over many noise seeds.

For one perturbed truth and one stimulus per protocol (seed 0 of `protocols.py`), the scipy
reference is solved once; `--seeds` independent draws of σ = 1 mV white noise are added and
each noisy trace is fitted from no guess with the library's defaults (one `fit_batch`). A
calibrated 95 % interval covers the truth on a fraction of seeds inside the binomial band
around 0.95 (for 200 seeds: 184–195 of 200, i.e. the central 95 % of Binomial(200, 0.95)).

    python fitting/protocol_coverage.py                       # HH, every protocol, 200 seeds
    python fitting/protocol_coverage.py --family rs --protocols random_steps --seeds 200

Writes `fitting/results/protocols/coverage_{family}.json` and `.md` (resumable per protocol).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy.stats import binom  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import protocol_study as S  # noqa: E402
import protocols as P  # noqa: E402

from hhjax import fitting as hf  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent / "results" / "protocols"


def band(n, p=0.95):
    """The central 95 % of Binomial(n, p): counts a calibrated interval lands in."""
    return int(binom.ppf(0.025, n, p)), int(binom.ppf(0.975, n, p))


def run(args):
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"coverage_{args.family}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    truth_of, free, preset = S.family(args.family)
    truth = truth_of(0)
    ts = P.grid(S.T1, S.DT)
    for proto in args.protocols:
        if proto in results and results[proto]["seeds"] >= args.seeds:
            print(f"{proto}: done before, kept", flush=True)
            continue
        i = P.current(proto, 0, ts)
        v = P.reference(truth, i, ts)
        rng = np.random.default_rng(424242 + P.PROTOCOLS.index(proto))
        recs = [hf.Recording(ts, v + S.SIGMA * rng.standard_normal(v.shape), i)
                for _ in range(args.seeds)]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = hf.fit_batch(recs, free=free, params0=preset, throw=False)
        wall = time.perf_counter() - t0
        fits = [S.judge(r, truth, free) for r in res]
        z = {n: [float((r.values[n] - float(getattr(truth, n))) / r.stderr[n]) for r in res]
             for n in free}
        results[proto] = dict(
            seeds=args.seeds, wall_s=wall,
            covered={n: int(sum(f["covered"][n] for f in fits)) for n in free},
            passed=int(sum(f["passed"] for f in fits)),
            at_noise_floor=int(sum(f["at_noise_floor"] for f in fits)),
            z_sd={n: float(np.std(z[n])) for n in free},
            # Per fit, for a reader to split calibration from failures: z-scores, pass flag.
            rows=[dict(z={n: z[n][k] for n in free}, passed=bool(f["passed"]),
                       at_noise_floor=bool(f["at_noise_floor"]), loss=f["loss"])
                  for k, f in enumerate(fits)],
        )
        print(f"{proto}: covered {results[proto]['covered']}, band {band(args.seeds)}, "
              f"pass {results[proto]['passed']}/{args.seeds}, {wall:.0f} s", flush=True)
        path.write_text(json.dumps(results, indent=1))
    lo, hi = band(args.seeds)
    lines = [f"# Interval coverage, {args.family}, σ = 1 mV, from no guess", "",
             f"One truth (`{args.family}_truth(0)`) and one stimulus per protocol; "
             f"{args.seeds} noise seeds each; calibrated 95 % intervals cover {lo}–{hi} of "
             f"{args.seeds} (central 95 % of Binomial({args.seeds}, 0.95)).", "",
             "| protocol | " + " | ".join(free) + " | z SD range | pass | at noise floor | "
             "fit_batch wall (s) |",
             "|---|" + "---|" * (len(free) + 4)]
    for proto, e in results.items():
        cells = []
        for n in free:
            c = e["covered"][n]
            cells.append(f"{c}" + ("" if lo <= c <= hi else " ✗"))
        zs = e["z_sd"].values()
        lines.append(f"| {proto} | " + " | ".join(cells) + f" | {min(zs):.2f}–{max(zs):.2f} | "
                     f"{e['passed']}/{e['seeds']} | {e['at_noise_floor']}/{e['seeds']} | "
                     f"{e['wall_s']:.0f} |")
    (OUT / f"coverage_{args.family}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="hh", choices=["hh", "rs"])
    ap.add_argument("--protocols", nargs="+", default=list(P.PROTOCOLS), choices=P.PROTOCOLS)
    ap.add_argument("--seeds", type=int, default=200)
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
