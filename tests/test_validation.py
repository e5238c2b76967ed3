"""Input validation (issue 14, items 4 and 7): parameters, stimuli and spike features.

Each bad input below used to be accepted (and then simulated as NaN, zero current, "no spikes",
a NaN or -0 rate, or a deep NumPy/JAX traceback); each must now raise a clear error naming the
class or function and the argument at fault, before anything is solved. Valid edge cases and
traced values must still pass.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hhjax
from hhjax import _features
from hhjax._stimulus import SumStimulus, as_stimulus
from hhjax.models import KdTraub, MSlow, NaTraub, Pospischil

NAN, INF = float("nan"), float("inf")
KEY = jax.random.PRNGKey(0)


# ---------------------------------------------------------------------------- stimuli
@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: hhjax.Sampled([0.0, 1.0, 2.0], [0.0, NAN, 1.0]), ValueError,
         r"Sampled: `values` must be finite, got nan at index 1"),
        (lambda: hhjax.Sampled([0.0, 1.0, INF], [0.0, 0.0, 1.0]), ValueError,
         r"Sampled: `ts` must be finite"),
        (lambda: hhjax.Sampled([0.0, 1.0, 2.0], [0.0, 1j, 1.0]), TypeError,
         r"Sampled: `values` must be real"),
        (lambda: hhjax.Sampled([0.0, 1.0], [0.0, 1.0], jumps=[NAN]), ValueError,
         r"Sampled: `jumps` must be finite"),
        (lambda: hhjax.Step(NAN), ValueError, r"Step: `amplitude` must be finite"),
        (lambda: hhjax.Step(INF), ValueError, r"Step: `amplitude` must be finite"),
        (lambda: hhjax.Step(1.0, start=NAN), ValueError, r"Step: `start` must be finite or -inf"),
        (lambda: hhjax.Step(1.0, start=INF), ValueError, r"Step: `start` must be finite or -inf"),
        (lambda: hhjax.Step(1.0, stop=NAN), ValueError, r"Step: `stop` must be finite or \+inf"),
        (lambda: hhjax.Step(1.0 + 2.0j), TypeError, r"Step: `amplitude` must be real"),
        (lambda: hhjax.Step(True), TypeError, r"Step: `amplitude` must be a real number"),
        (lambda: hhjax.Step(jnp.ones(3), start=jnp.zeros(4)), ValueError,
         r"Step: .*amplitude \(3,\), start \(4,\)"),
        (lambda: SumStimulus((hhjax.Step(1.0), 2.0)), TypeError,
         r"SumStimulus: every term must be a stimulus.*got float"),
        (lambda: hhjax.OUNoise(0.0, NAN, 1.0, 0.0, 10.0, key=KEY), ValueError,
         r"OUNoise: `sigma` must be finite"),
        (lambda: hhjax.OUNoise(NAN, 1.0, 1.0, 0.0, 10.0, key=KEY), ValueError,
         r"OUNoise: `mean` must be finite"),
        (lambda: hhjax.OUNoise(0.0, 1.0, NAN, 0.0, 10.0, key=KEY), ValueError,
         r"OUNoise: `tau` must be finite"),
        (lambda: hhjax.OUNoise(0.0, 1.0, 1.0, 0.0, INF, key=KEY), ValueError,
         r"OUNoise: `t1` must be finite"),
        (lambda: hhjax.OUNoise(0.0, -1.0, 1.0, 0.0, 10.0, key=KEY), ValueError,
         r"OUNoise: `sigma` must be >= 0"),
        (lambda: hhjax.OUNoise(0.0, 1.0, 0.0, 0.0, 10.0, key=KEY), ValueError,
         r"OUNoise: `tau` must be > 0"),
        (lambda: hhjax.OUNoise(1j, 1.0, 1.0, 0.0, 10.0, key=KEY), TypeError,
         r"OUNoise: `mean` must be real"),
        (lambda: hhjax.Pulses([1.0, NAN], [0.0, 5.0], 1.0), ValueError,
         r"Pulses: `amplitudes` must be finite, got nan at index 1"),
        (lambda: hhjax.Pulses([1.0], [INF], [1.0]), ValueError, r"Pulses: `starts` must be finite"),
        (lambda: hhjax.Pulses([1.0], [0.0], [INF]), ValueError, r"Pulses: `widths` must be finite"),
        (lambda: hhjax.Pulses([1j], [0.0], [1.0]), TypeError, r"Pulses: `amplitudes` must be real"),
        (lambda: hhjax.Pulses.train(1.0, 0.0, 1.0, 5.0, 0), ValueError,
         r"Pulses.train: `count` must be >= 1, got 0"),
        (lambda: hhjax.Pulses.train(1.0, 0.0, 1.0, 5.0, -1), ValueError,
         r"Pulses.train: `count` must be >= 1, got -1"),
        (lambda: hhjax.Pulses.train(1.0, 0.0, 1.0, 5.0, 2.5), TypeError,
         r"Pulses.train: `count` must be a whole number"),
        (lambda: hhjax.Pulses.train(1.0, 0.0, 1.0, NAN, 3), ValueError,
         r"Pulses.train: `period` must be finite"),
    ],
)
def test_bad_stimulus_raises_naming_class_and_field(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_legitimate_infinite_edges_and_counts_pass():
    # A constant current is a step that was always on and never ends.
    const = as_stimulus(3.0)
    assert float(const.start) == -INF and float(const.stop) == INF
    assert float(const(0.0)) == 3.0
    assert float(hhjax.Step(2.0, start=1.0)(1e9)) == 2.0
    train = hhjax.Pulses.train(1.0, 0.0, 1.0, 5.0, np.int64(3))
    np.testing.assert_array_equal(np.asarray(train.starts), [0.0, 5.0, 10.0])


def test_nan_stimulus_amplitude_is_caught_before_solving():
    # It used to reach the solver and come back, seconds later, as "max_steps reached".
    with pytest.raises(ValueError, match="Step: `amplitude`"):
        hhjax.simulate(hhjax.HHParams(), hhjax.Step(NAN, 1.0), 5.0)
    with pytest.raises(ValueError, match="`stimulus`, a constant current, must be a finite number"):
        hhjax.simulate(hhjax.HHParams(), NAN, 5.0)


def test_stimulus_checks_leave_tracers_alone():
    # Under jit/grad values are unknown: no check may fire (or concretise a tracer).
    out = jax.jit(lambda a, s: hhjax.Step(a, start=s)(1.0))(NAN, 0.5)
    assert np.isnan(float(out))
    grad = jax.grad(lambda a: hhjax.Pulses(a, [0.0, 2.0], 1.0)(2.5).sum())(jnp.array([1.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(grad), [0.0, 1.0])

    def noise_at(sigma, tau):
        return hhjax.OUNoise(0.0, sigma, tau, 0.0, 1.0, key=KEY)(0.5)

    g_sigma, g_tau = jax.grad(noise_at, argnums=(0, 1))(1.0, 2.0)
    assert np.isfinite(float(g_sigma)) and np.isfinite(float(g_tau))
    values = jax.jit(lambda v: hhjax.Sampled(jnp.arange(3.0), v)(0.5))(jnp.array([0.0, NAN, 1.0]))
    assert np.isnan(float(values))


# ---------------------------------------------------------------------------- models
@pytest.mark.parametrize("model", [hhjax.HHParams, Pospischil])
def test_mismatched_batch_shapes_rejected_listing_shapes(model):
    second = "g_k" if model is hhjax.HHParams else "g_kd"
    with pytest.raises(ValueError, match=rf"g_na \(3,\), {second} \(4,\)"):
        model(**{"g_na": jnp.full(3, 100.0), second: jnp.full(4, 30.0)})
    # Shapes that broadcast are a grid of neurons, as before.
    grid = model(**{"g_na": jnp.full((3, 1), 100.0), second: jnp.full(4, 30.0)})
    assert grid.batch_shape == (3, 4)


@pytest.mark.parametrize("model", [hhjax.HHParams, Pospischil])
def test_complex_and_empty_parameters_rejected(model):
    name = type(model()).__name__
    with pytest.raises(TypeError, match=rf"{name}: `g_na` must be real"):
        model(g_na=100.0 + 0.0j)
    with pytest.raises(ValueError, match=rf"{name}: `g_na` is empty \(shape \(0,\)\)"):
        model(g_na=jnp.zeros(0))
    with pytest.raises(ValueError, match=rf"{name}: `e_k` must be finite"):
        model(e_k=jnp.array([-77.0, NAN]))


def test_temperature_limits():
    with pytest.raises(ValueError, match="temperature.*absolute zero.*got -300.0"):
        hhjax.HHParams(temperature=-300.0)
    with pytest.raises(ValueError, match="kelvin"):
        hhjax.HHParams.neuron(temperature=310.15)
    with pytest.raises(ValueError, match=r"temperature.*got 150.0 at index 1 \(1 of 2 values\)"):
        hhjax.HHParams(temperature=jnp.array([6.3, 150.0]))
    with pytest.warns(UserWarning, match="extrapolation") as record:
        hhjax.HHParams(temperature=75.0)
    assert record[0].filename == __file__  # the warning points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in (-20.0, 6.3, 37.0, 60.0):
            hhjax.HHParams(temperature=t)


def test_model_checks_leave_tracers_alone():
    # Traced values pass (their values are unknown); shapes are still checked.
    out = jax.vmap(lambda t: hhjax.HHParams(temperature=t).temperature)(jnp.array([-300.0, 6.3]))
    np.testing.assert_array_equal(np.asarray(out), [-300.0, 6.3])
    g = jax.grad(lambda g: Pospischil(g_na=g).g_na * 2.0)(NAN)
    assert float(g) == 2.0


def test_pospischil_channels_must_be_instances():
    with pytest.raises(TypeError, match=r"channels.*NaTraub\(\).*add `\(\)`"):
        Pospischil(channels=(NaTraub, KdTraub(), MSlow()))
    # A list is accepted and stored as the (hashable) tuple that jit needs.
    model = Pospischil(channels=[NaTraub(), KdTraub(), MSlow()])
    assert model.channels == (NaTraub(), KdTraub(), MSlow())


# ---------------------------------------------------------------------------- features
TS = np.linspace(0.0, 10.0, 101)
V = 50.0 * np.sin(2.0 * np.pi * 0.25 * TS)  # upward zero crossings at 0, 4 and 8 ms


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: hhjax.spike_times(TS[::-1], V), r"spike_times: `ts` must be strictly incr"),
        (lambda: hhjax.spike_times(np.r_[TS[:50], TS[49:100]], V), r"ts\[49\] = 4.9"),
        (lambda: hhjax.spike_times(TS, np.where(TS > 5, NAN, V)), r"`v` must be finite.*traj.ok"),
        (lambda: hhjax.spike_times(np.where(TS > 9, INF, TS), V), r"`ts` must be finite"),
        (lambda: hhjax.spike_times(TS, V, NAN), r"spike_times: `threshold` must be finite"),
        (lambda: hhjax.spike_times(TS, V, max_spikes=-1), r"`max_spikes` must be >= 0"),
        (lambda: hhjax.spike_count(V, NAN), r"spike_count: `threshold` must be finite"),
        (lambda: hhjax.spike_count(np.r_[V, NAN]), r"spike_count: `v` must be finite"),
        (lambda: hhjax.firing_rate(TS, V, NAN), r"firing_rate: `threshold` must be finite"),
        (lambda: hhjax.firing_rate(TS, V, t_start=5.0, t_stop=5.0), r"window is empty"),
        (lambda: hhjax.firing_rate(TS, V, t_start=6.0, t_stop=5.0), r"window is empty"),
        (lambda: hhjax.firing_rate(TS, V, t_start=20.0, t_stop=30.0), r"outside the trace"),
        (lambda: hhjax.firing_rate(TS, V, t_start=0.0, t_stop=1000.0), r"outside the trace"),
        (lambda: hhjax.firing_rate(TS, V, t_start=NAN), r"`t_start` must be finite"),
        (lambda: hhjax.firing_rate(TS[::-1], V), r"firing_rate: `ts` must be strictly"),
        (lambda: hhjax.fi_curve(hhjax.HHParams(), []), r"fi_curve: `amplitudes` is empty"),
        (lambda: hhjax.fi_curve(hhjax.HHParams(), [1.0, NAN]), r"`amplitudes` must be finite"),
        (lambda: hhjax.fi_curve(hhjax.HHParams(), [1j]), r"`amplitudes` must be real"),
        (lambda: hhjax.fi_curve(hhjax.HHParams(), [5.0], duration=0.0), r"`duration`"),
        (lambda: hhjax.fi_curve(hhjax.HHParams(), [5.0], duration=50.0, discard=50.0),
         r"`discard` \(50.0 ms\) must be shorter"),
        (lambda: hhjax.fi_curve(hhjax.HHParams(), [5.0], delay=-1.0), r"`delay`"),
        (lambda: hhjax.fi_curve(hhjax.HHParams(), [5.0], threshold=NAN), r"`threshold`"),
    ],
)
def test_bad_feature_input_raises(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_feature_windows_that_are_valid():
    # Crossings at 4 and 8 ms are inside [2, 10]; the one at t = 0 is not a crossing (no sample
    # before it). One sample spacing of slack at either end is allowed.
    assert float(hhjax.firing_rate(TS, V, t_start=2.0, t_stop=10.0)) == pytest.approx(250.0)
    assert float(hhjax.firing_rate(TS, V, t_start=2.0, t_stop=10.1)) == pytest.approx(
        1000.0 * 2 / 8.1
    )
    assert int(hhjax.spike_count(V)) == 2


def test_spike_times_match_analytic_crossings_for_every_length():
    # Traces are padded up to a shared bucket length; the padding must change nothing. Against
    # the exact crossings k/f of a sine, within the cubic-interpolation error bound
    # max|f''''| / 4! * dt^4 / |f'| = omega^3 dt^4 / 24 (ms), including a crossing in the very
    # last sample interval; and bit for bit against the same kernel run on the unpadded arrays.
    omega = 2.0 * np.pi * 0.25  # rad/ms
    for n in (17, 1003):  # each length costs three compilations
        ts = np.linspace(0.0, 12.0 - 1e-3, n)
        ts[-1] = 12.0 + 1e-3  # the last interval holds the crossing at 12 ms
        v = np.sin(omega * ts)
        times = np.asarray(hhjax.spike_times(ts, v))
        dt = np.max(np.diff(ts))
        np.testing.assert_allclose(times, [4.0, 8.0, 12.0], rtol=0, atol=omega**3 * dt**4 / 24)
        unpadded = _features._spike_times_fixed(ts, v, jnp.asarray(0.0), jnp.asarray(n), 3)
        np.testing.assert_array_equal(times, np.asarray(unpadded))
        # A NaN-padded fixed size, traced under jit, gives the same times.
        fixed = jax.jit(lambda v, ts=ts: hhjax.spike_times(ts, v, max_spikes=5))(v)
        np.testing.assert_array_equal(np.asarray(fixed)[:3], times)
        assert np.all(np.isnan(np.asarray(fixed)[3:]))
    # Gradients with respect to the samples pass through the padding unchanged.
    padded = jax.grad(lambda v: jnp.sum(hhjax.spike_times(ts, v, max_spikes=3)))(v)
    plain = jax.grad(lambda v: jnp.sum(
        _features._spike_times_fixed(ts, v, jnp.asarray(0.0), jnp.asarray(n), 3)))(v)
    assert padded.shape == (n,) and np.count_nonzero(np.asarray(plain)) >= 3
    np.testing.assert_array_equal(np.asarray(padded), np.asarray(plain))


def test_spike_times_does_not_recompile_for_each_trace_length(monkeypatch):
    traces = []
    refine = _features._refine

    def counting_refine(*args):
        traces.append(1)  # runs only while tracing
        return refine(*args)

    monkeypatch.setattr(_features, "_refine", counting_refine)
    for n in range(2819, 2827):  # one bucket (2560 < n <= 3072), used by no other test
        ts = np.linspace(0.0, 100.0, n)
        hhjax.spike_times(ts, 60.0 * np.sin(ts), max_spikes=17)
    assert len(traces) <= 1
