"""Fit the Pospischil cortical model to the shared real recordings and predict held-out sweeps.

Protocol (the same for every file): each sweep is reduced to its first current step (window
100 ms before to 50 ms after); three training sweeps are chosen automatically
(`hhjax.models.choose_training`: one hyperpolarising subthreshold sweep and two spiking ones);
`hhjax.models.fit_steps` fits area, g_L, E_L, g_Na, g_Kd, V_T, g_M, tau_max on them; every
other sweep is predicted. Acceptance on a file: held-out spiking sweeps' spike counts within
±1 on >= 80 % of them, held-out subthreshold sweeps' steady-state voltage within 2 mV.

Run: `python fitting/real/run_real.py [--files ...] [--generations 25] [--population 256]`.
Writes `fitting/results/real/`: `summary.md`, `summary.json`, `<file>.png`, `<file>.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402

import hhjax.io as hio  # noqa: E402
from hhjax import models  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "abf"
OUT = ROOT / "fitting" / "results" / "real"
FILES = [
    "171116sh_0018.abf",
    "171116sh_0019.abf",
    "2019_07_24_0055_fsi.abf",
    "190619B_0003.abf",
    "File_axon_5.abf",
    "17o05028_ic_steps.abf",
]


def evaluate(rows, train):
    # sweeps stronger than the one that fires most are in depolarisation block (0019)
    spiking = [r for r in rows if r["spiking"]]
    peak = max(spiking, key=lambda r: r["count_data"])["amplitude_pA"] if spiking else None
    below = [
        abs(r["count_model"] - r["count_data"]) <= 1
        for r in spiking
        if r["sweep"] not in train and r["amplitude_pA"] <= peak
    ]
    test = [r for r in rows if r["sweep"] not in train]
    supra = [r for r in test if r["spiking"]]
    sub = [r for r in test if not r["spiking"]]
    ok_supra = [abs(r["count_model"] - r["count_data"]) <= 1 for r in supra]
    ok_sub = [abs(r["steady_model"] - r["steady_data"]) <= 2.0 for r in sub]
    # deflection from each sweep's own baseline: insensitive to baseline drift between sweeps
    dev_rel = [
        abs((r["steady_model"] - r["rest_model"]) - (r["steady_data"] - r["rest_data"]))
        for r in sub
    ]
    frac_supra = float(np.mean(ok_supra)) if supra else math.nan
    # Spike timing on held-out spiking sweeps: the coincidence factor (±4 ms), where defined.
    gammas = [r["gamma"] for r in supra if not math.isnan(r.get("gamma", math.nan))]
    frac_sub = float(np.mean(ok_sub)) if sub else math.nan
    return dict(
        n_test_supra=len(supra),
        n_test_sub=len(sub),
        supra_within_1=frac_supra,
        sub_within_2mV=frac_sub,
        count_mae=float(np.mean([abs(r["count_model"] - r["count_data"]) for r in supra]))
        if supra
        else math.nan,
        steady_mae_mV=float(np.mean([abs(r["steady_model"] - r["steady_data"]) for r in sub]))
        if sub
        else math.nan,
        sub_deflection_within_2mV=float(np.mean(np.array(dev_rel) <= 2.0)) if sub else math.nan,
        supra_within_1_up_to_peak=float(np.mean(below)) if below else math.nan,
        n_test_supra_up_to_peak=len(below),
        gamma_median=float(np.median(gammas)) if gammas else math.nan,
        n_gamma=len(gammas),
        accepted=bool((not supra or frac_supra >= 0.8) and (not sub or all(ok_sub))),
    )


def run_file(name, args, out):
    recs = hio.read_abf(DATA / name)
    sweeps = [s for s in (models.step_sweep(r) for r in recs) if s is not None]
    chosen = models.choose_training(sweeps)
    train_sweeps = [sweeps[k] for k in chosen]
    train = [s.sweep for s in train_sweeps]
    t0 = time.perf_counter()
    base = getattr(models.Pospischil, args.model)()
    result = models.fit_steps(
        train_sweeps,
        base=base,
        population=args.population,
        generations=args.generations,
        restarts=args.restarts,
        seed=args.seed,
        progress=lambda g, n, loss: print(f"  {name} gen {g}/{n} loss {loss:.2f}", flush=True),
    )
    fit_s = time.perf_counter() - t0
    rows = models.predict_steps(result.model, sweeps, dt=0.05)
    summary = evaluate(rows, train)
    fig = models.plot_steps(result.model, sweeps, train, title=name)
    fig.savefig(out / (pathlib.Path(name).stem + ".png"), dpi=70)
    import matplotlib.pyplot as plt

    plt.close(fig)
    params = {k: float(np.asarray(v)) for k, v in result.model.to_dict().items()}
    record = dict(
        file=name,
        train_sweeps=train,
        train_amplitudes_pA=[s.amplitude for s in train_sweeps],
        loss=result.loss,
        fit_seconds=fit_s,
        passive_start=result.passive,
        params=params,
        capacitance_pF=params["area"] * params["c_m"] * 1e6,
        summary=summary,
        sweeps=rows,
    )
    (out / (pathlib.Path(name).stem + ".json")).write_text(json.dumps(record, indent=1))
    return record


def fmt(x, spec=".2f"):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="*", default=FILES)
    parser.add_argument("--generations", type=int, default=25)
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument(
        "--model", default="regular_spiking", help="Pospischil preset, e.g. regular_spiking_h"
    )
    parser.add_argument("--out", default=str(OUT), help="results folder")
    parser.add_argument(
        "--from-json", action="store_true", help="re-tabulate the per-file JSONs in --out"
    )
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for name in args.files:
        stem = pathlib.Path(name).stem
        if args.from_json:  # re-tabulate earlier fits without fitting again
            record = json.loads((out / f"{stem}.json").read_text())
            record["summary"] = evaluate(record["sweeps"], record["train_sweeps"])
            (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
            records.append(record)
            continue
        print(name, flush=True)
        records.append(run_file(name, args, out))
    lines = [
        "# Real recordings: Pospischil model fitted on 3 sweeps, held-out sweeps predicted",
        "",
        f"Cross-entropy search: population {args.population}, {args.generations} generations, "
        f"{args.restarts} restart(s) from seed {args.seed}; model {args.model}; "
        "exponential Euler dt 0.1 ms for the search, 0.05 ms for predictions.",
        "",
        "| file | train sweeps (pA) | C (pF) | g_L (mS/cm²) | E_L | g_Na | g_Kd | V_T | g_M | "
        "tau_max | held-out spiking within ±1 | … up to peak rate | count MAE | "
        "median Γ held-out spiking | "
        "held-out subthr. within 2 mV | steady MAE (mV) | … deflection within 2 mV | "
        "accepted | fit (s) |",
        "|" + "---|" * 19,
    ]
    for r in records:
        p, s = r["params"], r["summary"]
        lines.append(
            f"| {r['file']} | {', '.join(fmt(a, '+.0f') for a in r['train_amplitudes_pA'])} | "
            f"{r['capacitance_pF']:.0f} | {p['g_l']:.4f} | {p['e_l']:.1f} | {p['g_na']:.1f} | "
            f"{p['g_kd']:.2f} | {p['v_t']:.1f} | {p['g_m']:.3f} | {p['tau_max']:.0f} | "
            f"{fmt(s['supra_within_1'])} ({s['n_test_supra']}) | "
            f"{fmt(s['supra_within_1_up_to_peak'])} ({s['n_test_supra_up_to_peak']}) | "
            f"{fmt(s['count_mae'])} | "
            f"{fmt(s.get('gamma_median', math.nan))} ({s.get('n_gamma', 0)}) | "
            f"{fmt(s['sub_within_2mV'])} ({s['n_test_sub']}) | {fmt(s['steady_mae_mV'])} | "
            f"{fmt(s['sub_deflection_within_2mV'])} | "
            f"{'yes' if s['accepted'] else 'no'} | {r['fit_seconds']:.0f} |"
        )
    lines += [
        "",
        "Columns: 'held-out spiking within ±1' is the fraction of held-out sweeps with spikes "
        "whose model spike count is within ±1 of the data (number of such sweeps in brackets); "
        "'… up to peak rate' the same without sweeps stronger than the one that fires most "
        "(depolarisation block); 'median Γ' the median coincidence factor of the model's "
        "spikes with the data's during the step (±4 ms; Kistler 1997, Jolivet 2008; 1 = every "
        "spike matched, ~0 = chance; sweeps where it is defined in brackets); "
        "'held-out subthr. within 2 mV' the fraction of held-out "
        "non-spiking sweeps whose steady-state voltage (mean of the last 100 ms of the step) is "
        "within 2 mV of the data; '… deflection' the same for the change from each sweep's own "
        "pre-step baseline (the recorded baselines drift between sweeps, by up to ±9 mV in "
        "2019_07_24_0055_fsi and 17o05028, the model has one resting potential). 'accepted': "
        "spiking >= 0.8 and every subthreshold sweep within 2 mV (the issue's criterion).",
        "",
        "Per sweep (data / model spike counts; steady-state voltage data / model, mV):",
        "",
    ]
    for r in records:
        lines.append(f"## {r['file']}")
        lines.append("")
        lines.append(
            "| sweep | pA | role | count data | count model | Γ | V_ss data | V_ss model | "
            "V_rest data | V_rest model |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for w in r["sweeps"]:
            role = "train" if w["sweep"] in r["train_sweeps"] else "test"
            lines.append(
                f"| {w['sweep']} | {w['amplitude_pA']:+.0f} | {role} | {w['count_data']} | "
                f"{w['count_model']} | {fmt(w.get('gamma', math.nan))} | "
                f"{w['steady_data']:.1f} | {w['steady_model']:.1f} | "
                f"{w['rest_data']:.1f} | {w['rest_model']:.1f} |"
            )
        lines.append("")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(
        json.dumps([{k: r[k] for k in r if k != "sweeps"} for r in records], indent=1)
    )
    print("\n".join(lines[: 6 + len(records)]))


if __name__ == "__main__":
    main()
