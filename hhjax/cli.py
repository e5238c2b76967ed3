"""The `hhjax` command line: `hhjax demo`, `hhjax simulate`, `hhjax fit`, `hhjax sweep`.

Units on the command line are the library's: ms, mV, µA/cm², mS/cm², µF/cm², °C.
Exit codes: 0 success, 1 the computation failed, 2 bad arguments (usage error).

The command line runs JAX in float64 (it is an application; the library itself never flips
`jax_enable_x64`), so that the default tolerances of [`hhjax.simulate`][] are meaningful.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence

# Only argparse helpers at import: `hhjax --help` must not pay for importing JAX (3–8 s).
from ._cli_args import (
    Parser,
    finite_float,
    int_at_least,
    nonnegative_float,
    output_folder_problem,
    positive_float,
)

__all__ = ["main", "build_parser", "UsageError"]

PRESETS = ("classic", "neuron", "squid_1952")
SOLVERS = {
    "tsit5": "Tsit5",
    "dopri5": "Dopri5",
    "dopri8": "Dopri8",
    "kvaerno5": "Kvaerno5",
    "euler": "Euler",
    "heun": "Heun",
    "midpoint": "Midpoint",
    "ralston": "Ralston",
}
FIXED_STEP = ("euler",)


class UsageError(ValueError):
    """A bad command-line argument: reported with exit code 2."""


# ---------------------------------------------------------------------------- progress
class _Progress:
    """Numbered progress lines with elapsed times, e.g. `[2/5] seed 001 ... 3.1 s`."""

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.k, self.quiet = total, 0, quiet
        self.t_start = time.perf_counter()
        self._t = self.t_start

    def start(self, text: str) -> None:
        self.k += 1
        self._t = time.perf_counter()
        if not self.quiet:
            print(f"[{self.k}/{self.total}] {text} ...", end="", flush=True)

    def done(self, note: str = "") -> None:
        if not self.quiet:
            extra = f" {note}" if note else ""
            print(f" {time.perf_counter() - self._t:.1f} s{extra}", flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"      {text}", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start


def _setup_jax() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _save(fig, path: pathlib.Path, dpi: int) -> pathlib.Path:
    fig.savefig(path, dpi=dpi)
    return path


def _fmt_times(times) -> str:
    import numpy as np

    times = np.asarray(times).reshape(-1)
    times = times[np.isfinite(times)]
    return ", ".join(f"{t:.2f}" for t in times) if times.size else "none"


# ---------------------------------------------------------------------------- demo
# The demo's f–I sweep: amplitudes 0–40 µA/cm², step length and onset transient left out (ms).
FI_N, FI_DURATION, FI_DISCARD = 161, 500.0, 100.0
FIT_FREE = ("g_na", "g_k", "g_l", "e_l", "c_m")


def _demo_fit(fitting, out: pathlib.Path, dpi: int, quick: bool):
    """Fit g_Na, g_K, g_L, E_L and C_m to a noisy synthetic recording of the classic model.

    Returns the report rows `(name, true, fitted, (low, high))`, the figure path and the result.
    """
    import numpy as np

    import hhjax

    true = hhjax.HHParams()
    stim = hhjax.Step(10.0, 5.0, 35.0 if quick else 45.0)
    t1 = 40.0 if quick else 50.0
    traj = hhjax.simulate(true, stim, t1, dt_save=0.05)
    noise = 0.5 * np.random.default_rng(0).standard_normal(traj.v.shape)  # 0.5 mV rms
    v_noisy = np.asarray(traj.v) + noise
    recording = fitting.Recording(np.asarray(traj.ts), v_noisy, np.asarray(traj.i_stim))
    result = fitting.fit(recording, free=FIT_FREE)
    truth = {name: float(getattr(true, name)) for name in FIT_FREE}
    rows = [
        (name, truth[name], float(result.values[name]), tuple(map(float, result.ci[name])))
        for name in FIT_FREE
    ]
    fig = fitting.plot_fit(result, truth=truth, title="Synthetic fit (0.5 mV noise)")
    path = _save(fig, out / "fit_synthetic.png", dpi)
    try:  # plot_fit may build its figure with pyplot: release it
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # pragma: no cover - headless without pyplot
        pass
    return rows, path, result


def _demo_fi(params, amplitudes, *, duration: float, discard: float, dt: float = 0.025):
    """Steady-state f–I curve: the rate is the inverse of the mean interspike interval.

    Each step starts from rest at 0 ms and lasts `duration` ms ([`hhjax.simulate_batch`][],
    exponential Euler at `dt` ms). Spikes in the first `discard` ms (the onset transient) are
    left out; the rate is $(n - 1) / (t_n - t_1)$ over the `n` spikes after it, so it is not
    quantised by the window as a spike count is. Firing that is not sustained (fewer than two
    spikes after `discard`, or silent for more than two mean intervals before the end) is 0 Hz.

    **Returns:**

    An [`hhjax.FICurve`][]: `rates` (Hz) and `counts` (spikes after `discard`).
    """
    import numpy as np

    import hhjax

    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    max_spikes = int(duration * 0.5) + 1  # room for 500 Hz, far above HH's maximal rate
    batch = hhjax.simulate_batch(
        params, hhjax.Step(amplitudes, 0.0), duration, dt=dt, max_spikes=max_spikes
    )
    total, dropped = np.asarray(batch.spike_count), np.asarray(batch.dropped)
    if not np.all(np.asarray(batch.ok)):
        raise RuntimeError("f–I sweep: the simulation diverged (non-finite state).")
    if np.any(total > max_spikes) or np.any(dropped):
        raise RuntimeError(f"f–I sweep: more spikes than the {max_spikes} stored per step.")
    times = np.asarray(batch.spike_times)
    late = np.where(times >= discard, times, np.nan)  # NaN padding stays NaN
    counts = np.sum(np.isfinite(late), axis=-1)
    first, last = np.fmin.reduce(late, axis=-1), np.fmax.reduce(late, axis=-1)
    several = counts >= 2
    interval = np.where(several, last - first, 1.0) / np.maximum(counts - 1, 1)
    sustained = several & (duration - last <= 2.0 * interval)
    rates = np.where(sustained, 1000.0 / interval, 0.0)
    return hhjax.FICurve(amplitudes, rates, counts, np.asarray(batch.ok))


def run_demo(args: argparse.Namespace) -> int:
    """`hhjax demo`: the seed protocols in both conventions, a synthetic fit, figures, report."""
    out = pathlib.Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out: cannot create {out}: {err}") from None
    dpi = args.dpi
    fitting, why_not = None, "--no-fit was given"
    if not args.no_fit:
        from . import fitting
    steps = 5 + (fitting is not None) + (not args.quick)
    progress = _Progress(steps, quiet=args.quiet)
    if not args.quiet:
        print(f"hhjax demo: writing figures and report.md to {out.resolve()}/")

    progress.start("importing JAX and hhjax")
    _setup_jax()
    import diffrax
    import numpy as np

    import hhjax

    from . import plot

    progress.done()
    report: list[str] = ["# hhjax demo", ""]
    figures: list[pathlib.Path] = []

    # ---- seed 000: the 10 µA/cm² step, forward Euler at 0.05 ms and the adaptive solution.
    progress.start("seed 000: 10 µA/cm² step, forward Euler (dt 0.05 ms) and adaptive Tsit5")
    p52 = hhjax.HHParams.squid_1952(e_l=10.6)
    step = hhjax.Step(10.0, 100.0, 150.0)
    t1 = 250.0
    euler = hhjax.simulate(p52, step, t1, solver=diffrax.Euler(), dt0=0.05)
    adaptive = hhjax.simulate(p52, step, t1)
    thr52 = 65.0  # 0 mV in the modern convention
    sp_euler = np.asarray(hhjax.spike_times(euler.ts, euler.v, thr52))
    sp_adapt = np.asarray(hhjax.spike_times(adaptive.ts, adaptive.v, thr52))
    n_in = int(np.sum((sp_adapt > 100.0) & (sp_adapt < 150.0)))
    progress.done(f"({n_in} spikes in 100–150 ms)")

    progress.start("seed 000 in the modern convention (rest -65 mV), figures")
    p_mod = hhjax.HHParams(e_l=10.6 - 65.0)
    modern = hhjax.simulate(p_mod, step, t1)
    sp_mod = np.asarray(hhjax.spike_times(modern.ts, modern.v, thr52 - 65.0))
    window = (90.0, 160.0)
    figures.append(
        _save(
            plot.voltage(
                [euler, adaptive],
                labels=["forward Euler, dt 0.05 ms", "Tsit5, rtol 1e-8"],
                xlim=window,
                title="Seed 000: 10 µA/cm² step, 1952 convention (rest 0 mV)",
            ),
            out / "seed000_voltage.png",
            dpi,
        )
    )
    figures.append(
        _save(
            plot.gates(
                [euler, adaptive], labels=["Euler", "Tsit5"], xlim=window, title="Seed 000: gates"
            ),
            out / "seed000_gates.png",
            dpi,
        )
    )
    figures.append(
        _save(
            plot.currents(p52, adaptive, xlim=window, title="Seed 000: ionic currents"),
            out / "seed000_currents.png",
            dpi,
        )
    )
    figures.append(
        _save(
            plot.voltage(
                modern,
                labels="Tsit5",
                xlim=window,
                title="Seed 000 in the modern convention (rest -65 mV)",
            ),
            out / "seed000_modern.png",
            dpi,
        )
    )
    progress.done()

    # ---- seed 001: the double pulse and its phase-plane loops.
    progress.start("seed 001: double pulse 150 then 50 µA/cm², phase planes, both conventions")
    pulses = hhjax.Pulses([150.0, 50.0], starts=[0.0, 10.0], widths=[1.0, 1.0])
    p01 = hhjax.HHParams.squid_1952()
    double = hhjax.simulate(p01, pulses, 50.0)
    double_mod = hhjax.simulate(hhjax.HHParams(), pulses, 50.0)
    sp_double = np.asarray(hhjax.spike_times(double.ts, double.v, thr52))
    sp_double_mod = np.asarray(hhjax.spike_times(double_mod.ts, double_mod.v, thr52 - 65.0))
    figures.append(
        _save(
            plot.voltage(double, title="Seed 001: double pulse, 1952 convention"),
            out / "seed001_voltage.png",
            dpi,
        )
    )
    figures.append(
        _save(
            plot.phase_plane(
                [double, double_mod],
                labels=["1952 (rest 0 mV)", "modern (rest -65 mV)"],
                title="Seed 001: V–n and V–m loops",
            ),
            out / "seed001_phase.png",
            dpi,
        )
    )
    progress.done(f"({sp_double.size} spikes)")

    # ---- f–I curve (skipped with --quick).
    fi = None
    if not args.quick:
        progress.start(f"f–I curve of the classic model, {FI_N} currents in one batched run")
        amps = np.linspace(0.0, 40.0, FI_N)
        fi = _demo_fi(hhjax.HHParams(), amps, duration=FI_DURATION, discard=FI_DISCARD)
        figures.append(
            _save(
                plot.fi_curve(
                    fi,
                    labels="classic HH, 6.3 °C",
                    title=f"Steady-state f–I curve ({FI_DURATION:g} ms steps, "
                    f"first {FI_DISCARD:g} ms left out)",
                ),
                out / "fi_curve.png",
                dpi,
            )
        )
        progress.done()

    # ---- synthetic fit, if the fitting module is there.
    fit_rows, fit_path, fit_error = None, None, ""
    if fitting is not None:
        progress.start("synthetic fit of g_Na, g_K, g_L, E_L, C_m to a noisy classic-model trace")
        try:
            fit_rows, fit_path, _ = _demo_fit(fitting, out, dpi, args.quick)
            if fit_path is not None:
                figures.append(fit_path)
            progress.done()
        except Exception as err:  # a failed optional step must not lose the rest
            fit_error = f"{type(err).__name__}: {err}"
            progress.done(f"(failed: {fit_error})")
    else:
        progress.note(f"synthetic fit skipped: {why_not}")

    # ---- report.
    progress.start("writing report.md")
    dt_diff = (
        float(np.max(np.abs(sp_euler - sp_adapt))) if sp_euler.shape == sp_adapt.shape else math.nan
    )
    shift = float(np.max(np.abs(sp_mod - sp_adapt))) if sp_mod.shape == sp_adapt.shape else math.nan
    report += [
        "## Seed 000: 10 µA/cm² step from 100 to 150 ms",
        "",
        "1952 convention (`HHParams.squid_1952(e_l=10.6)`, rest 0 mV), spikes detected at 65 mV:",
        "",
        "| solver | spike times (ms) |",
        "|---|---|",
        f"| forward Euler, dt 0.05 ms | {_fmt_times(sp_euler)} |",
        f"| Tsit5, rtol = atol = 1e-8 | {_fmt_times(sp_adapt)} |",
        f"| modern convention (rest -65 mV), Tsit5 | {_fmt_times(sp_mod)} |",
        "",
        f"{n_in} spikes between 100 and 150 ms. Largest Euler-vs-adaptive spike-time difference: "
        f"{dt_diff:.3f} ms; the modern convention gives the same spike times to {shift:.1e} ms.",
        "",
        "## Seed 001: double pulse (150 µA/cm² at 0–1 ms, 50 µA/cm² at 10–11 ms)",
        "",
        f"Spike times: {_fmt_times(sp_double)} ms (1952 convention), "
        f"{_fmt_times(sp_double_mod)} ms (modern convention).",
        "",
    ]
    if fi is not None:
        rates = np.asarray(fi.rates)
        firing = np.asarray(fi.amplitudes)[rates > 0]
        first = f"{firing[0]:.2f} µA/cm² ({rates[rates > 0][0]:.1f} Hz)" if firing.size else "none"
        report += [
            "## f–I curve",
            "",
            f"{FI_N} step amplitudes 0–40 µA/cm², {FI_DURATION:g} ms each from rest "
            "(`hhjax.simulate_batch`, exponential Euler, dt 0.025 ms). Steady-state rate = "
            f"1 / mean interspike interval of the spikes after the first {FI_DISCARD:g} ms "
            "(the onset transient). First amplitude with sustained firing "
            f"{first}; rate at 40 µA/cm² {rates[-1]:.1f} Hz.",
            "",
        ]
    report += ["## Synthetic fit", ""]
    if fit_rows is not None:
        units = {"e_l": "mV", "c_m": "µF/cm²"}
        report += [
            "Classic model, 10 µA/cm² step, 0.5 mV Gaussian noise; `hhjax.fitting.fit` "
            f"(free: {', '.join(FIT_FREE)}).",
            "",
            "| parameter | true | fitted | 95 % interval |",
            "|---|---|---|---|",
        ]
        report += [
            f"| {n} ({units.get(n, 'mS/cm²')}) | {t:.4g} | {f:.4g} | {lo:.4g} – {hi:.4g} |"
            for n, t, f, (lo, hi) in fit_rows
        ]
    elif fit_error:
        report += [f"The fit failed: {fit_error}"]
    else:
        report += [f"Skipped: {why_not}."]
    report += ["", "## Figures", ""]
    report += [f"- [{p.name}]({p.name})" for p in figures]
    report += ["", f"Total time {progress.elapsed:.1f} s."]
    (out / "report.md").write_text("\n".join(report) + "\n", encoding="utf-8")
    progress.done()
    if not args.quiet:
        print(
            f"Done in {progress.elapsed:.1f} s: {len(figures)} figures and report.md in "
            f"{out.resolve()}/"
        )
    return 0


# ---------------------------------------------------------------------------- simulate
def _parse_param(text: str) -> tuple[str, float]:
    from .models._hh import FIELDS

    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep:
        raise UsageError(f"--param {text!r}: write NAME=VALUE, e.g. --param g_na=100.")
    if name not in FIELDS:
        raise UsageError(
            f"--param {text!r}: unknown parameter {name!r}; one of {', '.join(FIELDS)}."
        )
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"--param {text!r}: {value!r} is not a number.") from None
    if not math.isfinite(number):
        raise UsageError(f"--param {text!r}: the value must be a finite number.")
    return name, number


def _read_csv_waveform(path: str):
    """Two columns, time (ms) and current (µA/cm²); a header line is allowed."""
    import numpy as np

    file = pathlib.Path(path)
    if not file.is_file():
        raise UsageError(f"--csv: no such file {path!r}.")
    rows = []
    with file.open(newline="", encoding="utf-8") as handle:
        for k, row in enumerate(csv.reader(handle)):
            if not row or row[0].lstrip().startswith("#"):
                continue
            try:
                pair = (float(row[0]), float(row[1]))
            except (ValueError, IndexError):
                if k == 0 and not rows:
                    continue  # header
                raise UsageError(
                    f"--csv {path}: line {k + 1} is not 'time_ms, current_uA_per_cm2': {row!r}."
                ) from None
            if not all(math.isfinite(x) for x in pair):
                raise UsageError(
                    f"--csv {path}: line {k + 1} holds a non-finite number: {row!r}; remove or "
                    "fix the row."
                )
            rows.append(pair)
    if len(rows) < 2:
        raise UsageError(f"--csv {path}: need at least two rows of time (ms), current (µA/cm²).")
    data = np.asarray(rows, dtype=np.float64)
    if not np.all(np.diff(data[:, 0]) > 0):
        raise UsageError(f"--csv {path}: times (first column, ms) must be strictly increasing.")
    return data[:, 0], data[:, 1]


def _build_params(args):
    import hhjax

    overrides = dict(_parse_param(text) for text in args.param or ())
    factory = {
        "classic": hhjax.HHParams.classic,
        "neuron": hhjax.HHParams.neuron,
        "squid_1952": hhjax.HHParams.squid_1952,
    }[args.preset]
    try:
        return factory(**overrides)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--param: {err}") from None


def _build_stimulus(args):
    import hhjax

    terms = []
    csv_end = None
    try:
        if args.step:
            amp, start, stop = args.step
            terms.append(hhjax.Step(amp, start, stop))
        for amp, start, width in args.pulses or ():
            terms.append(hhjax.Pulses([amp], [start], [width]))
        if args.csv:
            ts, values = _read_csv_waveform(args.csv)
            terms.append(hhjax.Sampled(ts, values, hold=args.csv_hold))
            csv_end = float(ts[-1])
    except (ValueError, TypeError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"stimulus: {err}") from None
    stimulus = None
    for term in terms:
        stimulus = term if stimulus is None else stimulus + term
    return stimulus, csv_end


def _solver(args):
    import diffrax

    solver = getattr(diffrax, SOLVERS[args.solver])()
    if args.solver in FIXED_STEP and args.dt is None:
        raise UsageError(f"--solver {args.solver} is fixed-step: pass --dt (ms), e.g. --dt 0.025.")
    return solver


class CommandFailed(RuntimeError):
    """The computation failed (e.g. a solve diverged): reported in one line with exit code 1."""


def _output_folder(text: str) -> pathlib.Path:
    """`--out` as a folder, checked before any work (it is created only when writing)."""
    problem = output_folder_problem(text)
    if problem:
        raise UsageError(problem)
    return pathlib.Path(text)


def _make_folder(out: pathlib.Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out: cannot create {out}: {err}") from None


@contextlib.contextmanager
def _solve_failures(args: argparse.Namespace):
    """Input errors found before solving -> exit 2; a failed solve -> exit 1, one line each."""
    from ._simulate import SimulationError

    try:
        yield
    except SimulationError as err:
        if args.solver in FIXED_STEP:
            hint = f"pass a smaller --dt (now {args.dt:g} ms) or an adaptive --solver (tsit5)"
        else:
            hint = "try --solver kvaerno5 (stiff) or check the --param values"
        raise CommandFailed(f"the simulation failed: {err} On the command line: {hint}.") from None
    except (ValueError, TypeError) as err:  # raised on checking the inputs, before solving
        raise UsageError(str(err)) from None


def run_simulate(args: argparse.Namespace) -> int:
    """`hhjax simulate`: one trace (CSV/NPZ + figure) or, with `--batch`, an f–I table."""
    # Checks that need no JAX come first, so a bad argument costs no import and no solve.
    out = _output_folder(args.out)
    if args.batch is not None:
        start_amp, stop_amp, count = args.batch
        if count != int(count) or count < 1:
            raise UsageError(f"--batch: N must be a positive integer, got {count:g}.")
        if args.pulses or args.csv:
            raise UsageError(
                "--batch sweeps a step amplitude; it cannot be combined with --pulses or --csv."
            )
    _setup_jax()
    import numpy as np

    import hhjax

    from . import plot

    params = _build_params(args)
    stimulus, csv_end = _build_stimulus(args)
    t1 = args.t1 if args.t1 is not None else (csv_end if csv_end is not None else 100.0)
    if not t1 > 0:
        raise UsageError(f"--t1 must be > 0 ms, got {t1}.")
    solver = _solver(args)
    threshold = args.threshold
    if threshold is None:
        threshold = float(params.spike_threshold)  # the model's own (v_ref + 65 for HH)
    kwargs = dict(solver=solver, dt0=args.dt)

    if args.batch is not None:
        delay, duration = 0.0, t1
        if args.step:
            _, delay, stop = args.step
            duration = min(stop, t1) - delay
        if not duration > 0:
            raise UsageError("--batch: the step must end after it starts and before --t1.")
        amps = np.linspace(start_amp, stop_amp, int(count))
        with _solve_failures(args):
            fi = hhjax.fi_curve(
                params,
                amps,
                duration=duration,
                delay=delay,
                discard=args.discard,
                threshold=threshold,
                dt_save=args.dt_save or 0.05,
                **kwargs,
            )
        _make_folder(out)
        table = out / "fi_curve.csv"
        with table.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["amplitude_uA_per_cm2", "spike_count", "rate_Hz"])
            for a, c, r in zip(
                np.asarray(fi.amplitudes), np.asarray(fi.counts), np.asarray(fi.rates)
            ):
                writer.writerow([f"{a:.6g}", int(c), f"{r:.6g}"])
        fig = _save(
            plot.fi_curve(fi, title=f"f–I curve ({args.preset})"), out / "fi_curve.png", args.dpi
        )
        print(f"f–I table ({int(count)} amplitudes): {table}\nfigure: {fig}")
        return 0

    with _solve_failures(args):
        traj = hhjax.simulate(params, stimulus, t1, dt_save=args.dt_save, **kwargs)
    _make_folder(out)
    ts, v = np.asarray(traj.ts), np.asarray(traj.v)
    spikes = np.asarray(hhjax.spike_times(ts, v, threshold))
    columns = {
        "t_ms": ts,
        "v_mV": v,
        "m": np.asarray(traj.m),
        "h": np.asarray(traj.h),
        "n": np.asarray(traj.n),
        "i_stim_uA_per_cm2": np.asarray(traj.i_stim),
    }
    if args.format == "npz":
        trace = out / "trace.npz"
        np.savez(
            trace,
            **columns,
            spike_times_ms=spikes,
            params=json.dumps(params.to_dict()),
        )
    else:
        trace = out / "trace.csv"
        header = ",".join(columns)
        np.savetxt(
            trace,
            np.column_stack(list(columns.values())),
            delimiter=",",
            header=header,
            comments="",
            fmt="%.10g",
        )
    fig = _save(
        plot.voltage(traj, title=f"hhjax simulate ({args.preset})"), out / "voltage.png", args.dpi
    )
    print(f"{spikes.size} spike(s) at {_fmt_times(spikes)} ms (threshold {threshold:g} mV)")
    print(f"trace: {trace}\nfigure: {fig}")
    return 0


# ---------------------------------------------------------------------------- parser
def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate the seed protocols, fit a synthetic trace, write figures and a report",
        description=(
            "Reproduce the two seed tutorials (the 10 µA/cm² step with forward Euler and the "
            "adaptive solver; the double pulse with its phase planes) in both voltage "
            "conventions, an f–I curve, and, when hhjax.fitting is available, a synthetic fit. "
            "Writes PNG figures and report.md into --out. About a minute on a laptop CPU."
        ),
    )
    p.add_argument("--out", default="hhjax-demo", help="output folder (default: hhjax-demo/)")
    p.add_argument("--quick", action="store_true", help="skip the f–I curve and shorten the fit")
    p.add_argument("--no-fit", action="store_true", help="skip the synthetic fit")
    p.add_argument(
        "--dpi", type=int_at_least(1), default=110, help="figure resolution (default 110)"
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(run=run_demo)


def _add_simulate(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate one neuron (trace + figure) or sweep step amplitudes (f–I table)",
        description=(
            "Simulate a Hodgkin–Huxley membrane with a stimulus given on the command line. "
            "Stimuli add up: --step, any number of --pulses, and a --csv waveform. Writes "
            "trace.csv (or trace.npz) and voltage.png into --out; with --batch, fi_curve.csv "
            "and fi_curve.png instead."
        ),
        epilog=(
            "examples:\n"
            "  hhjax simulate --preset squid_1952 --param e_l=10.6 --step 10 100 150 --t1 250\n"
            "  hhjax simulate --pulses 150 0 1 --pulses 50 10 1 --t1 50 --format npz\n"
            "  hhjax simulate --step 0 20 520 --t1 520 --batch 0 30 61 --discard 100"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="classic",
        help="parameter preset (default classic: rest -65 mV)",
    )
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="override a parameter, e.g. --param g_na=100 (repeatable)",
    )
    p.add_argument(
        "--step",
        nargs=3,
        type=finite_float,
        metavar=("AMP", "START", "STOP"),
        help="current step: AMP µA/cm² from START to STOP ms",
    )
    p.add_argument(
        "--pulses",
        nargs=3,
        type=finite_float,
        action="append",
        metavar=("AMP", "START", "WIDTH"),
        help="rectangular pulse: AMP µA/cm² at START ms for WIDTH ms (repeatable)",
    )
    p.add_argument(
        "--csv", metavar="FILE", help="waveform: two columns, time (ms) and current (µA/cm²)"
    )
    p.add_argument(
        "--csv-hold",
        action="store_true",
        help="hold each CSV sample until the next (default: interpolate)",
    )
    p.add_argument(
        "--t1",
        type=positive_float,
        default=None,
        help="end time in ms (default 100, or the CSV's last time)",
    )
    p.add_argument(
        "--solver",
        choices=sorted(SOLVERS),
        default="tsit5",
        help="Diffrax solver (default tsit5, adaptive)",
    )
    p.add_argument(
        "--dt",
        type=positive_float,
        default=None,
        help="step (ms): fixed step for euler, initial step otherwise",
    )
    p.add_argument(
        "--dt-save",
        type=positive_float,
        default=None,
        help="save-grid spacing (ms); default 0.025 (adaptive) or every step",
    )
    p.add_argument(
        "--threshold",
        type=finite_float,
        default=None,
        help="spike threshold (mV); default the model's own: v_ref + 65 (0 mV modern, "
        "65 mV in the 1952 convention)",
    )
    p.add_argument(
        "--batch",
        nargs=3,
        type=finite_float,
        metavar=("START", "STOP", "N"),
        help="sweep N step amplitudes from START to STOP µA/cm² (the step's times "
        "from --step, else the whole run) and write the f–I table",
    )
    p.add_argument(
        "--discard",
        type=nonnegative_float,
        default=0.0,
        help="with --batch: ms after step onset excluded from the rate (default 0; pass e.g. "
        "100 so that the onset spike of a cell that does not keep firing is not counted)",
    )
    p.add_argument("--format", choices=("csv", "npz"), default="csv", help="trace file format")
    p.add_argument("--out", default="hhjax-sim", help="output folder (default: hhjax-sim/)")
    p.add_argument(
        "--dpi", type=int_at_least(1), default=110, help="figure resolution (default 110)"
    )
    p.set_defaults(run=run_simulate)


def run_sweep(args: argparse.Namespace) -> int:
    """`hhjax sweep CONFIG`: run or continue a sweep, one Parquet file per shard."""
    out = _output_folder(args.out)
    if (args.coordinator is None) != (args.num_processes is None) or (
        args.num_processes is not None and args.process_id is None
    ):
        raise UsageError("--coordinator, --num-processes and --process-id go together "
                         "(or pass --distributed alone to read them from SLURM).")
    import jax

    from ._sweep import SweepConfig, SweepError, sweep

    try:
        config = SweepConfig.from_toml(args.config)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    if config.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    if args.coordinator is not None:
        jax.distributed.initialize(coordinator_address=args.coordinator,
                                   num_processes=args.num_processes,
                                   process_id=args.process_id)
    elif args.distributed:
        jax.distributed.initialize()  # SLURM and other clusters JAX detects
    try:
        summary = sweep(config, out, progress=not args.quiet)
    except ValueError as err:
        raise UsageError(str(err)) from None
    except SweepError as err:
        raise CommandFailed(str(err)) from None
    if not args.quiet:
        who = f"process {jax.process_index()} of {jax.process_count()}: " \
            if jax.process_count() > 1 else ""
        print(f"{who}{len(summary.written)} shard(s) written ({summary.points} points, "
              f"{summary.seconds:.1f} s), {len(summary.skipped)} already done; "
              f"{config.size} points in {config.n_shards} shard(s) under {out}")
    return 0


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="a parameter sweep from a TOML file, one Parquet file per shard (resumable)",
        description=(
            "Simulate a grid or random sample over a model's parameters and a step's "
            "amplitude (simulate_batch, features only) and write one Parquet file per shard "
            "into --out. Rerunning the same command after a kill skips the finished shards. "
            "With several processes (one command per host), each writes its own shards."
        ),
        epilog=(
            "example sweep.toml:\n"
            "  [model]\n  name = \"HHParams.neuron\"\n"
            "  [axes]\n  g_na = {start = 80.0, stop = 160.0, num = 81}\n"
            "  g_k = {start = 20.0, stop = 50.0, num = 31}\n"
            "  [stimulus]\n  amplitude = {start = 0.0, stop = 20.0, num = 41}\n  start = 5.0\n"
            "  [run]\n  t1 = 500.0\n  shard_size = 100000\n\n"
            "two hosts:  hhjax sweep sweep.toml --coordinator host0:1234 --num-processes 2 "
            "--process-id 0   (and 1 on the other)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="the sweep's TOML file")
    p.add_argument("--out", default="hhjax-sweep", help="output folder (default: hhjax-sweep/)")
    p.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="jax.distributed coordinator (process 0's address)")
    p.add_argument("--num-processes", type=int_at_least(1), default=None)
    p.add_argument("--process-id", type=int_at_least(0), default=None)
    p.add_argument("--distributed", action="store_true",
                   help="jax.distributed.initialize() with the cluster's own settings (SLURM)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(run=run_sweep)


def _add_fit(sub) -> None:
    from . import _cli_fit

    _cli_fit.add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `hhjax` command (subcommands demo, simulate, fit, sweep)."""
    from . import __version__

    parser = Parser(
        prog="hhjax",
        description="Differentiable Hodgkin–Huxley simulation and fitting on JAX and Diffrax. "
        "Units: ms, mV, µA/cm², mS/cm², µF/cm², °C.",
    )
    parser.add_argument("--version", action="version", version=f"hhjax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_simulate(sub)
    _add_fit(sub)
    _add_sweep(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `hhjax` command line; returns the exit code (0, 1 or 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) and usage errors (2) from argparse
        return int(exit_.code or 0)
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except UsageError as err:
        print(f"hhjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except CommandFailed as err:
        print(f"hhjax {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hhjax {args.command}: interrupted.", file=sys.stderr)
        return 1
    except Exception as err:
        print(f"hhjax {args.command}: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
