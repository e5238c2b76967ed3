"""The shared real recordings: reading all six, their step protocol, and the fit command.

Expected values are those stated in ../shared/data/abf/README.md (sweep counts, sampling,
resting potentials, spike counts per step), i.e. independent of this code.
"""

import json

import numpy as np
import pytest

import hhjax.io as hio
from hhjax import models

# file: (sweeps, dt ms, sweep length ms, V rest mV, {step pA: spike count})
README = {
    "171116sh_0018.abf": (17, 0.05, 3000.0, -62.0, {25: 0, 50: 1, 100: 3, 200: 6, 300: 9}),
    "171116sh_0019.abf": (22, 0.05, 3000.0, -62.5, {100: 3, 500: 13, 1000: 16}),
    "17o05028_ic_steps.abf": (16, 0.05, 3000.0, -45.0, {10: 6, 50: 15, 100: 21}),
    "2019_07_24_0055_fsi.abf": (17, 0.05, 3000.0, -53.0, {25: 13, 100: 33, 300: 64}),
    "190619B_0003.abf": (10, 0.1, 3064.0, -66.0, {60: 0, 120: 3, 420: 16}),
    "File_axon_5.abf": (9, 0.05, 1000.0, -70.5, {150: 0, 200: 2, 300: 3}),
}


@pytest.mark.parametrize("name", sorted(README))
def test_read_shared_file(abf_dir, name):
    n_sweeps, dt, length, v_rest, counts = README[name]
    recs = hio.read(abf_dir / name)
    assert len(recs) == n_sweeps
    assert [r.sweep for r in recs] == list(range(n_sweeps))
    for r in recs:
        assert r.i_unit == "pA"
        assert r.dt == pytest.approx(dt, rel=1e-6)
        assert r.t[0] == 0.0 and r.t[-1] + dt == pytest.approx(length, rel=1e-4)
    # resting potential before the first step, median over sweeps: README value within 4 mV
    # (baselines drift between sweeps, by up to ±9 mV in the fast-spiking cell)
    sweeps = [models.step_sweep(r) for r in recs]
    rests = [np.mean(s.v[s.t < s.t_on]) for s in sweeps if s is not None]
    assert abs(np.median(rests) - v_rest) < 4.0
    # spike counts in the first step window, as listed in the README
    by_amp = {s.amplitude: s for s in sweeps if s is not None and s.t_on > 1.0}
    for amp, count in counts.items():
        sw = by_amp[float(amp)]
        f = models.data_features(sw.t, sw.v, sw.t_on, sw.t_off)
        assert f.count == count, (name, amp)


def test_read_shared_abf_channel_checks(abf_dir):
    # 190619B_0003 has a second channel commanded in mV: refused as not current clamp
    with pytest.raises(hio.RecordingError, match="voltage command"):
        hio.read_abf(abf_dir / "190619B_0003.abf", channel=1)
    with pytest.raises(hio.RecordingError, match="no channel 2"):
        hio.read_abf(abf_dir / "190619B_0003.abf", channel=2)


def test_step_sweep_protocol(abf_dir):
    recs = hio.read_abf(abf_dir / "171116sh_0018.abf", sweeps=[0, 4, 16])
    s0, s4, s16 = (models.step_sweep(r) for r in recs)
    assert (s0.amplitude, s16.amplitude) == (-100.0, 300.0)
    # sweep 4 has a 0 pA first step: its first non-zero step is the fixed -100 pA one
    assert s4.amplitude == -100.0
    for s in (s0, s16):
        assert s.t_on == pytest.approx(100.0, abs=0.06)
        assert s.t_off - s.t_on == pytest.approx(500.0, abs=0.06)


def test_passive_start_from_data(abf_dir):
    (rec,) = hio.read_abf(abf_dir / "171116sh_0018.abf", sweeps=[0])
    p = models.passive_start(models.step_sweep(rec))
    # -100 pA gives about -11 mV: ~110 MOhm; the charging time constant is tens of ms
    assert 80.0 < p["r_in_mohm"] < 140.0
    assert 5.0 < p["tau_ms"] < 60.0
    assert 1e-5 < p["area"] < 1e-3


def test_cli_fit_bad_input(tmp_path, abf_dir):
    import argparse

    from hhjax import _cli_fit

    parser = argparse.ArgumentParser()
    _cli_fit.add_parser(parser.add_subparsers())
    args = parser.parse_args(["fit", str(tmp_path / "absent.abf"), "--out", str(tmp_path)])
    assert args.run(args) == 2
    args = parser.parse_args(
        ["fit", str(abf_dir / "190619B_0003.abf"), "--channel", "1", "--out", str(tmp_path)]
    )
    assert args.run(args) == 2


@pytest.mark.slow
def test_cli_fit_quick_writes_outputs(tmp_path, abf_dir):
    import argparse

    from hhjax import _cli_fit

    parser = argparse.ArgumentParser()
    _cli_fit.add_parser(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(
        ["fit", str(abf_dir / "File_axon_5.abf"), "--quick", "--quiet", "--out", str(out)]
    )
    assert args.run(args) == 0
    doc = json.loads((out / "params.json").read_text())
    assert doc["params"]["area"]["unit"] == "cm²" and len(doc["train_sweeps"]) <= 3
    assert (out / "fit.png").stat().st_size > 1000
    assert "held-out" in (out / "report.md").read_text()


@pytest.mark.slow
def test_fit_171116sh_0018_predicts_held_out_sweeps(abf_dir):
    """The acceptance protocol with the experiment's search size: counts within ±1 on >= 80 %
    of the held-out spiking sweeps, held-out subthreshold steady states within 2 mV."""
    recs = hio.read_abf(abf_dir / "171116sh_0018.abf")
    sweeps = [models.step_sweep(r) for r in recs]
    train = [sweeps[k] for k in models.choose_training(sweeps)]
    res = models.fit_steps(train, population=256, generations=20)
    rows = models.predict_steps(res.model, sweeps, dt=0.05)
    test = [r for r in rows if r["sweep"] not in res.sweeps]
    supra = [abs(r["count_model"] - r["count_data"]) <= 1 for r in test if r["spiking"]]
    sub = [abs(r["steady_model"] - r["steady_data"]) <= 2.0 for r in test if not r["spiking"]]
    assert np.mean(supra) >= 0.8 and all(sub)
