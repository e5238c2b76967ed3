"""Is a failed protocol-study fit an optimiser failure or a trace that cannot tell the truth
from the fit?

For each failed fit in `fitting/results/protocols/results.json` (a family/protocol/seed whose
fit from no guess missed the tolerances), its loss is set beside the truth's own loss (the
mean square of the noise drawn into the recording: the data are the truth's exact trace plus
it). If the failed fit's loss is not above it (within the spread a loss has between noise
draws, ~sqrt(2/n) in σ² units), another model explains the trace as well as the truth: no
least-squares fit of it can be held to the study's tolerances, and the miss belongs to the
protocol, not to the optimiser. A refit started at the truth (`init="guess"`, no escalation)
shows where Levenberg–Marquardt goes from there. The data's spike count is shown
beside it (a slow ramp leaves some perturbed HH truths silent: accommodation).

    python fitting/identifiability.py [--family hh|rs] [--protocols ramp random_steps ou]

Writes `identifiability.md` beside the study's `results.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import protocol_study as S  # noqa: E402

from hhjax import fitting as hf  # noqa: E402
from hhjax.fitting._grid import simulate_grid  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="hh", choices=["hh", "rs"])
    ap.add_argument("--protocols", nargs="+", default=["ramp", "random_steps"])
    ap.add_argument("--out", default=None,
                    help="the study's results folder (default: protocols/ for hh, "
                    "protocols/rs/ for rs, where the study's runs keep them)")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out) if args.out else S.OUT / ("rs" if args.family == "rs" else "")
    results = json.loads((out / "results.json").read_text())
    _, free, _ = S.family(args.family)
    lines = [
        "# Failed protocol-study fits: optimiser or trace?",
        "",
        "`python fitting/identifiability.py` — each fit from no guess that missed the "
        "tolerances, beside the truth's own loss (the mean square of the noise drawn into "
        "its recording), the truth with its initial voltage at the first (noisy) sample "
        "(where fits started it before the initial-voltage search), and a refit started at "
        "the truth (after its initial-voltage search). Loss in σ² per "
        "sample; a loss varies by about sqrt(2/n) = 0.016 between noise draws. A failed "
        "fit at or below the truth's own loss explains the trace as well as the truth "
        "does: no least-squares fit can be held to the tolerances there.",
        "",
        "| fit | data spikes | loss of the failed fit | the truth's own loss (its noise) | "
        "the truth from v0 = first sample | the truth from rest ± 0.1 mV | "
        "LM from the truth: first → last | verdict | failed fit's errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for proto in args.protocols:
        entry = results.get(f"{args.family}/{proto}")
        if entry is None:
            continue
        for seed, fit in zip(entry["seeds"], entry["no_guess"], strict=True):
            if fit["passed"]:
                continue
            truth, rec = S.recording(args.family, proto, seed)
            v = np.asarray(rec.v)
            spikes = int(np.sum((v[:-1] < 0.0) & (v[1:] >= 0.0)))
            # The truth's own loss: the noise drawn into this recording (the data are the
            # truth's exact trace plus it), in σ² per sample.
            exact = float(np.mean(S.noise_rng(proto, seed).standard_normal(v.shape) ** 2))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                refit = hf.fit(rec, free=free, params0=truth, init="guess", nudges=(),
                               escalate=False)
            def loss_from(v_init, truth=truth, rec=rec, v=v):
                """The truth's loss started at `v_init` with its gates at steady state there."""
                sim = simulate_grid(truth, jnp.asarray(rec.i_inj), float(rec.dt),
                                    truth.steady_state(v_init))
                return float(np.mean((np.asarray(sim) - v) ** 2)) / S.SIGMA**2

            # The truth as fits started it before the initial-voltage search: at the first
            # (noisy) sample.
            from_first = loss_from(float(v[0]))
            # How sharply the trace pins the initial voltage: the truth from its exact rest
            # state moved by ±0.1 mV (the worse of the two).
            rest = float(truth.rest_state(0.0).v)
            nudged = max(loss_from(rest + dv) for dv in (-0.1, 0.1))
            spread = math.sqrt(2.0 / v.size)
            if fit["loss"] <= exact + spread:
                verdict = "the trace does not single out the truth"
            else:
                verdict = "optimiser: stopped above the truth's own loss"
            errs = ", ".join(f"{n} {fit['err'][n]:+.3g}" for n in free)
            lines.append(
                f"| {args.family}/{proto} seed {seed} | {spikes} | {fit['loss']:.3f} | "
                f"{exact:.3f} | {from_first:.3f} | {nudged:.3f} | "
                f"{refit.loss_history[0]:.3f} → {refit.noise_floor:.3f} | "
                f"{verdict} | {errs} |")
            print(lines[-1], flush=True)
    (out / "identifiability.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
