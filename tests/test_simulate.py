"""simulate() against independent references: the seeds, scipy Radau, NEURON."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import hh_rhs, neuron_reference, radau_piecewise, seed000_euler

import hhjax


def test_seed000_forward_euler_reproduced():
    dt, points = 0.05, 5000
    stim = np.zeros(points)
    stim[2000:3000] = 10.0
    ref = seed000_euler(stim, dt=dt, e_l=10.6)
    p = hhjax.HHParams.squid_1952(e_l=10.6)
    traj = hhjax.simulate(
        p, hhjax.Step(10.0, 100.0, 150.0), points * dt, solver=diffrax.Euler(), dt0=dt,
        y0=hhjax.steady_state(p, 0.0),
    )
    # The seed records the state after step i at index i; ours at t = (i+1)*dt.
    for k, name in enumerate("vmhn"):
        ours = np.asarray(getattr(traj, name))[1:]
        assert np.max(np.abs(ours - ref[k])) < 1e-9, name
    spikes = hhjax.spike_times(traj.ts, traj.v, threshold=50.0)
    assert len(spikes) == 4
    assert np.all((spikes > 100.0) & (spikes < 150.0))


def test_seed001_double_pulse_matches_radau():
    p = hhjax.HHParams.squid_1952()
    stim = hhjax.Pulses([150.0, 50.0], starts=[0.0, 10.0], widths=[1.0, 1.0])
    traj = hhjax.simulate(p, stim, 50.0)
    y0 = [float(x) for x in hhjax.rest_state(p)]
    current = lambda t: 150.0 if 0 <= t < 1 else (50.0 if 10 <= t < 11 else 0.0)
    ts = np.asarray(traj.ts)
    ref = radau_piecewise(hh_rhs(current=current), y0, [0.0, 1.0, 10.0, 11.0, 50.0], ts)
    err = np.max(np.abs(np.asarray(traj.v) - ref[0]))
    assert err < 1e-3, err  # the bound; measured about 3e-6 mV at rtol = atol = 1e-8
    assert len(hhjax.spike_times(traj.ts, traj.v, threshold=50.0)) == 2


def test_rest_state_is_a_fixed_point():
    for p in (hhjax.HHParams(), hhjax.HHParams.neuron(), hhjax.HHParams.squid_1952()):
        y = hhjax.rest_state(p)
        dy = hhjax.vector_field(0.0, y, (p, None))
        assert max(abs(float(x)) for x in dy) < 1e-12
    # E_L = 10.613 mV above rest was chosen by HH so that the membrane rests at the reference.
    assert float(hhjax.rest_state(hhjax.HHParams()).v) == pytest.approx(-65.0, abs=0.01)
    assert float(hhjax.rest_state(hhjax.HHParams.squid_1952()).v) == pytest.approx(0.0, abs=0.01)


def test_neuron_spike_times_first_60():
    ref = neuron_reference()
    neuron_spikes = np.asarray(ref["cvode_reference"]["spike_times_ms"])[:60]
    p = hhjax.HHParams.neuron()
    traj = hhjax.simulate(p, hhjax.Step(10.0, 5.0), 1005.0, y0=hhjax.steady_state(p, -65.0))
    ours = np.asarray(hhjax.spike_times(traj.ts, traj.v))[:60]
    assert len(ours) == 60
    assert np.max(np.abs(ours - neuron_spikes)) < 0.01
    trace = ref["trace_50ms"]
    short = hhjax.simulate(p, hhjax.Step(10.0, 5.0), 50.0, y0=hhjax.steady_state(p, -65.0),
                           ts=np.asarray(trace["t_ms"]))
    # Measured 2.5e-5 mV; NEURON's recorded trace is itself CVODE-interpolated at 1e-13.
    assert np.max(np.abs(np.asarray(short.v) - np.asarray(trace["v_mV"]))) < 1e-3


def test_vmap_over_amplitudes_matches_single_and_does_not_recompile():
    p = hhjax.HHParams()
    amps = jnp.linspace(0.0, 30.0, 1000)
    run = lambda a: hhjax.simulate(p, hhjax.Step(a, 2.0, 12.0), 15.0, dt_save=0.5).v
    batch = jax.vmap(run)(amps)
    assert batch.shape == (1000, 31)
    for i in (0, 333, 999):
        # Equal up to the last bits of XLA's vectorised exp (measured 3e-13 mV).
        np.testing.assert_allclose(np.asarray(batch[i]), np.asarray(run(amps[i])), rtol=0,
                                   atol=1e-11)

    traces = []

    class CountingStep(hhjax.Step):
        def __call__(self, t):
            traces.append(1)  # runs only while tracing
            return super().__call__(t)

    hhjax.simulate(p, CountingStep(5.0, 1.0, 3.0), 5.0)
    n = len(traces)
    hhjax.simulate(p.replace(g_na=100.0, e_l=-60.0), CountingStep(7.0, 1.5, 3.5), 5.0)
    assert len(traces) == n


def test_batched_params_and_y0():
    p = hhjax.HHParams(g_k=jnp.array([30.0, 36.0, 42.0]))
    traj = hhjax.simulate(p, hhjax.Step(10.0, 1.0), 20.0)
    assert traj.v.shape == (3, 801)
    single = hhjax.simulate(p[2], hhjax.Step(10.0, 1.0), 20.0)
    np.testing.assert_allclose(np.asarray(traj.v[2]), np.asarray(single.v), atol=1e-9)
    y0 = hhjax.steady_state(p, jnp.array([-70.0, -65.0, -60.0]))
    traj = hhjax.simulate(p, None, 5.0, y0=y0)
    np.testing.assert_allclose(np.asarray(traj.v[:, 0]), [-70.0, -65.0, -60.0])


def test_float32():
    p64 = hhjax.HHParams.neuron()
    p32 = p64.astype(jnp.float32)
    stim = hhjax.Step(10.0, 5.0)
    y0 = hhjax.steady_state(p64, -65.0)
    t64 = hhjax.simulate(p64, stim, 50.0, y0=y0)
    t32 = hhjax.simulate(p32, stim, 50.0, y0=jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32), y0))
    assert t32.v.dtype == jnp.float32 and t64.v.dtype == jnp.float64
    s64 = np.asarray(hhjax.spike_times(t64.ts, t64.v))[:3]
    s32 = np.asarray(hhjax.spike_times(t32.ts, t32.v))[:3]
    assert np.max(np.abs(s64 - s32)) < 0.05


def test_gradients_match_finite_differences_for_every_field():
    stim = hhjax.Step(10.0, 2.0)

    def loss(p, amp=10.0):
        traj = hhjax.simulate(p, hhjax.Step(amp, 2.0), 30.0, rtol=1e-11, atol=1e-11)
        return jnp.sum(hhjax.spike_times(traj.ts, traj.v, max_spikes=2))

    p = hhjax.HHParams.neuron()
    grads = jax.grad(loss)(p)
    for name in hhjax.FIELDS:
        x = float(getattr(p, name))
        eps = 1e-5 * max(abs(x), 1.0)
        fd = (loss(p.replace(**{name: x + eps})) - loss(p.replace(**{name: x - eps}))) / (2 * eps)
        g = float(getattr(grads, name))
        assert np.isfinite(g)
        assert abs(g - float(fd)) <= 1e-4 * abs(float(fd)) + 1e-8, (name, g, float(fd))
    g_amp = float(jax.grad(lambda a: loss(p, a))(10.0))
    fd_amp = (loss(p, 10.0 + 1e-3) - loss(p, 10.0 - 1e-3)) / 2e-3
    assert abs(g_amp - float(fd_amp)) <= 1e-4 * abs(float(fd_amp))
    assert stim.jump_ts().shape == (2,)


def test_stiff_and_fixed_step_solvers_agree():
    p = hhjax.HHParams()
    stim = hhjax.Step(10.0, 2.0, 20.0)
    ref = hhjax.simulate(p, stim, 30.0, dt_save=0.5)
    kv = hhjax.simulate(p, stim, 30.0, dt_save=0.5, solver=diffrax.Kvaerno5(), rtol=1e-8,
                        atol=1e-8)
    rk4 = hhjax.simulate(p, stim, 30.0, dt_save=0.5, solver=diffrax.Heun(), dt0=0.001)
    assert np.max(np.abs(np.asarray(kv.v - ref.v))) < 1e-3
    assert np.max(np.abs(np.asarray(rk4.v - ref.v))) < 0.05


def test_failure_raises_or_reports():
    p = hhjax.HHParams()
    with pytest.raises(hhjax.SimulationError, match="max_steps"):
        hhjax.simulate(p, hhjax.Step(10.0, 1.0), 50.0, max_steps=20)
    traj = hhjax.simulate(p, hhjax.Step(10.0, 1.0), 50.0, max_steps=20, throw=False)
    assert not bool(traj.ok)


def test_stimuli_sum_sampled_noise_and_jumps():
    p = hhjax.HHParams()
    step = hhjax.Step(5.0, 2.0, 6.0)
    pulses = hhjax.Pulses.train(20.0, start=8.0, width=0.5, period=2.0, count=3)
    total = step + pulses
    assert isinstance(total, hhjax.SumStimulus)
    assert float(total(3.0)) == 5.0 and float(total(8.2)) == 20.0 and float(total(7.0)) == 0.0
    np.testing.assert_allclose(np.sort(np.asarray(total.jump_ts())),
                               [2.0, 6.0, 8.0, 8.5, 10.0, 10.5, 12.0, 12.5])
    ts = np.linspace(0.0, 20.0, 201)
    sampled = hhjax.Sampled(ts, np.where((ts >= 2.0) & (ts < 6.0), 5.0, 0.0), hold=True)
    np.testing.assert_allclose(np.asarray(sampled.jump_ts()), [2.0, 6.0])
    a = hhjax.simulate(p, step, 20.0)
    b = hhjax.simulate(p, sampled, 20.0)
    assert np.max(np.abs(np.asarray(a.v - b.v))) < 1e-6
    key = jax.random.PRNGKey(0)
    n1 = hhjax.OUNoise(2.0, 3.0, 5.0, 0.0, 20.0, key=key)
    n2 = hhjax.OUNoise(2.0, 3.0, 5.0, 0.0, 20.0, key=key)
    np.testing.assert_array_equal(np.asarray(n1.z), np.asarray(n2.z))
    long = hhjax.OUNoise(0.0, 1.0, 2.0, 0.0, 20000.0, key=key)
    z = np.asarray(long.z)
    assert abs(z.std() - 1.0) < 0.1
    lag = round(2.0 / 0.1)
    assert abs(np.corrcoef(z[:-lag], z[lag:])[0, 1] - np.exp(-1.0)) < 0.05
    g = jax.grad(lambda s: hhjax.simulate(p, hhjax.OUNoise(1.0, s, 5.0, 0.0, 10.0, key=key),
                                          10.0).v[-1])(2.0)
    assert np.isfinite(float(g)) and float(g) != 0.0


def test_features_and_currents():
    p = hhjax.HHParams()
    traj = hhjax.simulate(p, hhjax.Step(10.0, 0.0), 200.0)
    n = int(hhjax.spike_count(traj.v))
    assert n == len(hhjax.spike_times(traj.ts, traj.v))
    assert float(hhjax.firing_rate(traj.ts, traj.v)) == pytest.approx(1000.0 * n / 200.0)
    c = hhjax.currents(p, traj)
    v, m, h, ng = (np.asarray(x) for x in (traj.v, traj.m, traj.h, traj.n))
    i_na = 120.0 * m**3 * h * (v - 50.0)
    i_k = 36.0 * ng**4 * (v + 77.0)
    i_l = 0.3 * (v - (10.613 - 65.0))
    np.testing.assert_allclose(np.asarray(c.i_na), i_na, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(c.i_sum), 10.0 - i_na - i_k - i_l, atol=1e-9)
    # i_sum is C dV/dt: its integral between samples is the voltage change (trapezoid rule;
    # 0.025 ms samples, so a small quadrature error remains inside spikes).
    dv = np.diff(v)
    i_sum = np.asarray(c.i_sum)
    quad = 0.5 * np.diff(np.asarray(traj.ts)) * (i_sum[1:] + i_sum[:-1])
    assert np.max(np.abs(quad - dv)) < 0.1  # measured 0.051 mV at a spike upstroke
    fi = hhjax.fi_curve(p, jnp.array([0.0, 3.0, 10.0, 20.0]), duration=200.0)
    assert int(fi.counts[0]) == 0 and int(fi.counts[2]) == n
    assert np.all(np.diff(np.asarray(fi.rates)[1:]) >= 0)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: hhjax.HHParams(g_na=-1.0), "g_na"),
        (lambda: hhjax.HHParams(c_m=float("nan")), "c_m"),
        (lambda: hhjax.HHParams(c_m=0.0), "c_m"),
        (lambda: hhjax.simulate(hhjax.HHParams(), None, 0.0), "t1"),
        (lambda: hhjax.simulate(hhjax.HHParams(), None, 5.0, ts=[0.0, 2.0, 1.0]), "ts"),
        (lambda: hhjax.simulate(hhjax.HHParams(), None, 5.0, ts=[0.0, 9.0]), "ts"),
        (lambda: hhjax.Sampled([0.0, 1.0, 2.0], [1.0, 2.0]), "values"),
        (lambda: hhjax.simulate(hhjax.HHParams(), hhjax.Sampled([0.0, 1.0], [1.0, 2.0]), 5.0),
         "Sampled"),
        (lambda: hhjax.simulate(hhjax.HHParams(), None, 5.0, y0=(-65.0, 1.5, 0.5, 0.3)),
         "y0.m"),
        (lambda: hhjax.simulate(hhjax.HHParams(), None, 5.0, solver=diffrax.Euler()), "dt0"),
        (lambda: hhjax.Step(1.0, 5.0, 2.0), "stop"),
    ],
)
def test_bad_input_errors_name_the_argument(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_stimulus_outside_span_warns():
    with pytest.warns(UserWarning, match="zero over the whole"):
        hhjax.simulate(hhjax.HHParams(), hhjax.Step(10.0, 50.0, 60.0), 10.0)
