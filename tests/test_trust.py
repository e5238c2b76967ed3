"""Trust: the cases reported in the trust issue, each reproduced and now answered correctly.

Gradients are checked against an independent route (the implicit Kvaerno5 solve, and central
finite differences), failures against the rule "an error or `ok=False`, never a NaN result".
"""

from __future__ import annotations

import time
import warnings

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hhjax
from hhjax import kinetics


# --------------------------------------------------------------------------- NaN gradients
def _first_spike(p, stim, solver=None, t1=12.0):
    traj = hhjax.simulate(p, stim, t1=t1, solver=solver)
    return hhjax.spike_times(traj.ts, traj.v, max_spikes=1)[0]


@pytest.mark.parametrize("amplitude", [50.0, 100.0])
def test_first_spike_gradient_is_finite_and_matches_finite_differences(amplitude):
    """The README example at 50 and 100 µA/cm² gave NaN for every field (a rejected Tsit5 stage
    at -125,000 mV overflowed an exponential: 0 cotangent x inf = NaN). The issue's own
    cross-check, the implicit Kvaerno5 gradient, was -0.00152 for g_na at 50 µA/cm²."""
    p = hhjax.HHParams.neuron()
    stim = hhjax.Step(amplitude=amplitude, start=5.0)
    grad = jax.grad(_first_spike)(p, stim)
    assert all(np.isfinite(v) for v in grad.to_dict().values()), grad.to_dict()
    if amplitude == 50.0:
        assert float(grad.g_na) == pytest.approx(-0.00152, abs=1e-5)
    for name, h in (("g_na", 1e-3), ("c_m", 1e-5), ("g_l", 1e-5)):
        value = float(getattr(p, name))
        up = float(_first_spike(p.replace(**{name: value + h}), stim))
        down = float(_first_spike(p.replace(**{name: value - h}), stim))
        fd = (up - down) / (2 * h)
        # Spike times good to ~1e-9 ms at rtol 1e-8: the difference quotient to ~1e-5.
        assert float(getattr(grad, name)) == pytest.approx(fd, rel=2e-3, abs=1e-6), name


def test_voltage_loss_gradients_finite_in_reported_cases():
    """Mean-squared-voltage loss: Step(50, 5, 7) on HHParams() (NaN in every field), 37 °C
    starting at >= 60 mV (NaN), float32 at 100 µA/cm² (NaN)."""

    def loss(p, stim, y0=None):
        return jnp.mean(hhjax.simulate(p, stim, 15.0, y0=y0).v ** 2)

    cases = [
        (hhjax.HHParams(), hhjax.Step(50.0, 5.0, 7.0), None),
        (hhjax.HHParams.neuron().astype(jnp.float32), hhjax.Step(100.0, 5.0), None),
    ]
    for v0 in (60.0, 150.0):
        p = hhjax.HHParams(temperature=37.0)
        cases.append((p, None, hhjax.steady_state(p, v0)))
    for p, stim, y0 in cases:
        g = jax.grad(loss)(p, stim, y0)
        assert all(np.isfinite(v) for v in g.to_dict().values()), g.to_dict()


def test_voltage_loss_gradient_matches_finite_differences():
    p = hhjax.HHParams()
    stim = hhjax.Step(50.0, 5.0, 7.0)

    def loss(g_na):
        return jnp.mean(hhjax.simulate(p.replace(g_na=g_na), stim, 30.0).v ** 2)

    g = float(jax.grad(loss)(jnp.asarray(120.0)))
    h = 1e-3
    fd = (float(loss(120.0 + h)) - float(loss(120.0 - h))) / (2 * h)
    assert abs(g - fd) <= 1e-4 * abs(fd), (g, fd)


def test_gradient_finite_after_a_strong_edge():
    """Found by the property suite: the first step after a -111 µA/cm² edge is sized for the
    dynamics before it; its rejected stages reach 1e144 mV, where m³·h·(v - E) overflows, and
    the backward pass gave NaN for every field. Checked against central differences."""
    p = hhjax.HHParams(g_na=0.5, g_k=0.0, g_l=15.100157, e_na=60.0, e_k=-35.443863,
                       e_l=-17.944244, temperature=1.0, v_ref=0.0)
    stim = hhjax.Pulses([-111.48575271], [2.99904071], 0.54604915)
    y0 = hhjax.HHState(*(jnp.asarray(x) for x in (0.5460492, 0.05644092, 0.57690436, 0.32607698)))

    def loss(g_l):
        traj = hhjax.simulate(p.replace(g_l=g_l), stim, 4.0, y0=y0, dt_save=0.05)
        return jnp.mean((traj.v / 100.0) ** 2) + jnp.mean(traj.m + traj.h + traj.n)

    g = float(jax.grad(loss)(jnp.asarray(15.100157)))
    h = 1e-3
    fd = (float(loss(15.100157 + h)) - float(loss(15.100157 - h))) / (2 * h)
    assert np.isfinite(g) and abs(g - fd) <= 1e-4 * abs(fd), (g, fd)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_rates_and_their_gradients_are_finite_at_any_voltage(dtype):
    """The vector field is total: wild trial states inside rejected steps cannot overflow."""
    u = jnp.asarray([-1e6, -1e5, -1e4, -500.0, -100.0, 0.0, 10.0, 25.0, 200.0, 1e4], dtype)
    for rate in (kinetics.alpha_m, kinetics.beta_m, kinetics.alpha_h, kinetics.beta_h,
                 kinetics.alpha_n, kinetics.beta_n):
        values = rate(u)
        grads = jax.vmap(jax.grad(rate))(u)
        assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads)), rate.__name__
        assert values.dtype == dtype


def test_exp_safe_is_exact_below_its_cap_and_linear_above():
    x = jnp.linspace(-700.0, kinetics.EXP_CAP, 1001)
    np.testing.assert_array_equal(kinetics.exp_safe(x), jnp.exp(x))
    e = np.exp(kinetics.EXP_CAP)
    assert float(kinetics.exp_safe(kinetics.EXP_CAP + 3.0)) == pytest.approx(4.0 * e, rel=1e-12)
    assert float(jax.grad(kinetics.exp_safe)(kinetics.EXP_CAP + 3.0)) == pytest.approx(e)


def test_cortical_model_gradient_is_finite_under_a_strong_step():
    p = hhjax.models.Pospischil.regular_spiking()

    def loss(p):
        traj = hhjax.simulate(p, hhjax.Step(60.0, 5.0), 15.0)
        return jnp.mean(traj.v**2)

    g = jax.grad(loss)(p)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(g))


@pytest.mark.parametrize("dtype", [jnp.float32])  # float64 gave 4e24: the same cause
def test_gradient_from_rest_is_the_rest_state_sensitivity(dtype):
    """Found by a Hypothesis run over the cortical family: at rest the error estimate is zero,
    the step grew to 1 ms, beyond the explicit solver's stability for the rest eigenvalue
    (-13 /ms), and the derivatives (carried by the linearisation) grew every step: d<v>/dg_l
    was 4e24 after 12 ms in float64 and NaN in float32. With no stimulus the trajectory is the
    rest state, so the exact answer is the rest state's own derivative."""
    p = hhjax.models.Pospischil.low_threshold(g_na=12.5, g_kd=1.0, g_l=0.00475, c_m=0.25)
    p = p.astype(dtype)
    g = jax.grad(lambda q: jnp.mean(hhjax.simulate(q, None, 12.0).v))(p)
    ref = jax.grad(lambda q: q.rest_state().v)(p)
    rel = 1e-4 if dtype == jnp.float32 else 1e-8
    for name in ("g_l", "g_na", "g_cat", "e_l"):
        assert float(getattr(g, name)) == pytest.approx(float(getattr(ref, name)), rel=rel), name


# --------------------------------------------------------------------------- failures
def test_unstable_fixed_step_is_a_failure_not_a_result():
    """Euler at dt0 = 0.3 ms: ok=True with 47 of 68 samples NaN before."""
    p, stim = hhjax.HHParams(), hhjax.Step(10.0, 2.0)
    traj = hhjax.simulate(p, stim, 20.0, solver=diffrax.Euler(), dt0=0.3, throw=False)
    assert not bool(traj.ok)
    assert traj.result == hhjax.RESULTS.nonfinite_state
    with pytest.raises(hhjax.SimulationError, match="non-finite.*dt0"):
        hhjax.simulate(p, stim, 20.0, solver=diffrax.Euler(), dt0=0.3)
    # The same solver at a stable step succeeds.
    assert bool(hhjax.simulate(p, stim, 20.0, solver=diffrax.Euler(), dt0=0.01).ok)


def test_batched_simulate_flags_only_the_failing_neuron():
    p = hhjax.HHParams(c_m=jnp.asarray([1.0, 0.01]))  # the second is unstable at dt0 0.02
    traj = hhjax.simulate(p, hhjax.Step(10.0, 2.0), 10.0, solver=diffrax.Euler(), dt0=0.02,
                          throw=False)
    np.testing.assert_array_equal(np.asarray(traj.ok), [True, False])


def test_no_rest_state_is_named_before_solving():
    """All conductances 0: rest_state is NaN, reported as 'max_steps reached' after seconds."""
    p = hhjax.HHParams(g_na=0.0, g_k=0.0, g_l=0.0)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="no resting state.*y0"):
        hhjax.simulate(p, 1.0, 10.0)
    assert time.perf_counter() - start < 20.0  # an eager check, not a stalled solve
    # With y0 given, a pure capacitor charges linearly: dv/dt = I / C.
    traj = hhjax.simulate(p, 1.0, 10.0, y0=hhjax.steady_state(hhjax.HHParams(), -65.0))
    assert float(traj.v[-1]) == pytest.approx(-55.0, abs=1e-6)


@pytest.mark.parametrize("field", ["v", "m"])
def test_non_finite_y0_is_named(field):
    y0 = dict(v=-65.0, m=0.05, h=0.6, n=0.3)
    y0[field] = np.nan
    with pytest.raises(ValueError, match=f"y0.{field}"):
        hhjax.simulate(hhjax.HHParams(), None, 5.0, y0=hhjax.HHState(**y0))


def test_max_steps_must_be_positive():
    with pytest.raises(ValueError, match="max_steps"):
        hhjax.simulate(hhjax.HHParams(), None, 5.0, max_steps=-1)


def test_simulate_batch_has_a_per_neuron_failure_flag():
    """A neuron with no rest state became '0 spikes' with a NaN final state before."""
    p = hhjax.HHParams(g_na=jnp.asarray([120.0, 0.0]), g_k=jnp.asarray([36.0, 0.0]),
                       g_l=jnp.asarray([0.3, 0.0]))
    with pytest.warns(RuntimeWarning, match="1 of 2 neuron"):
        out = hhjax.simulate_batch(p, 10.0, 50.0)
    np.testing.assert_array_equal(np.asarray(out.ok), [True, False])
    assert np.isfinite(out.rate[0]) and out.spike_count[0] > 0
    assert np.isnan(out.rate[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bool(np.all(hhjax.simulate_batch(hhjax.HHParams(), 10.0, 50.0).ok))


@pytest.mark.parametrize("y0", [(-65.0, 5.0, 0.6, 0.3), (np.nan, 0.05, 0.6, 0.3)])
def test_simulate_batch_checks_y0_like_simulate(y0):
    with pytest.raises(ValueError, match="y0"):
        hhjax.simulate_batch(hhjax.HHParams(), 10.0, 50.0, y0=y0)


def test_value_and_grad_forward_names_the_adjoint_it_needs():
    f = lambda p: jnp.mean(hhjax.simulate(p, hhjax.Step(10.0, 2.0), 5.0).v)
    with pytest.raises(TypeError, match="ForwardMode"):
        hhjax.value_and_grad_forward(f)(hhjax.HHParams())


# --------------------------------------------------------------------------- compilation
def test_a_new_t1_reuses_the_compiled_solve():
    """Every new t1 recompiled simulate (2.5 s each)."""
    from hhjax import _simulate

    cache = getattr(getattr(_simulate._solve, "_cached", None), "_cache_size", None)
    if cache is None:
        pytest.skip("this equinox version does not expose the jit cache size")
    p, stim = hhjax.HHParams(), hhjax.Step(10.0, 2.0)
    hhjax.simulate(p, stim, 30.0)
    before = cache()
    for t1 in (29.0, 30.5, 31.0):  # one padded length (1280 samples) serves all three
        traj = hhjax.simulate(p, stim, t1)
        assert traj.ts.shape == (round(t1 / 0.025) + 1,) and float(traj.ts[-1]) == t1
    assert cache() == before


# --------------------------------------------------------------------------- spike thresholds
def test_default_threshold_follows_the_model_convention():
    """squid_1952 rests at 0 mV: a 0-mV threshold counted subthreshold bumps (10 Hz at 2)."""
    squid = hhjax.HHParams.squid_1952()
    assert float(squid.spike_threshold) == 65.0
    assert float(hhjax.HHParams.neuron().spike_threshold) == 0.0
    assert float(hhjax.models.Pospischil.regular_spiking().spike_threshold) == 0.0
    fi = hhjax.fi_curve(squid, [2.0, 10.0], duration=200.0)
    modern = hhjax.fi_curve(hhjax.HHParams(), [2.0, 10.0], duration=200.0)
    # The two conventions are the same membrane shifted by 65 mV: the same rates.
    np.testing.assert_array_equal(np.asarray(fi.rates), np.asarray(modern.rates))
    assert float(fi.rates[0]) == 0.0 and float(fi.rates[1]) > 50.0
    batch = hhjax.simulate_batch(squid, jnp.asarray([2.0, 10.0]), 200.0)
    np.testing.assert_array_equal(np.asarray(batch.spike_count), np.asarray(fi.counts))
    times = hhjax.spike_times_adaptive(squid, 10.0, 50.0).times
    shifted = hhjax.spike_times_adaptive(hhjax.HHParams(), 10.0, 50.0).times
    # Same crossings up to the adaptive solves' own error (different rounding in the two frames).
    np.testing.assert_allclose(np.asarray(times[:3]), np.asarray(shifted[:3]), atol=1e-3)


def test_fi_curve_failure_is_an_error_not_a_rate():
    with pytest.raises(hhjax.SimulationError, match="fi_curve.*10.0"):
        hhjax.fi_curve(hhjax.HHParams(), [2.0, 10.0], duration=20.0, solver=diffrax.Euler(),
                       dt0=0.3)


@pytest.mark.parametrize(("span", "dt"), [(1000.0, 0.05), (5000.0, 0.05), (10000.0, 0.02)])
def test_float32_times_of_long_sweeps_are_accepted(span, dt):
    """float32 times were refused as "not uniformly sampled" (and then for sweeps over 1 s)."""
    t = (np.arange(round(span / dt) + 1) * dt).astype(np.float32)
    v = (-65.0 + 5.0 * np.sin(t / 10.0)).astype(np.float32)
    rec = hhjax.fitting.Recording(t, v, np.zeros_like(t))
    assert rec.dt == pytest.approx(dt, rel=1e-6)
