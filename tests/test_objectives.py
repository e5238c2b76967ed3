"""The spike objectives of the fitting engine (SpikeFeatures, SpikeTiming) and its population
solver (CrossEntropy): their gradients against central differences for both model families,
a spike-timing fit of data from an independent scipy solve, and the errors of configurations
that cannot work.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import hh_rhs, radau_piecewise

import hhjax
from hhjax import fitting as hf
from hhjax.fitting._free import FreeParams
from hhjax.fitting._objectives import make_loss, prepare
from hhjax.models import Pospischil

DT = 0.025


def _step(t1, on, off, level, dt=DT):
    ts = np.round(np.arange(int(round(t1 / dt)) + 1) * dt, 10)
    return ts, np.where((ts >= on) & (ts < off), level, 0.0)


def _recording(p, ts, i, **kw):
    traj = hhjax.simulate(p, hhjax.Sampled(ts, i, hold=True), float(ts[-1]), ts=ts,
                          y0=p.rest_state(0.0))
    return np.asarray(traj.v)


def _fd_check(loss, theta, coords, h=1e-6, rtol=2e-4):
    grad = np.asarray(jax.grad(loss)(theta))
    for k in range(theta.shape[0]):
        e = jnp.zeros_like(theta).at[k].set(h)
        fd = (float(loss(theta + e)) - float(loss(theta - e))) / (2 * h)
        assert abs(grad[k] - fd) <= rtol * max(abs(fd), 1e-3 * np.max(np.abs(grad))), (
            coords[k], grad[k], fd)


@pytest.mark.parametrize("family", ["hh", "cortical"])
def test_spike_timing_gradient_vs_finite_differences(family):
    """Spike times interpolated between steps are differentiable while the counts agree; for
    the cortical model the recording is in pA and the model's own area is free."""
    if family == "hh":
        p = hhjax.HHParams().astype(jnp.float64)
        ts, i = _step(60.0, 5.0, 55.0, 10.0)
        rec = hf.Recording(ts, _recording(p, ts, i), i)
        free = ("g_na", "g_k", "g_l", "e_l", "c_m")
    else:
        p = Pospischil.regular_spiking().astype(jnp.float64)
        area = float(p.area)
        ts, i_pa = _step(150.0, 10.0, 140.0, 200.0)
        v = _recording(p, ts, i_pa * 1e-6 / area)
        rec = hf.Recording(ts, v, i_pa, i_units="pA", area=area)
        free = ("g_na", "g_kd", "v_t", "g_m", "area")
    obj = hf.SpikeTiming(dt=DT)
    spec = FreeParams.make(free, p)
    # Off the truth (5 % on every field), where the model's spikes are displaced but counted
    # the same: the timing term then carries the whole gradient.
    theta = spec.to_theta(spec.values(p)) + 0.05 * jnp.log(1.05) * jnp.arange(len(spec)) / len(
        spec)
    loss, smooth = make_loss(obj, prepare(obj, [rec]), spec, p)
    assert smooth is loss
    n_data = len(prepare(obj, [rec])[0].spikes)
    assert n_data >= 2
    value = float(jax.jit(loss)(theta))
    assert 0.0 < value < 10.0  # the counts agree (a miscount alone would cost 10)
    _fd_check(jax.jit(loss), theta, spec.coords)


@pytest.mark.parametrize("family", ["hh", "cortical"])
def test_features_smooth_part_gradient_vs_finite_differences(family):
    """The part of the features loss the polish follows (the subthreshold recordings'
    traces) against central differences, with a spiking recording beside it."""
    if family == "hh":
        p = hhjax.HHParams().astype(jnp.float64)
        recs = []
        for level in (1.0, 10.0):
            ts, i = _step(60.0, 5.0, 55.0, level)
            recs.append(hf.Recording(ts, _recording(p, ts, i) + 0.2, i))
        free = ("g_l", "e_l", "c_m", "g_k")
    else:
        p = Pospischil.regular_spiking().astype(jnp.float64)
        area = float(p.area)
        recs = []
        for level in (-50.0, 200.0):
            ts, i_pa = _step(150.0, 10.0, 140.0, level)
            recs.append(hf.Recording(ts, _recording(p, ts, i_pa * 1e-6 / area) + 0.2, i_pa,
                                     i_units="pA", area=area))
        free = ("area", "g_l", "e_l", "g_m")
    obj = hf.SpikeFeatures(dt=DT)
    spec = FreeParams.make(free, p)
    theta = spec.to_theta(spec.values(p)) * 1.01
    preps = prepare(obj, recs)
    assert [q.feats.count > 0 for q in preps] == [False, True]
    loss, smooth = make_loss(obj, preps, spec, p)
    assert float(smooth(theta)) < float(loss(theta))
    _fd_check(jax.jit(smooth), theta, spec.coords)


def test_spike_timing_fit_recovers_spike_times():
    """Data from scipy Radau (rtol = atol = 1e-10): HH with g_Na, g_K 15 % off the truth
    fires its 4 spikes early; the spike-timing fit (cross-entropy search,
    then the gradient polish) brings every spike within 0.05 ms."""
    truth = hhjax.HHParams().replace(g_na=110.0, g_k=33.0).astype(jnp.float64)
    ts, i = _step(60.0, 5.0, 55.0, 10.0)
    f = hh_rhs(**{k: float(getattr(truth, k)) for k in
                  ("g_na", "g_k", "g_l", "e_na", "e_k", "e_l", "c_m", "v_ref")},
               current=lambda t: 10.0 if 5.0 <= t < 55.0 else 0.0)
    y0 = [float(x) for x in jax.tree_util.tree_leaves(truth.rest_state(0.0))]
    v = radau_piecewise(f, y0, np.array([0.0, 5.0, 55.0, 60.0]), ts)[0]
    rec = hf.Recording(ts, v, i)
    start = truth.replace(g_na=110.0 * 1.15, g_k=33.0 * 0.85)
    res = hf.fit(rec, ("g_na", "g_k"), start, objective="spike-timing",
                 solver=hf.CrossEntropy(population=48, generations=6, polish_steps=30,
                                        scale={"g_na": 0.15, "g_k": 0.15}))
    data_spikes = hf.crossing_times(ts, v)
    model_spikes = hf.crossing_times(ts, np.asarray(res.trace.v))
    assert len(data_spikes) == len(model_spikes) == 4
    assert np.max(np.abs(model_spikes - data_spikes)) < 0.05
    assert res.objective == "spike-timing" and res.method == "cem"
    assert res.stages[:2] == ("guess", "cem") and np.isnan(res.stderr["g_na"])
    assert res.loss == pytest.approx(res.loss_history[-1]) or res.loss < res.loss_history[-1]


def test_stimulus_epoch_of_a_noisy_recorded_current():
    """A recorded current channel with noise: the epoch is the step, not the first noise
    sample."""
    rng = np.random.default_rng(0)
    ts, i = _step(100.0, 20.0, 70.0, 100.0)
    on, off = hf.stimulus_epoch(i + rng.normal(0.0, 2.0, i.shape), ts)
    assert abs(on - 20.0) <= DT and abs(off - 70.0) <= DT


def test_spike_objective_configuration_errors():
    p = hhjax.HHParams()
    ts, i = _step(30.0, 5.0, 25.0, 10.0)
    rec = hf.Recording(ts, _recording(p, ts, i), i)
    free = ("g_na", "g_k")
    with pytest.raises(ValueError, match="solved by CrossEntropy"):
        hf.fit(rec, free, p, objective=hf.SpikeFeatures(), solver=hf.LevenbergMarquardt())
    with pytest.raises(ValueError, match="solved by CrossEntropy"):
        hf.fit(rec, free, p, objective="spike-timing", method="optax")
    with pytest.raises(ValueError, match="CrossEntropy serves"):
        hf.fit(rec, free, p, solver=hf.CrossEntropy())
    with pytest.raises(ValueError, match="`objective` must be"):
        hf.fit(rec, free, p, objective="spikes")
    with pytest.raises(ValueError, match=r"`objective.dt` must be a positive"):
        hf.fit(rec, free, p, objective=hf.SpikeTiming(dt=0.0))
    with pytest.raises(ValueError, match="`objective.rearm`"):
        hf.fit(rec, free, p, objective=hf.SpikeFeatures(threshold=-20.0, rearm=0.0))
    with pytest.raises(ValueError, match="starts from `params0`"):
        hf.fit(rec, free, p, objective="features", init="linear")
    with pytest.raises(ValueError, match="`solver.population` must be at least 2"):
        hf.fit(rec, free, p, objective="features", solver=hf.CrossEntropy(population=1))
    flat = hf.Recording(ts, _recording(p, ts, np.zeros_like(i)), np.zeros_like(i))
    with pytest.raises(ValueError, match=r"`recordings\[1\]`: the injected current never"):
        hf.fit([rec, flat], free, p, objective="features")


def test_adaptive_threshold_on_a_coarse_trace_peaking_below_zero():
    """A regular-spiking cell sampled at 4 kHz and recorded 30 mV low (an uncorrected
    junction potential and offset): every spike peaks below 0 mV. The fixed 0-mV threshold
    finds none; `threshold="auto"` finds the spikes a 100-kHz trace shows at -20 mV, and a
    features objective built on it counts them."""
    p = Pospischil.regular_spiking().replace(e_na=5.0, g_na=80.0)
    area = float(p.area)
    dt = 0.25
    ts = np.round(np.arange(int(400 / dt) + 1) * dt, 10)
    i_pa = np.where((ts >= 50.0) & (ts < 350.0), 200.0, 0.0)
    stim = hhjax.Sampled(ts, i_pa * 1e-6 / area, hold=True)
    v = np.asarray(hhjax.simulate(p, stim, float(ts[-1]), ts=ts, y0=p.rest_state(0.0)).v) - 30.0
    fine_t = np.arange(0.0, 400.0, 0.01)
    fine = np.asarray(hhjax.simulate(p, stim, float(ts[-1]), ts=fine_t, y0=p.rest_state(0.0)).v)
    n_true = len(hf.crossing_times(fine_t, fine, -20.0, -40.0))
    assert n_true >= 5 and v.max() < 0.0
    assert len(hf.crossing_times(ts, v)) == 0
    assert len(hf.crossing_times(ts, v, "auto")) == n_true
    thr, rearm = hf.adaptive_threshold(ts, v)
    assert rearm < thr < 0.0
    rec = hf.Recording(ts, v, i_pa, i_units="pA", area=area)
    prep = prepare(hf.SpikeFeatures(threshold="auto", dt=dt), [rec])[0]
    assert prep.feats.count == n_true and prep.threshold == pytest.approx(thr)
    flat = np.full(200, -65.0) + 0.2 * np.sin(np.arange(200))
    assert len(hf.crossing_times(np.arange(200) * dt, flat, "auto")) == 0
    # A hyperpolarising step and the return to rest after it (30 mV, slow) are no spikes.
    i_neg = np.where((ts >= 50.0) & (ts < 250.0), -300.0, 0.0)
    stim = hhjax.Sampled(ts, i_neg * 1e-6 / area, hold=True)
    down = np.asarray(hhjax.simulate(p, stim, float(ts[-1]), ts=ts, y0=p.rest_state(0.0)).v)
    down = down + 0.1 * np.random.default_rng(0).standard_normal(down.size)
    assert np.ptp(down) > 20.0 and len(hf.crossing_times(ts, down, "auto")) == 0
    with pytest.raises(ValueError, match="'auto'"):
        hf.crossing_times(ts, v, "adaptive")
