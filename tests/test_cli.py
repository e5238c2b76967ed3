"""The `hhjax` command line: demo, simulate, fit registration, help, exit codes."""

import subprocess
import sys
import types

import numpy as np
import pytest

import hhjax
from hhjax import cli


def _crossings(v, threshold):
    v = np.asarray(v)
    return int(np.sum((v[:-1] < threshold) & (v[1:] >= threshold)))


def test_simulate_double_pulse_writes_csv_trace_and_figure(tmp_path, capsys):
    out = tmp_path / "sim"
    code = cli.main(
        [
            "simulate",
            "--pulses",
            "150",
            "0",
            "1",
            "--pulses",
            "50",
            "10",
            "1",
            "--t1",
            "50",
            "--dt-save",
            "0.05",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    data = np.genfromtxt(out / "trace.csv", delimiter=",", names=True)
    assert data.dtype.names == ("t_ms", "v_mV", "m", "h", "n", "i_stim_uA_per_cm2")
    np.testing.assert_allclose(data["t_ms"], np.linspace(0.0, 50.0, 1001), atol=1e-9)
    t = data["t_ms"]
    expected = np.where(t < 1.0, 150.0, 0.0) + np.where((t >= 10.0) & (t < 11.0), 50.0, 0.0)
    np.testing.assert_allclose(data["i_stim_uA_per_cm2"], expected)
    # Seed 001: one spike per pulse, from rest at -65 mV.
    assert _crossings(data["v_mV"], 0.0) == 2
    assert abs(data["v_mV"][0] + 65.0) < 0.01  # E_L = 10.613 - 65 mV rests within 4 µV of -65
    assert (out / "voltage.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "2 spike(s)" in printed and "trace.csv" in printed


def test_simulate_npz_with_preset_params_and_csv_waveform(tmp_path):
    wave = tmp_path / "wave.csv"
    wave.write_text("time_ms,current\n0,0\n2,10\n20,10\n30,0\n")
    out = tmp_path / "o"
    code = cli.main(
        [
            "simulate",
            "--preset",
            "squid_1952",
            "--param",
            "e_l=10.6",
            "--csv",
            str(wave),
            "--csv-hold",
            "--format",
            "npz",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    data = np.load(out / "trace.npz")
    assert data["t_ms"][-1] == pytest.approx(30.0)  # t1 defaults to the waveform's end
    t = data["t_ms"]
    np.testing.assert_allclose(data["i_stim_uA_per_cm2"], np.where((t >= 2) & (t < 30), 10, 0))
    params = hhjax.HHParams(**__import__("json").loads(str(data["params"])))
    assert float(params.e_l) == 10.6 and float(params.v_ref) == 0.0
    # 1952 convention, threshold v_ref + 65 mV: 28 ms at 10 µA/cm² (held samples) fire twice.
    assert data["spike_times_ms"].size == _crossings(data["v_mV"], 65.0) == 2


def test_simulate_batch_writes_fi_table(tmp_path):
    out = tmp_path / "fi"
    code = cli.main(
        [
            "simulate",
            "--step",
            "0",
            "5",
            "105",
            "--t1",
            "105",
            "--batch",
            "0",
            "20",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    table = np.genfromtxt(out / "fi_curve.csv", delimiter=",", names=True)
    np.testing.assert_allclose(table["amplitude_uA_per_cm2"], [0.0, 10.0, 20.0])
    np.testing.assert_allclose(table["rate_Hz"], 1000.0 * table["spike_count"] / 100.0)
    assert table["spike_count"][0] == 0
    # The classic HH fires repetitively at 10 and 20 µA/cm² (interspike interval ~14 and ~11 ms).
    assert 6 <= table["spike_count"][1] < table["spike_count"][2] <= 11
    assert (out / "fi_curve.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "usage"),
        (["nonsense"], "invalid choice"),
        (["simulate", "--step", "1", "2"], "--step"),
        (["simulate", "--param", "g_x=1"], "g_x"),
        (["simulate", "--param", "g_na"], "NAME=VALUE"),
        (["simulate", "--param", "g_na=-1"], "g_na"),
        (["simulate", "--step", "1", "5", "2"], "stop"),
        (["simulate", "--solver", "euler"], "--dt"),
        (["simulate", "--solver", "rk99"], "--solver"),
        (["simulate", "--csv", "/no/such/file.csv"], "--csv"),
        (["simulate", "--t1", "-3"], "--t1"),
        (["simulate", "--batch", "0", "10", "2.5"], "--batch"),
        (["simulate", "--batch", "0", "10", "3", "--pulses", "1", "0", "1"], "--batch"),
        (["demo", "--dpi", "high"], "--dpi"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is relative: keep it out of the repository
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_runtime_failure_exits_1(tmp_path, monkeypatch, capsys):
    def failing(*args, **kwargs):
        raise hhjax.SimulationError("the solve did not reach t1")

    monkeypatch.setattr(hhjax, "simulate", failing)
    assert cli.main(["simulate", "--out", str(tmp_path)]) == 1
    assert "did not reach t1" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["demo"], ["simulate"], ["fit"]])
def test_help(command, capsys):
    assert cli.main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: hhjax")
    if command == ["simulate"]:
        assert "--step AMP START STOP" in text and "--batch START STOP N" in text


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "hhjax", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"hhjax {hhjax.__version__}"


def test_demo_quick_reproduces_the_seeds(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--no-fit", "--out", str(out), "--dpi", "40"]) == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed and "[1/" in printed
    for name in (
        "seed000_voltage.png",
        "seed000_gates.png",
        "seed000_currents.png",
        "seed000_modern.png",
        "seed001_voltage.png",
        "seed001_phase.png",
    ):
        assert (out / name).stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    # What the seed tutorials show: four spikes in the 100–150 ms step, two for the double pulse.
    assert "4 spikes between 100 and 150 ms" in report
    assert "Spike times: 0.38, 10.97 ms (1952 convention), 0.38, 10.97 ms" in report
    assert "Skipped: --no-fit was given." in report


def test_demo_fi_curve_is_the_steady_state_rate():
    amps = [0.0, 3.0, 10.0, 10.25, 20.0]
    fi = cli._demo_fi(hhjax.HHParams(), amps, duration=300.0, discard=100.0)
    rates, counts = np.asarray(fi.rates), np.asarray(fi.counts)
    # Reference: 1 / mean interspike interval after 100 ms of an adaptive Tsit5 solve.
    traj = hhjax.simulate(hhjax.HHParams(), hhjax.Step(10.0, 0.0), 300.0, dt_save=0.025)
    spikes = np.asarray(hhjax.spike_times(traj.ts, traj.v))
    spikes = spikes[spikes >= 100.0]
    reference = 1000.0 * (spikes.size - 1) / (spikes[-1] - spikes[0])
    # Exponential Euler at dt 0.025 ms against rtol 1e-8: intervals agree to ~3e-4.
    assert rates[2] == pytest.approx(reference, rel=2e-3)
    assert rates[0] == rates[1] == 0.0  # silent, and a lone onset spike is not firing
    assert counts[1] == 0
    # Not quantised by the window: equal counts, distinct rates, increasing with the current.
    assert counts[2] == counts[3] and rates[2] < rates[3] < rates[4]


@pytest.mark.slow
def test_demo_synthetic_fit_recovers_the_truth(tmp_path):
    pytest.importorskip("hhjax.fitting")
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--quiet", "--out", str(out), "--dpi", "40"]) == 0
    assert (out / "fit_synthetic.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| g_") or "| e_l" in line]
    assert len(rows) == 4  # g_na, g_k, g_l, e_l (c_m checked below)
    for line in rows + [line for line in report.splitlines() if line.startswith("| c_m")]:
        _, _, true, fitted, _, _ = (cell.strip() for cell in line.split("|"))
        assert float(fitted) == pytest.approx(float(true), rel=0.05), line


# ---------------------------------------------------------------- issue 14: argument checks
def _step_recording(path, *, seconds=False, volts=False):
    """A one-sweep current-clamp step recording (ms, mV, pA unless stated) as .npz."""
    t = np.arange(6000) * 0.1
    i = np.where((t >= 100) & (t < 400), 100.0, 0.0)
    v = -70.0 + 0.05 * i + 0.2 * np.sin(t)
    np.savez(path, t=t * (1e-3 if seconds else 1.0), v=v * (1e-3 if volts else 1.0), i=i)
    return str(path)


FIT = ["fit", "rec.npz", "--out", "o"]


@pytest.mark.parametrize(
    "argv, option",
    [
        (FIT + ["--population", "0"], "--population"),
        (FIT + ["--population", "1"], "--population"),
        (FIT + ["--generations", "0"], "--generations"),
        (FIT + ["--restarts", "0"], "--restarts"),
        (FIT + ["--dpi", "0"], "--dpi"),
        (FIT + ["--channel", "-1"], "--channel"),
        (FIT + ["--seed", "-1"], "--seed"),
        (FIT + ["--generations", "2.5"], "--generations"),
        (["simulate", "--threshold", "nan"], "--threshold"),
        (["simulate", "--t1", "inf"], "--t1"),
        (["simulate", "--dt", "0"], "--dt"),
        (["simulate", "--dt-save", "-0.1"], "--dt-save"),
        (["simulate", "--step", "10", "nan", "50"], "--step"),
        (["simulate", "--pulses", "10", "0", "inf"], "--pulses"),
        (["simulate", "--batch", "0", "nan", "3"], "--batch"),
        (["simulate", "--discard", "-1"], "--discard"),
        (["simulate", "--dpi", "0"], "--dpi"),
        (["demo", "--dpi", "0"], "--dpi"),
    ],
)
def test_numeric_options_are_checked_while_parsing(argv, option, capsys, tmp_path, monkeypatch):
    # Issue 14: `fit --population 0` and `--dpi 0` failed after the work (exit 1, traceback);
    # `--generations 0`, `--restarts 0` and `--threshold nan` were accepted.
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"argument {option}" in err and "must be" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder made


def test_simulate_refuses_nan_in_a_param_or_the_csv_waveform(tmp_path, capsys, monkeypatch):
    # Issue 14: NaN inputs ran until "maximum number of solver steps was reached" (4–28 s).
    monkeypatch.chdir(tmp_path)
    assert cli.main(["simulate", "--param", "g_na=nan"]) == 2
    assert "--param 'g_na=nan'" in capsys.readouterr().err
    wave = tmp_path / "wave.csv"
    wave.write_text("time_ms,current\n0,0\n2,nan\n20,10\n")
    assert cli.main(["simulate", "--csv", str(wave)]) == 2
    err = capsys.readouterr().err
    assert "wave.csv: line 3 holds a non-finite number" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == [wave]


def test_out_naming_an_existing_file_exits_2(tmp_path, capsys):
    # Issue 14: `hhjax fit --out <file>` exited 1 with a FileExistsError traceback.
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder")
    recording = _step_recording(tmp_path / "rec.npz")
    for argv in (["fit", recording], ["simulate"], ["simulate", "--batch", "0", "1", "2"]):
        assert cli.main([*argv, "--out", str(taken)]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "existing file" in err and err.count("\n") == 1, err
    assert cli.main(["fit", recording, "--out", str(taken / "sub")]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("unit", ["seconds", "volts"])
def test_fit_refuses_a_recording_in_seconds_or_volts(tmp_path, capsys, unit):
    # Issue 14: an NPZ in volts and seconds was "fitted" (21,181 pF, exit 0).
    recording = _step_recording(tmp_path / "si.npz", **{unit: True})
    assert cli.main(["fit", recording, "--quick", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"looks like {unit}" in err and "si.npz" in err, err
    assert not (tmp_path / "o").exists()


def test_simulate_unstable_fixed_step_exits_1_with_one_line(tmp_path, capsys):
    # Issue 14: forward Euler at 0.5 ms diverges (to -2.3e32 mV, then NaN); the command
    # exited 0 and reported "2 spike(s)".
    out = tmp_path / "sim"
    argv = ["simulate", "--solver", "euler", "--dt", "0.5", "--step", "10", "5", "50"]
    assert cli.main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hhjax simulate: the simulation failed") and err.count("\n") == 1, err
    assert "--dt" in err and "Traceback" not in err
    assert not (out / "trace.csv").exists()


@pytest.mark.parametrize("command", [[], ["fit"], ["simulate"], ["demo"]])
def test_help_does_not_import_jax(command):
    # Issue 14: `hhjax --help` imported JAX (3–8 s). `-X importtime` lists every module the
    # real entry point imports.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hhjax", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: hhjax")
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("jax", "jaxlib", "equinox"))
    assert not heavy, f"--help imported {heavy[:5]}"


def test_fit_shows_every_phase(tmp_path, capsys, monkeypatch):
    # Issue 14: the progress bar sat at 100 % for 11–35 s while the passive refinement, the
    # predictions and the figure were made. The model functions are replaced by stand-ins
    # here: only what the command prints between them is under test.
    import matplotlib.pyplot as plt

    from hhjax import models

    phases = []

    def fit_steps(train, *, generations, restarts, progress, **kwargs):
        for k in range(generations * restarts):
            progress(k + 1, generations * restarts, 10.0 - k)
        phases.append("refine")  # fit_steps refines after its last generation
        return types.SimpleNamespace(model=kwargs["base"], loss=1.0)

    def predict_steps(model, sweeps):
        phases.append("predict")
        return [
            dict(
                sweep=s.sweep,
                amplitude_pA=s.amplitude,
                spiking=False,
                count_data=0,
                count_model=0,
                steady_data=-60.0,
                steady_model=-60.0,
                gamma=float("nan"),
            )
            for s in sweeps
        ]

    def plot_steps(*args, **kwargs):
        phases.append("plot")
        return plt.figure(figsize=(1, 1))

    monkeypatch.setattr(models, "fit_steps", fit_steps)
    monkeypatch.setattr(models, "predict_steps", predict_steps)
    monkeypatch.setattr(models, "plot_steps", plot_steps)
    recording = _step_recording(tmp_path / "rec.npz")
    argv = ["fit", recording, "--generations", "3", "--population", "2", "--dpi", "10"]
    assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert phases == ["refine", "predict", "plot"]
    marks = ["search", "3/3", "refining the passive parameters", "predict", "drawing fit.png"]
    where = [err.find(mark) for mark in marks]
    assert -1 not in where and where == sorted(where), err


def test_fit_trace_objective_recovers_a_synthetic_cell(tmp_path, capsys):
    """`hhjax fit --objective trace` reaches the gradient engine: a regular-spiking cell with
    perturbed conductances, one spiking sweep (0.05 ms, 0.3 mV noise), refitted."""
    import json

    import hhjax
    from hhjax.models import Pospischil

    truth = Pospischil.regular_spiking()
    truth = truth.replace(g_na=float(truth.g_na) * 1.1, g_kd=float(truth.g_kd) * 0.9)
    area = float(truth.area)
    amp_pa = 300.0
    t = np.round(np.arange(4000) * 0.05, 10)
    i = np.where((t >= 50.0) & (t < 150.0), amp_pa, 0.0)
    density = amp_pa * 1e-6 / area  # pA over cm² -> µA/cm²
    traj = hhjax.simulate(truth, hhjax.Step(density, 50.0, 150.0), float(t[-1]), ts=t,
                          y0=truth.rest_state(0.0), rtol=1e-9, atol=1e-9)
    v = np.asarray(traj.v) + 0.3 * np.random.default_rng(0).standard_normal(t.size)
    assert np.sum((v[1:] > 0) & (v[:-1] <= 0)) >= 3  # a spiking sweep
    np.savez(tmp_path / "cell.npz", t=t, v=v, i=i)
    out = tmp_path / "o"
    argv = ["fit", str(tmp_path / "cell.npz"), "--objective", "trace", "--train", "0",
            "--dpi", "10", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "trace fit of g_na" in err and "at the noise floor" in err, err
    doc = json.loads((out / "params.json").read_text())
    assert doc["objective"] == "trace"
    for name in ("g_na", "g_kd"):
        fitted = doc["params"][name]["value"]
        # One sweep and 0.3 mV of noise: a few per cent (this checks the route, not the
        # precision the protocol study measures).
        assert abs(fitted / float(getattr(truth, name)) - 1) < 0.05, (name, fitted)


def test_fit_spike_timing_objective_route(tmp_path, capsys):
    """`hhjax fit --objective spike-timing` runs the engine's spike-timing objective (the step
    preset's start, fields and search, then the gradient polish) and reports it; on its
    training sweep the fitted cell fires the recorded number of spikes, within one."""
    import json

    import hhjax
    from hhjax.models import Pospischil

    truth = Pospischil.regular_spiking()
    area = float(truth.area)
    t = np.round(np.arange(6000) * 0.05, 10)
    sweeps = []
    for amp_pa in (-50.0, 250.0):
        i = np.where((t >= 50.0) & (t < 250.0), amp_pa, 0.0)
        traj = hhjax.simulate(truth, hhjax.Step(amp_pa * 1e-6 / area, 50.0, 250.0),
                              float(t[-1]), ts=t, y0=truth.rest_state(0.0))
        sweeps.append((np.asarray(traj.v) + 0.2 * np.random.default_rng(1).standard_normal(
            t.size), i))
    np.savez(tmp_path / "cell.npz", t=t, v=np.stack([s[0] for s in sweeps]),
             i=np.stack([s[1] for s in sweeps]))
    out = tmp_path / "o"
    argv = ["fit", str(tmp_path / "cell.npz"), "--objective", "spike-timing", "--quick",
            "--dpi", "10", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    doc = json.loads((out / "params.json").read_text())
    assert doc["objective"] == "spike-timing" and sorted(doc["train_sweeps"]) == [0, 1]
    rows = json.loads((out / "predictions.json").read_text())
    spiking = [r for r in rows if r["spiking"]]
    assert spiking and all(abs(r["count_model"] - r["count_data"]) <= 1 for r in spiking)
    assert "spike-timing objective" in (out / "report.md").read_text()
