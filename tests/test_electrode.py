"""The recording model (hhjax.fitting.Electrode): a synthetic cell recorded through a known
series resistance, voltage offset and holding current is recovered; the series-resistance
estimate from the voltage jumps at the current's steps; and the errors of what cannot work.

Data: hhjax.simulate (Kvaerno5 at rtol = atol = 1e-9), not the fit's own RK4 sample-grid solver.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import hhjax
from hhjax import fitting as hf
from hhjax.models import Pospischil

R_S, OFFSET, HOLD = 15.0, 3.0, 20.0  # MΩ, mV, pA
DT = 0.05


def _cell_recording(truth, levels, seed=0, r_s=R_S, offset=OFFSET, hold=HOLD, noise=0.3):
    """Steps of `levels` (pA, 40 ms each with 20 ms gaps) through the recording model."""
    area = float(truth.area)
    t1 = 20.0 + 60.0 * len(levels)
    ts = np.round(np.arange(int(round(t1 / DT)) + 1) * DT, 10)
    i_pa = np.zeros_like(ts)
    for k, level in enumerate(levels):
        i_pa[(ts >= 20.0 + 60.0 * k) & (ts < 60.0 + 60.0 * k)] = level
    dens = (i_pa + hold) * 1e-6 / area
    traj = hhjax.simulate(truth, hhjax.Sampled(ts, dens, hold=True), float(ts[-1]), ts=ts,
                          y0=truth.rest_state(hold * 1e-6 / area), rtol=1e-9, atol=1e-9)
    v = np.asarray(traj.v) + r_s * i_pa * 1e-3 + offset
    v = v + noise * np.random.default_rng(seed).standard_normal(ts.size)  # 1 MΩ × 1 pA = 1e-3 mV
    return hf.Recording(ts, v, i_pa, i_units="pA", area=area)


def test_recording_model_is_recovered():
    """R_s within 5 % (the acceptance line), offset within 0.3 mV, holding current within
    2 pA, the cell's conductances within 2 %; the fit reaches the noise floor."""
    truth = Pospischil.regular_spiking().astype(jnp.float64)
    rec = _cell_recording(truth, (-60.0, 120.0, 250.0))
    assert len(hf.crossing_times(rec.t, rec.v)) >= 2  # the protocol makes the cell spike
    free = ("g_na", "g_kd", "g_m", "g_l", "c_m")
    p0 = truth.replace(g_na=float(truth.g_na) * 1.1, g_kd=float(truth.g_kd) * 0.9,
                       g_l=float(truth.g_l) * 1.2)
    res = hf.fit(rec, free, p0, electrode=hf.Electrode(offset=True, holding=True))
    e = res.electrode
    assert abs(e["r_s_mohm"] / R_S - 1) < 0.05, e
    assert abs(e["v_offset"] - OFFSET) < 0.3 and abs(e["i_hold_pA"] - HOLD) < 2.0, e
    for n in free:
        assert abs(res.values[n] / float(getattr(truth, n)) - 1) < 0.02, (n, res.values[n])
    assert res.at_noise_floor, res.summary()
    assert "R_s" in res.summary()


def test_series_resistance_from_onset_jumps():
    """The jumps at the steps give R_s to within 10 % or 1 MΩ (a start for the fit) at the
    shared files' noise (0.1 mV), with either sign (an over-compensated bridge), also when
    the response lags the command by a sample; 0 where the current never steps."""
    truth = Pospischil.regular_spiking()
    for r_s in (14.0, -5.0):
        rec = _cell_recording(truth, (-100.0, 100.0, -50.0, 50.0), r_s=r_s, hold=0.0,
                              noise=0.1)
        assert hf.estimate_series_resistance(rec) == pytest.approx(r_s, rel=0.1, abs=1.0)
        late = hf.Recording(rec.t, np.roll(np.asarray(rec.v), 1), rec.i_inj * rec.area * 1e6,
                            i_units="pA", area=rec.area)  # the response one sample late
        assert hf.response_lag(late.v, late.i_inj) == 1
        assert hf.estimate_series_resistance(late) == pytest.approx(r_s, rel=0.1, abs=1.0)
    ts = np.arange(200) * DT
    flat = hf.Recording(ts, -65.0 + 0.1 * np.sin(ts), np.zeros(200), i_units="pA", area=1e-4)
    assert hf.estimate_series_resistance(flat) == 0.0
    with pytest.raises(ValueError, match="read it with i_units='pA'"):
        hf.estimate_series_resistance(hf.Recording(ts, -65.0 + 0.1 * np.sin(ts), np.zeros(200)))
    with pytest.raises(ValueError, match="currents never step"):
        hf.fit(flat, ("g_l",), truth, electrode=hf.Electrode())
    with pytest.raises(TypeError, match="`electrode` must be"):
        hf.fit(flat, ("g_l",), truth, electrode="rs")
    with pytest.raises(ValueError, match="trace objective"):
        hf.fit(flat, ("g_l",), truth, electrode=hf.Electrode(), objective="spike-timing")


def test_fit_batch_reports_each_recordings_electrode():
    """fit_batch starts each member's R_s from its own jumps and reports it per member."""
    truth = Pospischil.regular_spiking().astype(jnp.float64)
    recs = [_cell_recording(truth, (-60.0, 60.0), seed=s, r_s=r, hold=0.0, offset=0.0)
            for s, r in ((1, 10.0), (2, 20.0))]
    res = hf.fit_batch(recs, ("g_l", "c_m"), truth, electrode=hf.Electrode(), max_iter=8)
    for r, want in zip(res, (10.0, 20.0)):
        assert abs(r.electrode["r_s_mohm"] / want - 1) < 0.05, r.electrode


def test_bridge_error_with_a_time_constant():
    """The filtered bridge error against a direct loop of its definition; a vanishing time
    constant gives the instantaneous R_s I."""
    from hhjax.fitting._core import _bridge_error

    i = np.repeat([0.0, -1.0, 2.0, 0.5], 25)
    rho, tau, dt = 3.0, 0.04, 0.05
    want = [rho * i[0]]
    for x in i[1:]:
        want.append(rho * x + (want[-1] - rho * x) * np.exp(-dt / tau))
    got = np.asarray(_bridge_error(rho, jnp.asarray(tau), jnp.asarray(i), dt))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    fast = np.asarray(_bridge_error(rho, jnp.asarray(1e-6), jnp.asarray(i), dt))
    np.testing.assert_allclose(fast, rho * i, atol=1e-6)
