"""`hhjax fit RECORDING`: fit a cortical model to a current-clamp step recording.

Reads the recording ([`hhjax.io.read`][]: ABF, NWB, CSV, NPZ), reduces every sweep to its first
current step, fits a [`hhjax.models.Pospischil`][] model on at most three training sweeps and
predicts all sweeps, all through [`hhjax.fitting.fit`][]. `--objective features` (default):
spike features and the subthreshold trace, cross-entropy population search
([`hhjax.fitting.fit_steps`][]); `--objective spike-timing`: the spike times (and the
subthreshold trace), the same search then a gradient polish; `--objective trace`: the whole
voltage trace of the training sweeps by Levenberg–Marquardt (initial voltage fitted, nudging
and multi-start escalation).
Writes to `--out`:
`params.json` (fitted parameters with units), `fit.png` (data vs model per sweep),
`predictions.json` and `report.md`. Exit codes: 0 done, 1 the fit failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

from ._cli_args import int_at_least, output_folder_problem

__all__ = ["add_parser", "run", "OBJECTIVES", "TRACE_FREE"]

OBJECTIVES = ("features", "trace", "spike-timing")
"""The objectives `hhjax fit --objective` reaches."""

TRACE_FREE = ("g_na", "g_kd", "g_m", "g_l", "e_l", "v_t", "c_m")
"""Fields the trace objective fits (the current is scaled by the model's `area`, so C and the
conductances absorb an error in it)."""

_MODELS = {
    "rs": "regular_spiking",
    "rs-h": "regular_spiking_h",
    "fs": "fast_spiking",
    "ib": "intrinsically_bursting",
    "lts": "low_threshold",
}
_UNITS = {
    "g_na": "mS/cm²",
    "g_kd": "mS/cm²",
    "g_m": "mS/cm²",
    "g_l": "mS/cm²",
    "g_cal": "mS/cm²",
    "g_cat": "mS/cm²",
    "g_h": "mS/cm²",
    "e_h": "mV",
    "e_na": "mV",
    "e_k": "mV",
    "e_l": "mV",
    "e_ca": "mV",
    "v_t": "mV",
    "v_x": "mV",
    "tau_max": "ms",
    "c_m": "µF/cm²",
    "area": "cm²",
}


def _int_list(text: str) -> list[int]:
    out = []
    for part in text.replace(",", " ").split():
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `fit` subcommand to an `argparse` subparsers object."""
    p = subparsers.add_parser(
        "fit",
        help="fit a cortical HH-type model to a current-clamp recording (ABF/NWB/CSV/NPZ)",
        description=__doc__.splitlines()[0]
        + " Spike-feature + subthreshold-trace loss, derivative-free population search; "
        "see hhjax.models.fit_steps.",
    )
    p.add_argument("recording", metavar="RECORDING", help="an .abf, .nwb, .csv or .npz file")
    p.add_argument(
        "--sweeps",
        default=None,
        help="sweeps to use, e.g. '0-16' or '0,3,5' (default: all with a current step)",
    )
    p.add_argument(
        "--train",
        default=None,
        help="sweeps to fit on (at most 3 recommended; default: one hyperpolarising "
        "subthreshold and two spiking sweeps, chosen automatically)",
    )
    p.add_argument(
        "--model",
        choices=sorted(_MODELS),
        default="rs",
        help="starting model: rs regular spiking (default), rs-h regular spiking + h current "
        "(sag), fs fast spiking, ib bursting (+Ca-L), lts low-threshold (+Ca-T)",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="features",
        help="features: spike features + subthreshold trace, population search (default); "
        "spike-timing: spike times + subthreshold trace, population search and gradient "
        "polish; trace: the whole voltage trace by Levenberg-Marquardt (hhjax.fitting.fit)",
    )
    p.add_argument(
        "--channel", type=int_at_least(0), default=0, help="ABF voltage channel (default 0)"
    )
    p.add_argument(
        "--generations", type=int_at_least(1), default=20, help="search generations (default 20)"
    )
    p.add_argument(
        "--population",
        type=int_at_least(2),
        default=256,
        help="search population, at least 2 (default 256)",
    )
    p.add_argument(
        "--restarts",
        type=int_at_least(1),
        default=1,
        help="independent searches, best training loss kept (default 1)",
    )
    p.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default 0)")
    p.add_argument("--quick", action="store_true", help="small search (6 x 64), for a first look")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--dpi", type=int_at_least(1), default=80, help="figure resolution (default 80)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
    return p


class _Bar:
    """A tqdm bar on stderr, or nothing with `--quiet`."""

    def __init__(self, quiet: bool, total: int, desc: str, unit: str):
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)

    def update(self, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(**postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Stage:
    """A phase without steps to count: `hhjax fit: TEXT ... 3.1 s` on stderr."""

    def __init__(self, quiet: bool, text: str):
        self.quiet, self.t0 = quiet, time.perf_counter()
        if not quiet:
            print(f"hhjax fit: {text} ...", end="", file=sys.stderr, flush=True)

    def done(self, note: str = "") -> None:
        if not self.quiet:
            extra = f" ({note})" if note else ""
            print(f" {time.perf_counter() - self.t0:.1f} s{extra}", file=sys.stderr, flush=True)


def _error(message: str) -> int:
    print(f"hhjax fit: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run `hhjax fit`; returns the exit code."""
    # Argument checks first: a bad argument costs neither the JAX import nor a read.
    problem = output_folder_problem(args.out)
    if problem:
        return _error(problem)
    try:
        wanted = _int_list(args.sweeps) if args.sweeps else None
        train_ids = _int_list(args.train) if args.train else None
    except ValueError:
        return _error("--sweeps/--train must be sweep numbers like '0-16' or '0,3,5'.")

    from . import io as hio

    path = pathlib.Path(args.recording)
    kwargs = {"channel": args.channel} if path.suffix.lower() == ".abf" else {}
    try:
        recordings = hio.read(path, **kwargs)
    except hio.RecordingError as err:
        return _error(str(err))

    import jax

    jax.config.update("jax_enable_x64", True)

    from . import models

    sweeps = []
    for rec in recordings:
        if wanted is not None and rec.sweep not in wanted:
            continue
        sw = models.step_sweep(rec)
        if sw is not None:
            sweeps.append(sw)
    if not sweeps:
        return _error(f"{path}: no sweep with a current step among the selected sweeps.")
    by_id = {s.sweep: s for s in sweeps}
    if train_ids is None:
        train = [sweeps[k] for k in models.choose_training(sweeps)]
    else:
        missing = [k for k in train_ids if k not in by_id]
        if missing:
            return _error(
                f"--train sweeps {missing} are not among the usable sweeps {list(by_id)}."
            )
        train = [by_id[k] for k in train_ids]
    if not train:
        return _error(f"{path}: found no subthreshold or spiking sweep to fit on.")
    generations, population = (6, 64) if args.quick else (args.generations, args.population)
    out = pathlib.Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return _error(f"--out: cannot create {out}: {err}")
    base = getattr(models.Pospischil, _MODELS[args.model])()

    # Every phase shows itself: the search (a bar), the passive refinement that follows its
    # last generation inside `fit_steps` (a line), the predictions (a bar), the figure (a line).
    # Without this the search bar sat at 100 % for 11-35 s.
    bar = _Bar(args.quiet, generations * args.restarts, "search", "gen")
    stage = {}

    def progress(gen, total, loss):
        bar.update(loss=f"{loss:.2f}")
        if gen == total:
            bar.close()
            stage["refine"] = _Stage(args.quiet, "refining the passive parameters (area, g_l, e_l)")

    t0 = time.perf_counter()
    if args.objective == "trace":
        return _trace_fit(args, path, out, base, sweeps, train, t0)
    try:
        from .fitting import SpikeTiming

        result = models.fit_steps(
            train,
            base=base,
            generations=generations,
            population=population,
            restarts=args.restarts,
            seed=args.seed,
            progress=progress,
            objective=SpikeTiming(dt=0.1) if args.objective == "spike-timing" else None,
        )
    except Exception as err:  # report any numerical failure as a failed fit
        bar.close()
        if "refine" in stage:
            stage["refine"].done("failed")
        print(f"hhjax fit: the fit failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    bar.close()
    if "refine" in stage:
        stage["refine"].done()
    elapsed = time.perf_counter() - t0
    if not math.isfinite(result.loss):
        print("hhjax fit: the fit failed: non-finite loss.", file=sys.stderr)
        return 1
    return _report(args, path, out, sweeps, train, result, elapsed, population, generations)


def _report(args, path, out, sweeps, train, result, elapsed, population, generations):
    """Predict every sweep with `result.model`; write params.json, predictions.json, fit.png
    and report.md. Returns the exit code."""
    import numpy as np

    from . import models

    bar = _Bar(args.quiet, len(sweeps), "predict", "sweep")
    rows = []
    try:
        for sw in sweeps:
            rows += models.predict_steps(result.model, [sw])
            bar.update()
    except Exception as err:
        bar.close()
        print(
            f"hhjax fit: predicting the sweeps failed: {type(err).__name__}: {err}", file=sys.stderr
        )
        return 1
    bar.close()

    train_ids = [s.sweep for s in train]
    params = {k: float(np.asarray(v)) for k, v in result.model.to_dict().items()}
    doc = dict(
        recording=str(path),
        model=args.model,
        objective=args.objective,
        channels=[type(c).__name__ for c in result.model.channels],
        train_sweeps=train_ids,
        loss=result.loss,
        params={k: dict(value=v, unit=_UNITS.get(k, "")) for k, v in params.items()},
        capacitance_pF=params["area"] * params["c_m"] * 1e6,
    )
    (out / "params.json").write_text(json.dumps(doc, indent=1))
    (out / "predictions.json").write_text(json.dumps(rows, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawing = _Stage(args.quiet, f"drawing fit.png ({len(sweeps)} sweeps)")
    fig = models.plot_steps(result.model, sweeps, train_ids, title=path.name)
    fig.savefig(out / "fit.png", dpi=args.dpi)
    plt.close(fig)
    drawing.done()

    test = [r for r in rows if r["sweep"] not in train_ids]
    supra = [r for r in test if r["spiking"]]
    sub = [r for r in test if not r["spiking"]]
    within1 = sum(abs(r["count_model"] - r["count_data"]) <= 1 for r in supra)
    within2 = sum(abs(r["steady_model"] - r["steady_data"]) <= 2.0 for r in sub)
    lines = [
        f"# hhjax fit: {path.name}",
        "",
        f"Model {_MODELS[args.model]} ({', '.join(doc['channels'])}), trained on sweeps "
        f"{train_ids}; {_how(args, population, generations)}; loss {result.loss:.3g}; "
        f"{elapsed:.0f} s.",
        "",
        f"- held-out spiking sweeps with spike count within ±1: {within1}/{len(supra)}",
        f"- held-out subthreshold sweeps with steady state within 2 mV: {within2}/{len(sub)}",
        f"- capacitance {doc['capacitance_pF']:.0f} pF (area {params['area']:.3g} cm² at "
        f"{params['c_m']:g} µF/cm²)",
        "",
        "| parameter | value | unit |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {v:.4g} | {_UNITS.get(k, '')} |" for k, v in params.items()]
    lines += [
        "",
        "| sweep | pA | role | spikes data | spikes model | Γ (±4 ms) | V_ss data (mV) | "
        "V_ss model (mV) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        role = "train" if r["sweep"] in train_ids else "test"
        gamma = "–" if np.isnan(r["gamma"]) else f"{r['gamma']:.2f}"
        lines.append(
            f"| {r['sweep']} | {r['amplitude_pA']:+.0f} | {role} | {r['count_data']} | "
            f"{r['count_model']} | {gamma} | {r['steady_data']:.1f} | {r['steady_model']:.1f} |"
        )
    lines += ["", "![fit](fit.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    print(
        f"hhjax fit: {path.name}: spiking {within1}/{len(supra)} within ±1 spike, subthreshold "
        f"{within2}/{len(sub)} within 2 mV; wrote params.json, fit.png, predictions.json, "
        f"report.md to {out}/"
    )
    return 0


def _how(args, population, generations):
    if args.objective == "trace":
        return "trace objective, Levenberg-Marquardt (hhjax.fitting.fit)"
    return f"{args.objective} objective, search {population} x {generations}"


def _trace_fit(args, path, out, base, sweeps, train, t0):
    """`--objective trace`: fit `TRACE_FREE` to the training sweeps' whole traces."""
    from . import fitting as hf

    recs = [hf.step_recording(sw, float(base.area)) for sw in train]
    stage = _Stage(args.quiet, f"trace fit of {', '.join(TRACE_FREE)} on {len(recs)} sweeps "
                               "(Levenberg-Marquardt; one compiled loop, no progress inside)")
    try:
        res = hf.fit(recs, free=TRACE_FREE, params0=base, seed=args.seed)
    except Exception as err:  # report any numerical failure as a failed fit
        stage.done("failed")
        print(f"hhjax fit: the fit failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    stage.done(f"loss {res.noise_floor:.3g} sigma^2, "
               f"{'at' if res.at_noise_floor else 'NOT at'} the noise floor, "
               f"stages {' > '.join(res.stages)}")
    elapsed = time.perf_counter() - t0
    return _report(args, path, out, sweeps, train, res, elapsed, 0, 0)
