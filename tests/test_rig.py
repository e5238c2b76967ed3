"""Recordings as they come off a rig: a recorded (noisy) current channel with a holding
current, and archives whose arrays have their own names."""

import numpy as np
import pytest

from hhjax import fitting as hf
from hhjax import io as hio


def _noisy_step(holding=-20.0, amp=100.0, noise=5.0, dt=0.05, seed=0):
    t = np.round(np.arange(int(600 / dt)) * dt, 10)
    i = holding + np.where((t >= 100.0) & (t < 400.0), amp, 0.0)
    i = i + noise * np.random.default_rng(seed).standard_normal(t.size)
    v = -65.0 + 0.05 * (i - holding)
    return t, v, i


def test_step_sweep_finds_the_step_of_a_noisy_recorded_current():
    t, v, i = _noisy_step()
    sw = hf.step_sweep(hio.Recording(t, v, i))
    assert sw.t_on == pytest.approx(100.0, abs=0.05) and sw.t_off - sw.t_on == pytest.approx(
        300.0, abs=0.1)
    assert sw.amplitude == pytest.approx(100.0, abs=1.0)
    assert sw.holding == pytest.approx(-20.0, abs=1.0)
    # The recording a fit sees carries the holding current, not a zero baseline.
    rec = hf.step_recording(sw, 1e-4)
    assert float(rec.i_inj[0]) == pytest.approx(-20.0 * 1e-6 / 1e-4, rel=0.05)
    # A clean command from zero keeps the exact edges and amplitude.
    clean = hf.step_sweep(hio.Recording(t, v, np.where((t >= 100.0) & (t < 400.0), 50.0, 0.0)))
    assert (clean.amplitude, clean.holding) == (50.0, 0.0)
    assert clean.t_off - clean.t_on == pytest.approx(300.0, abs=1e-9)
    # Noise alone is no step.
    quiet = -20.0 + np.random.default_rng(3).normal(0.0, 5.0, t.size)
    assert hf.step_sweep(hio.Recording(t, v, quiet)) is None


def test_read_npz_with_named_arrays(tmp_path):
    t, v, i = _noisy_step()
    np.savez(tmp_path / "cell.npz", time=t, vm=v, iinj=i)
    recs = hio.read_npz(tmp_path / "cell.npz", t_key="time", v_key="vm", i_key="iinj")
    assert len(recs) == 1 and np.allclose(recs[0].v, v)
    with pytest.raises(hio.RecordingError, match="name it with `i_key=`"):
        hio.read_npz(tmp_path / "cell.npz")
    fitted = recs[0].to_fitting(1e-4)
    assert fitted.area == 1e-4  # a pA current keeps its area for the recording model
