"""Turn benchmarks/results/*.json into benchmarks/results/results.md (run by run.py)."""

from __future__ import annotations

import json
import pathlib
import sys


def _fmt(x, spec=".3g"):
    return "–" if x is None else format(x, spec)


def _machine(data) -> str:
    m = data.get("machine", {})
    load = m.get("load_average_at_start")
    load = f"{load[0]:.1f}" if load else "?"
    return (
        f"{m.get('processor', '?')}, {m.get('cpu_count', '?')} cores, {m.get('date_utc', '?')} "
        f"UTC, 1-min load average at start {load}"
    )


def batch_table(data) -> list[str]:
    w = data["workload"]
    rows = data["peers"]
    base = {k: v.get("neuron_steps_per_s") for k, v in rows.items()}
    out = [
        f"### Batch: {w['n']:,} neurons, {w['t_ms']} ms, dt {w['dt_ms']} ms, step current "
        f"{w['amp_lo']}–{w['amp_hi']} µA/cm² from {w['t_on']} ms",
        "",
        f"Machine: {_machine(data)}. Accuracy on {len(w['subset'])} neurons against "
        f"{data['reference']}; times are medians of {w['repeats']} runs after a first call.",
        "",
        "| simulator | version | neurons | median s | M neuron-steps/s | M per CPU-s "
        "| first call s | spike counts equal | max spike-time error (ms) "
        "| first-spike error (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        if "skipped" in r:
            out.append(f"| {key} | – | – | – | skipped: {r['skipped'][:80]} | | | | | |")
            continue
        out.append(
            f"| {r['name']} | {r['version']} | {r['n_neurons']:,} | {_fmt(r['median_s'])} "
            f"| **{r['neuron_steps_per_s'] / 1e6:.3g}** "
            f"| {_fmt(r.get('neuron_steps_per_cpu_s', 0) / 1e6)} | {_fmt(r['first_call_s'])} "
            f"| {r.get('count_agreement', '–')} | {_fmt(r.get('max_spike_time_error_ms'))} "
            f"| {_fmt(r.get('max_first_spike_error_ms'))} |"
        )
    ratios = []
    for ours in ("hhjax_f32_2dev", "hhjax_f32_1dev"):
        if base.get(ours):
            for peer in ("jaxley_f32", "neuron", "brian2_cython"):
                if base.get(peer):
                    ratios.append(f"{ours} / {peer} = {base[ours] / base[peer]:.1f}×")
    if base.get("hhjax_cortical_f32_1dev") and base.get("hhjax_f32_1dev"):
        ratios.append(
            "HH / Pospischil RS per neuron-step (both hhjax float32, one device) = "
            f"{base['hhjax_f32_1dev'] / base['hhjax_cortical_f32_1dev']:.2f}"
        )
    if ratios:
        out += ["", "Ratios (same run): " + "; ".join(ratios) + "."]
    return out


def adaptive_table(data) -> list[str]:
    out = [
        "### Adaptive: 1 s of tonic firing, all spikes within 0.01 ms of the reference",
        "",
        f"{data['workload']}. Machine: {_machine(data)}.",
        "",
        "| simulator | rtol = atol | median s | steps | spikes | max spike-time error (ms) |",
        "|---|---|---|---|---|---|",
    ]
    labels = dict(
        simulate="hhjax Tsit5, `simulate` (0.025 ms grid) + `spike_times`",
        spike_times_adaptive="hhjax Tsit5, `spike_times_adaptive` (steps only)",
    )
    for r in data["hhjax"]:
        out.append(
            f"| {labels[r.get('method', 'simulate')]} | {r['tol']:g} | {_fmt(r['median_s'])} "
            f"| {r['steps']} "
            f"| {r['n_spikes']} | {_fmt(r['max_abs_err_ms'])} |"
        )
    for r in data["neuron"].get("rows", []):
        out.append(
            f"| NEURON CVODE | {r['tol']:g} | {_fmt(r['median_s'])} | – | {r['n_spikes']} "
            f"| {_fmt(r['max_abs_err_ms'])} |"
        )
    if data.get("per_method"):
        n = data["neuron_best"]
        out.append("")
        for method, m in data["per_method"].items():
            h = m["best"]
            if h and m["neuron_over_hhjax"]:
                out.append(
                    f"At equal accuracy (loosest tolerance within 0.01 ms, same grid for both): "
                    f"{labels[method]} {h['median_s']:.4f} s (tol {h['tol']:g}) vs NEURON CVODE "
                    f"{n['median_s']:.4f} s (tol {n['tol']:g}): NEURON / hhjax = "
                    f"**{m['neuron_over_hhjax']:.2f}×**."
                )
    elif data.get("neuron_over_hhjax"):
        h, n = data["hhjax_best"], data["neuron_best"]
        out += [
            "",
            f"At equal accuracy (loosest tolerance within 0.01 ms): hhjax {h['median_s']:.4f} s "
            f"(tol {h['tol']:g}) vs NEURON CVODE {n['median_s']:.4f} s (tol {n['tol']:g}): "
            f"NEURON / hhjax = **{data['neuron_over_hhjax']:.2f}×**.",
        ]
    return out


def gradient_table(data) -> list[str]:
    out = [
        "### Gradient cost",
        "",
        f"{data['workload']}. Machine: {_machine(data)}.",
        "",
        "| path | forward s | value_and_grad s | ratio | forward temp MB | backward temp MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in data["rows"].items():
        f, g = r["forward"], r["value_and_grad"]
        mb = lambda b: "–" if b is None else f"{b / 2**20:.1f}"
        out.append(
            f"| {name} | {_fmt(f['median_s'])} | {_fmt(g['median_s'])} | **{r['ratio']:.2f}** "
            f"| {mb(f['temp_bytes'])} | {mb(g['temp_bytes'])} |"
        )
    return out


def compile_table(data) -> list[str]:
    out = [
        "### Compile time and recompilation",
        "",
        f"Machine: {_machine(data)}.",
        "",
        "| entry point | first call s | XLA compiles | second call, new values s | compiles |",
        "|---|---|---|---|---|",
    ]
    for name, r in data["rows"].items():
        out.append(
            f"| {name} | {_fmt(r['first_call_s'])} | {r['backend_compiles_first']} "
            f"| {_fmt(r['second_call_new_values_s'])} | {r['backend_compiles_second']} |"
        )
    return out


def million_table(data) -> list[str]:
    return [
        "### 10⁶ neurons × 1 s, features only (benchmarks/million.py)",
        "",
        f"{data['neurons']:,} neurons, {data['t_ms']} ms, dt {data['dt_ms']} ms, "
        f"{data['dtype']}, {data['devices']} CPU device(s): "
        f"**{data['wall_s_including_compile']:.0f} s** wall including compilation "
        f"({data['neuron_steps_per_s'] / 1e6:.0f} M neuron-steps/s), peak RSS "
        f"{data['peak_rss_gb']:.2f} GB, spike counts min/mean/max "
        f"{data['spike_count_min_mean_max']}, dropped spikes {data['dropped_spikes']}; "
        f"load average at end {data['load_average_at_end'][0]:.1f}.",
    ]


def accuracy_table(data) -> list[str]:
    out = [
        "### ExponentialEuler accuracy over 1 s (benchmarks/accuracy.py)",
        "",
        f"{data['workload']}. Error = simulated minus reference spike time.",
        "",
        "| dtype | dt (ms) | spikes | first spike error (ms) | spike 60 error (ms) "
        "| max abs error, all spikes (ms) | NEURON fixed step: spikes, spike 60 error (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        out.append(
            f"| {r['dtype']} | {r['dt_ms']} | {r['n_spikes']} | {r['first_spike_error_ms']:.2g} "
            f"| {r['spike60_error_ms']:.3g} | {r['max_abs_error_all_ms']:.3g} "
            f"| {r['neuron_fixed_step_n_spikes']}, "
            f"{_fmt(r['neuron_fixed_step_spike60_error_ms'])} |"
        )
    return out


TABLES = dict(
    accuracy=accuracy_table,
    batch=batch_table,
    adaptive=adaptive_table,
    gradient=gradient_table,
    compile=compile_table,
    million=million_table,
)


def write_report(results: pathlib.Path) -> None:
    lines = ["# Benchmark results", "", "Generated by `benchmarks/run.py` from the JSON here.", ""]
    for name, table in TABLES.items():
        path = results / f"{name}.json"
        if path.exists():
            lines += table(json.loads(path.read_text())) + [""]
    (results / "results.md").write_text("\n".join(lines))
    print(f"wrote {results / 'results.md'}")


if __name__ == "__main__":
    default = pathlib.Path(__file__).parent / "results"
    write_report(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else default)
