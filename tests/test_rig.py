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


def test_one_reading_of_a_currents_steps_serves_every_path():
    """A recorded current with noise (5 pA), a -20 pA holding current, a small test pulse
    (-4 pA, 4 % of the main step) and a 100-pA step through 12 MΩ of uncompensated series
    resistance: `current_steps` finds the holding level, the noise and only the main step's
    edges; the step window, the stimulus epoch and the series-resistance estimate all follow
    it. (Before the one reading, the R_s estimate took every noise jump over 5 % of the
    largest as a step, 5,914 of them, and gave 0.39 MΩ here; the holding level was -21.2.)"""
    dt, rs = 0.05, 12.0  # ms, MΩ
    t = np.round(np.arange(int(600 / dt)) * dt, 10)
    command = -20.0 + np.where((t >= 20.0) & (t < 40.0), -4.0, 0.0) + np.where(
        (t >= 100.0) & (t < 400.0), 100.0, 0.0)
    i = command + 5.0 * np.random.default_rng(1).standard_normal(t.size)
    # The membrane charges slowly (tau 20 ms, 100 MΩ); the bridge adds R_s * (I - holding),
    # of the command (the amplifier injects the command; the channel records it with noise).
    tau, r_in = 20.0, 100.0
    v = np.empty_like(t)
    v[0] = -65.0
    for k in range(1, t.size):
        v[k] = v[k - 1] + dt / tau * (-65.0 + 1e-3 * r_in * (command[k - 1] + 20.0) - v[k - 1])
    v = v + 1e-3 * rs * (command + 20.0)  # pA × MΩ = µV
    steps = hf.current_steps(i)
    assert steps.holding == pytest.approx(-20.0, abs=1.0)
    assert steps.noise == pytest.approx(5.0, rel=0.1)
    np.testing.assert_array_equal(steps.edges, [int(100 / dt) - 1, int(400 / dt) - 1])
    sw = hf.step_sweep(hio.Recording(t, v, i))
    assert sw.amplitude == pytest.approx(100.0, abs=1.0)  # the main step, not the test pulse
    assert sw.t_off - sw.t_on == pytest.approx(300.0, abs=0.1)
    on, off = hf.stimulus_epoch(i, t)
    assert (on, off) == pytest.approx((100.0, 400.0), abs=0.1)
    rec = hf.Recording(t, v, i, i_units="pA", area=1e-4)
    assert hf.estimate_series_resistance(rec) == pytest.approx(rs, rel=0.1)
    # A constant current has no steps; a 1-sample current is refused with its shape named.
    assert hf.current_steps(np.full(100, -20.0)).edges.size == 0
    with pytest.raises(ValueError, match="1-D current"):
        hf.current_steps([1.0])
