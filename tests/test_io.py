"""Readers on small files written here (ABF1 via pyabf, NWB via pynwb, CSV, NPZ)."""

import datetime
import re

import numpy as np
import pytest

import hhjax.io as hio


def _trace(n=400, dt_ms=0.1):
    t = np.arange(n) * dt_ms
    i = np.where((t >= 10) & (t < 30), 50.0, 0.0)  # pA
    v = -65.0 + 0.1 * i + np.sin(t)  # mV
    return t, v, i


# ---------------------------------------------------------------- NPZ / CSV
def test_npz_converts_units_once(tmp_path):
    t, v, i = _trace()
    path = tmp_path / "cell.npz"
    # stored in SI-ish units: seconds, volts, nA; two sweeps
    np.savez(
        path,
        t=t * 1e-3,
        v=np.stack([v, v + 1]) * 1e-3,
        i=np.stack([i, 2 * i]) * 1e-3,
        t_unit="s",
        v_unit="V",
        i_unit="nA",
    )
    recs = hio.read(path)
    assert len(recs) == 2
    np.testing.assert_allclose(recs[0].t, t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(recs[1].v, v + 1, rtol=1e-12)
    np.testing.assert_allclose(recs[1].i_inj, 2 * i, rtol=1e-12)
    assert recs[1].i_unit == "pA" and recs[1].sweep == 1 and recs[0].dt == pytest.approx(0.1)


def test_area_converts_pa_to_density(tmp_path):
    t, v, i = _trace()
    path = tmp_path / "cell.npz"
    np.savez(path, t=t, v=v, i=i)
    (rec,) = hio.read_npz(path, area=1e-4)
    # 50 pA on 1e-4 cm² = 0.5 µA/cm²
    np.testing.assert_allclose(np.asarray(rec.i_inj).max(), 0.5, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(rec.v), v, rtol=1e-12)
    (raw,) = hio.read_npz(path)
    np.testing.assert_allclose(np.asarray(raw.density(2e-4)).max(), 0.25, rtol=1e-12)
    with pytest.raises(hio.RecordingError, match="area"):
        raw.density(None)


def test_npz_missing_current(tmp_path):
    t, v, _ = _trace()
    path = tmp_path / "nocurrent.npz"
    np.savez(path, t=t, v=v)
    with pytest.raises(hio.RecordingError, match=r"nocurrent\.npz.*no injected current"):
        hio.read(path)


def test_npz_truncated(tmp_path):
    t, v, i = _trace()
    path = tmp_path / "cut.npz"
    np.savez(path, t=t, v=v, i=i)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(hio.RecordingError, match=r"cut\.npz.*truncated or corrupt"):
        hio.read(path)


def test_csv_sweeps_and_units(tmp_path):
    t, v, i = _trace(50)
    path = tmp_path / "cell.csv"
    lines = ["sweep,time,vm,iinj"]
    for s in (3, 4):
        lines += [f"{s},{a * 1e-3},{b + s},{c * 1e-3}" for a, b, c in zip(t, v, i)]
    path.write_text("\n".join(lines))
    recs = hio.read_csv(path, t_col="time", v_col="vm", i_col="iinj", t_unit="s", i_unit="nA")
    assert [r.sweep for r in recs] == [3, 4]
    np.testing.assert_allclose(recs[1].t, t, atol=1e-9)
    np.testing.assert_allclose(recs[1].v, v + 4, rtol=1e-9)
    np.testing.assert_allclose(recs[0].i_inj, i, rtol=1e-9, atol=1e-9)
    with pytest.raises(hio.RecordingError, match=r"cell\.csv.*no injected current"):
        hio.read_csv(path, t_col="time", v_col="vm")
    with pytest.raises(hio.RecordingError, match="unknown i_unit"):
        hio.read_csv(path, t_col="time", v_col="vm", i_col="iinj", i_unit="amps")


def test_dispatcher_and_missing_file(tmp_path):
    with pytest.raises(hio.RecordingError, match="unknown recording format"):
        hio.read(tmp_path / "x.txt")
    with pytest.raises(hio.RecordingError, match="no such file"):
        hio.read(tmp_path / "absent.abf")


# ---------------------------------------------------------------- ABF
def _write_abf(path, data, units):
    # pyabf's ABF1 writer makes files its reader accepts only from ~1000 samples per sweep
    import pyabf

    pyabf.abfWriter.writeABF1(np.asarray(data, dtype=np.float32), str(path), 10_000, units=units)


def test_abf_without_command_needs_current(tmp_path):
    t, v, i = _trace(2000)
    path = tmp_path / "cc.abf"
    _write_abf(path, np.stack([v, v - 2]), "mV")
    with pytest.raises(hio.RecordingError, match=r"cc\.abf.*no injected current"):
        hio.read_abf(path)
    recs = hio.read_abf(path, current=np.stack([i, 2 * i]))
    assert len(recs) == 2
    # ABF1 stores int16 with a scale factor: values good to the quantisation step
    np.testing.assert_allclose(recs[1].v, v - 2, atol=0.01)
    np.testing.assert_allclose(recs[1].i_inj, 2 * i)
    np.testing.assert_allclose(recs[0].t, np.arange(len(v)) * 0.1, atol=1e-9)
    (only,) = hio.read_abf(path, sweeps=1, current=i)
    assert only.sweep == 1
    with pytest.raises(hio.RecordingError, match=r"no sweep\(s\) \[5\]"):
        hio.read_abf(path, sweeps=[5], current=i)


def test_abf_voltage_clamp_and_wrong_channel(tmp_path):
    path = tmp_path / "vc.abf"
    _write_abf(path, np.zeros((1, 2000)) + 20.0, "pA")
    with pytest.raises(hio.RecordingError, match=r"vc\.abf.*records current.*voltage-clamp"):
        hio.read_abf(path)
    with pytest.raises(hio.RecordingError, match=r"vc\.abf: no channel 1"):
        hio.read_abf(path, channel=1)


def test_abf_truncated(tmp_path):
    t, v, i = _trace(2000)
    path = tmp_path / "cut.abf"
    _write_abf(path, np.stack([v, v]), "mV")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 300])
    with pytest.raises(hio.RecordingError, match=r"cut\.abf.*truncated"):
        hio.read_abf(path, current=i)
    path.write_bytes(data[:100])
    with pytest.raises(hio.RecordingError, match=r"cut\.abf.*truncated or corrupt"):
        hio.read_abf(path)


# ---------------------------------------------------------------- NWB
def _nwb_file(identifier):
    from pynwb import NWBFile

    nwb = NWBFile(
        session_description="test",
        identifier=identifier,
        session_start_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    )
    device = nwb.create_device(name="amp")
    return nwb, nwb.create_icephys_electrode(name="e0", description="", device=device)


def _nwb(path, *, clamp="current", stimulus=True):
    from pynwb import NWBHDF5IO
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries, VoltageClampSeries

    nwb, electrode = _nwb_file("hhjax-test")
    t, v, i = _trace()
    for k in range(2):
        if clamp == "current":
            nwb.add_acquisition(
                CurrentClampSeries(
                    name=f"vm_{k}",
                    data=(v + k) * 1e-3,
                    electrode=electrode,
                    rate=10_000.0,
                    gain=1.0,
                    sweep_number=np.uint32(k),
                    conversion=1.0,
                    unit="volts",
                )
            )
        else:
            nwb.add_acquisition(
                VoltageClampSeries(
                    name=f"im_{k}",
                    data=i * 1e-12,
                    electrode=electrode,
                    rate=10_000.0,
                    gain=1.0,
                    sweep_number=np.uint32(k),
                )
            )
        if stimulus:
            nwb.add_stimulus(
                CurrentClampStimulusSeries(
                    name=f"stim_{k}",
                    data=(k + 1) * i * 1e-3,
                    electrode=electrode,
                    rate=10_000.0,
                    gain=1.0,
                    sweep_number=np.uint32(k),
                    conversion=1e-9,
                )
            )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return t, v, i


def test_nwb_current_clamp(tmp_path):
    path = tmp_path / "cell.nwb"
    t, v, i = _nwb(path)
    recs = hio.read(path)
    assert len(recs) == 2
    np.testing.assert_allclose(recs[1].v, v + 1, rtol=1e-12)
    # stored as nA with conversion 1e-9 (to amperes): back to pA
    np.testing.assert_allclose(recs[1].i_inj, 2 * i, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(recs[0].t, t, atol=1e-9)


def test_nwb_voltage_clamp_and_missing_stimulus(tmp_path):
    vc = tmp_path / "vc.nwb"
    _nwb(vc, clamp="voltage")
    with pytest.raises(hio.RecordingError, match=r"vc\.nwb.*voltage-clamp"):
        hio.read(vc)
    nostim = tmp_path / "nostim.nwb"
    _nwb(nostim, stimulus=False)
    with pytest.raises(hio.RecordingError, match=r"nostim\.nwb.*no injected current"):
        hio.read(nostim)
    bad = tmp_path / "bad.nwb"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(hio.RecordingError, match=r"bad\.nwb.*not a readable NWB"):
        hio.read(bad)


def test_area_gives_fitting_recording(tmp_path):
    fitting = pytest.importorskip("hhjax.fitting")
    if not hasattr(fitting, "Recording"):
        pytest.skip("hhjax.fitting has no Recording yet")
    t, v, i = _trace()
    path = tmp_path / "cell.npz"
    np.savez(path, t=t, v=v, i=i)
    (rec,) = hio.read(path, area=2e-4)
    assert isinstance(rec, fitting.Recording)
    np.testing.assert_allclose(np.asarray(rec.i_inj).max(), 50e-6 / 2e-4, rtol=1e-12)
    assert rec.metadata["sweep"] == 0 and rec.metadata["area_cm2"] == 2e-4
    (raw,) = hio.read(path)
    assert isinstance(raw.to_fitting(2e-4), fitting.Recording)


# ---------------------------------------------------------------- units, NaN, float32
def _nwb_wrong_units(path, *, conversion=1.0, rate=10_000.0):
    """A current-clamp NWB file of `_trace` in volts with a voltage `conversion` factor and a
    sampling `rate` (Hz) that are wrong for the data unless 1 and 10 kHz."""
    from pynwb import NWBHDF5IO
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries

    nwb, electrode = _nwb_file("hhjax-units")
    t, v, i = _trace()
    common = dict(electrode=electrode, rate=rate, gain=1.0, sweep_number=np.uint32(0))
    nwb.add_acquisition(
        CurrentClampSeries(name="vm", data=v * 1e-3, conversion=conversion, **common)
    )
    nwb.add_stimulus(CurrentClampStimulusSeries(name="stim", data=i * 1e-12, **common))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def _write_unit_cases(tmp_path, case):
    """A file (or constructor call) holding the `_trace` recording with seconds or volts given
    as ms or mV; returns `(read, read_unchecked)` callables."""
    t, v, i = _trace(2000)
    seconds = case.endswith("seconds")
    tt, vv = (t * 1e-3, v) if seconds else (t, v * 1e-3)
    kind = case.split("-")[0]
    if kind == "csv":
        path = tmp_path / "si.csv"
        path.write_text(
            "t,v,i\n" + "".join(f"{a:.17g},{b:.17g},{c:.17g}\n" for a, b, c in zip(tt, vv, i))
        )
    elif kind == "npz":
        path = tmp_path / "si.npz"
        np.savez(path, t=tt, v=vv, i=i)
    elif kind == "abf":
        import pyabf

        path = tmp_path / "si.abf"
        # Volts labelled mV, or a header sample rate 1000 x too high (times 1000 x too fine).
        rate, data = (10_000_000, v) if seconds else (10_000, vv)
        pyabf.abfWriter.writeABF1(data[None].astype(np.float32), str(path), rate, units="mV")
        return (lambda **k: hio.read(path, current=i, **k)), path
    elif kind == "nwb":
        path = tmp_path / "si.nwb"
        if seconds:
            _nwb_wrong_units(path, rate=10_000_000.0)
        else:
            _nwb_wrong_units(path, conversion=1e-3)  # a wrong conversion: volts x 1e-3
    elif kind == "io.Recording":
        return (lambda **k: [hio.Recording(tt, vv, i, **k)]), None
    return (lambda **k: hio.read(path, **k)), path


UNIT_CASES = [
    f"{kind}-{what}"
    for kind in ("csv", "npz", "abf", "nwb", "io.Recording")
    for what in ("seconds", "volts")
]


@pytest.mark.parametrize("case", UNIT_CASES)
def test_seconds_or_volts_read_as_ms_or_mv_are_refused(tmp_path, case):
    # Issue 14: CSV/NPZ in volts and seconds passed the readers (and `hhjax fit` "fitted"
    # them); a seconds axis was accepted and failed much later with a `window` error.
    read, path = _write_unit_cases(tmp_path, case)
    what = "seconds" if case.endswith("seconds") else "volts"
    field = "`t`" if what == "seconds" else "`v`"
    where = re.escape(path.name) + ".*" if path is not None else "Recording: "
    with pytest.raises(hio.RecordingError, match=rf"{where}{field}.*looks like {what}") as err:
        read()
    assert "check_units=False" in str(err.value)
    if case.startswith(("csv", "npz")):  # the reader's unit argument is named as the fix
        assert ("`t_unit='s'`" if what == "seconds" else "`v_unit='V'`") in str(err.value)
    (rec,) = read(check_units=False)  # data that really are that small can still be read
    assert rec.t.shape == rec.v.shape


def test_units_stated_to_the_reader_are_converted(tmp_path):
    t, v, i = _trace(2000)
    path = tmp_path / "si.npz"
    np.savez(path, t=t * 1e-3, v=v * 1e-3, i=i)
    (rec,) = hio.read_npz(path, t_unit="s", v_unit="V")
    np.testing.assert_allclose(rec.t, t, atol=1e-9)
    np.testing.assert_allclose(rec.v, v, rtol=1e-12)
    stated = tmp_path / "stated.npz"
    np.savez(stated, t=t * 1e-3, v=v, i=i, t_unit="s")
    with pytest.raises(hio.RecordingError, match=r"states t_unit='s' but `t_unit='ms'`"):
        hio.read_npz(stated, t_unit="ms")
    # An archive whose own t_unit entry is wrong is told to fix that entry.
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, t=t * 1e-3, v=v, i=i, t_unit="ms")
    with pytest.raises(hio.RecordingError, match=r"store t_unit='s' in the archive"):
        hio.read(wrong)


def test_fitting_recording_refuses_seconds_and_volts():
    fitting = pytest.importorskip("hhjax.fitting")
    t, v, i = _trace(2000)
    with pytest.raises(ValueError, match=r"`t` spans.*looks like seconds.*t_units='s'"):
        fitting.Recording(t * 1e-3, v, i * 1e-3)
    with pytest.raises(ValueError, match=r"`v` stays within.*looks like volts.*v_units='V'"):
        fitting.Recording(t, v * 1e-3, i * 1e-3)
    rec = fitting.Recording(t * 1e-3, v * 1e-3, i * 1e-3, t_units="s", v_units="V")
    np.testing.assert_allclose(np.asarray(rec.t), t, atol=1e-12)
    assert fitting.Recording(t * 1e-3, v, i * 1e-3, check_units=False).dt == pytest.approx(1e-4)


def test_csv_with_a_nan_row_names_the_line(tmp_path):
    # Issue 14: a CSV with a `nan` row was reported as "sample times are not increasing" (and,
    # with NaN in the voltage only, surfaced during the fit as "max_steps was reached").
    t, v, i = _trace(100)
    path = tmp_path / "gap.csv"
    rows = [f"{a:.17g},{b:.17g},{c:.17g}" for a, b, c in zip(t, v, i)]
    rows[41] = f"{t[41]:.17g},nan,{i[41]:.17g}"
    rows[60] = "nan,nan,nan"
    path.write_text("t,v,i\n\n" + "\n".join(rows) + "\n")  # a blank line shifts the numbering
    with pytest.raises(
        hio.RecordingError, match=r"gap\.csv: line 44: column 'v' is 'nan'.*2 such row"
    ):
        hio.read(path)


@pytest.mark.parametrize("field", ["t", "v", "i"])
def test_non_finite_samples_name_the_field(tmp_path, field):
    t, v, i = _trace()
    arrays = dict(t=t, v=v, i=i)
    arrays[field] = arrays[field].copy()
    arrays[field][123] = np.inf if field == "i" else np.nan
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    name = {"i": "i_inj"}.get(field, field)
    with pytest.raises(
        hio.RecordingError, match=rf"bad\.npz: sweep 0: `{name}` has 1 non-finite.*sample 123"
    ):
        hio.read(path)
    with pytest.raises(hio.RecordingError, match=rf"`{name}` has 1 non-finite"):
        hio.Recording(arrays["t"], arrays["v"], arrays["i"])


def test_float32_sample_times_are_accepted(tmp_path):
    # Issue 14: float32 times were rejected as "not uniformly sampled" (their rounding at
    # 1000 ms is ~1e-4 ms, far above the float64 tolerance).
    fitting = pytest.importorskip("hhjax.fitting")
    n, dt = 20_000, 0.05
    t32 = (np.arange(n) * dt).astype(np.float32)
    assert np.ptp(np.diff(t32.astype(np.float64))) > 1e-6 * dt  # the rounding is really there
    v = -65.0 + np.sin(np.arange(n) * dt)
    i = np.zeros(n)
    rec = fitting.Recording(t32, v, i)
    assert rec.dt == pytest.approx(dt, rel=1e-6) and rec.num_samples == n
    path = tmp_path / "f32.npz"
    np.savez(path, t=t32, v=v, i=i)
    (raw,) = hio.read(path)
    assert raw.t.dtype == np.float32 and raw.dt == pytest.approx(dt, rel=1e-6)
    assert isinstance(raw.to_fitting(1e-5), fitting.Recording)
    # A real gap in float32 times is still refused, and so is a grid float32 cannot resolve.
    gap = t32.copy()
    gap[n // 2 :] += np.float32(0.01)
    with pytest.raises(ValueError, match="uniformly sampled"):
        fitting.Recording(gap, v, i)
    late = (1e5 + np.arange(n) * dt).astype(np.float32)  # float32 steps of ~0.008 ms here
    with pytest.raises(ValueError, match=r"cannot resolve the .* spacing.*float64"):
        fitting.Recording(late, v, i)
