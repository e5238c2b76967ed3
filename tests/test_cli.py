"""The `hhjax` command line: demo, simulate, fit registration, help, exit codes."""

import importlib.util
import subprocess
import sys

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
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys):
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


def test_fit_command_registered_or_reported_unavailable(capsys):
    if importlib.util.find_spec("hhjax._cli_fit") is not None:
        pytest.skip("hhjax._cli_fit exists; its own tests cover `hhjax fit`")
    assert cli.main(["fit", "recording.abf"]) == 2
    assert "fit command is unavailable" in capsys.readouterr().err


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
