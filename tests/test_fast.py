"""The exponential-Euler solver and the features-only batch simulator.

References: NEURON's CVODE spike times (tests/reference/neuron_hh_step10.json), the exact
solution of a passive membrane, hhjax.kinetics' rate functions, and `simulate` with the same
solver for the batch path.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hhjax
from hhjax import kinetics as K
from hhjax._batch import KernelConfig, _run_chunk
from hhjax._solvers import exp_euler_step
from hhjax.models._hh import fast_rates

REFERENCE = pathlib.Path(__file__).parent / "reference" / "neuron_hh_step10.json"


@pytest.fixture(scope="module")
def neuron_spikes():
    return np.asarray(json.loads(REFERENCE.read_text())["cvode_reference"]["spike_times_ms"])


def _exact_rates(p, v):
    u = v - p.v_ref
    phi = K.temperature_factor(p.temperature)
    pairs = ((K.alpha_m, K.beta_m), (K.alpha_h, K.beta_h), (K.alpha_n, K.beta_n))
    return [(phi * a(u), phi * b(u)) for a, b in pairs]


@pytest.mark.parametrize("dtype, rtol", [(jnp.float64, 1e-12), (jnp.float32, 2e-5)])
def test_fast_rates_match_kinetics(dtype, rtol):
    # Includes the 0/0 points of alpha_m (u = 25) and alpha_n (u = 10) and their neighbourhoods.
    p = hhjax.HHParams.neuron(temperature=18.5)
    v = np.concatenate(
        [np.linspace(-200.0, 200.0, 4001), -65.0 + np.array([25.0, 10.0])],
    )
    v = np.concatenate([v, -40.0 + np.linspace(-0.5, 0.5, 101), -55.0 + np.linspace(-1, 1, 101)])
    got = fast_rates(p.astype(dtype), jnp.asarray(v, dtype))
    want = _exact_rates(p.astype(jnp.float64), jnp.asarray(v, jnp.float64))
    for (ga, gb), (wa, wb) in zip(got, want):
        for g, w in ((ga, wa), (gb, wb)):
            assert g.dtype == dtype
            g, w = np.asarray(g, np.float64), np.asarray(w)
            assert np.all(np.isfinite(g))
            np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-30)


def test_passive_membrane_is_exact():
    # With the active conductances off the scheme is the exact solution of a linear ODE.
    p = hhjax.HHParams.neuron(g_na=0.0, g_k=0.0)
    i = 3.0
    traj = hhjax.simulate(
        p, i, 20.0, solver=hhjax.ExponentialEuler(), dt0=0.1, y0=hhjax.steady_state(p, -70.0)
    )
    v_inf = p.e_l + i / p.g_l
    exact = v_inf + (-70.0 - v_inf) * np.exp(-p.g_l * np.asarray(traj.ts) / p.c_m)
    np.testing.assert_allclose(traj.v, exact, rtol=0, atol=1e-10)


def test_exp_euler_convergence_order(neuron_spikes):
    # Spike times over 100 ms at 10 µA/cm² against NEURON's CVODE (rtol=atol=1e-13).
    p = hhjax.HHParams.neuron()
    y0 = hhjax.steady_state(p, -65.0)
    stim = hhjax.Step(10.0, 5.0, 1005.0)
    errors = []
    for dt in (0.04, 0.02, 0.01):
        traj = hhjax.simulate(p, stim, 100.0, solver=hhjax.ExponentialEuler(), dt0=dt, y0=y0)
        times = np.asarray(hhjax.spike_times(traj.ts, traj.v))
        assert len(times) == 7
        errors.append(np.max(np.abs(times - neuron_spikes[:7])))
    orders = np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))
    # The staggered gate/voltage updates make spike times second-order accurate (the gates
    # themselves, as reported at whole steps, are first order).
    assert np.all(orders > 1.8) and np.all(orders < 2.3), (errors, orders)
    assert errors[1] < 0.03  # dt = 0.02 ms: measured 0.019 ms after 7 spikes


def test_gates_stay_in_unit_interval():
    p = hhjax.HHParams.neuron()
    stim = hhjax.Step(200.0, 1.0, 30.0)
    for dt in (0.01, 0.5, 2.0):
        traj = hhjax.simulate(
            p, stim, 60.0, solver=hhjax.ExponentialEuler(), dt0=dt, y0=(150.0, 1.0, 0.0, 1.0)
        )
        for x in (traj.m, traj.h, traj.n):
            assert np.all((np.asarray(x) >= 0) & (np.asarray(x) <= 1))
        assert np.all(np.isfinite(traj.v))
        # v moves toward a weighted mean of the reversal potentials plus I/G: with I >= 0 it
        # cannot undershoot E_K, nor exceed its start of 150 mV (> E_Na + 200/G here).
        assert np.min(traj.v) > p.e_k - 1e-9 and np.max(traj.v) <= 150.0


def _batch_inputs(dtype=jnp.float64):
    amps = jnp.asarray([0.0, 2.0, 6.5, 10.0, 15.0, 30.0, 8.0], dtype)
    g_na = jnp.asarray([120.0, 120.0, 100.0, 120.0, 140.0, 120.0, 90.0], dtype)
    p = hhjax.HHParams.neuron(temperature=10.0).replace(g_na=g_na).astype(dtype)
    return p, amps


def test_batch_features_equal_per_neuron_simulate():
    p, amps = _batch_inputs()
    y0 = hhjax.steady_state(p, -65.0)
    feats = hhjax.simulate_batch(
        p, hhjax.Step(amps, 5.0), 150.0, dt=0.025, y0=y0, max_spikes=8, record=("v", "n")
    )
    assert feats.spike_times.shape == (7, 8) and feats.spike_count.dtype == jnp.int32
    for k in range(7):
        pk = p[k]
        traj = hhjax.simulate(
            pk,
            hhjax.Step(amps[k], 5.0),
            150.0,
            solver=hhjax.ExponentialEuler(),
            dt0=0.025,
            y0=hhjax.steady_state(pk, -65.0),
        )
        times = np.asarray(hhjax.spike_times(traj.ts, traj.v))
        count = int(hhjax.spike_count(traj.v))
        assert int(feats.spike_count[k]) == count == len(times)
        stored = np.asarray(feats.spike_times[k])
        n = min(count, 8)
        # Same steps; the batch path takes the crossing of the step's frozen-conductance
        # exponential (O(dt²) in time: ~1e-3 ms at 0.025 ms, below the scheme's own error),
        # simulate's trace is interpolated by a cubic through four samples.
        np.testing.assert_allclose(stored[:n], times[:n], atol=2e-3)
        np.testing.assert_array_less(stored[:n], times[:n] + 1e-12)  # exponential is concave
        assert np.all(np.isnan(stored[n:]))
        np.testing.assert_allclose(feats.rate[k], count / 0.150, rtol=1e-12)
        final = traj.final_state()
        for name in ("v", "m", "h", "n"):
            np.testing.assert_allclose(
                getattr(feats.final_state, name)[k], getattr(final, name), rtol=1e-9, atol=1e-9
            )
        # The record holds every 0.5 ms (20 steps) of the same trajectory.
        np.testing.assert_allclose(feats.record_ts, traj.ts[::20], atol=1e-9)
        np.testing.assert_allclose(feats.record["v"][k], traj.v[::20], rtol=1e-9, atol=1e-7)
        np.testing.assert_allclose(feats.record["n"][k], traj.n[::20], rtol=1e-9, atol=1e-10)
    assert int(jnp.sum(feats.dropped)) == 0


def test_chunking_identical_to_one_batch():
    p, amps = _batch_inputs()
    one = hhjax.simulate_batch(p, amps, 60.0, dt=0.05, max_spikes=4)
    chunked = hhjax.simulate_batch(p, amps, 60.0, dt=0.05, max_spikes=4, chunk_size=3)
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(chunked)):
        np.testing.assert_array_equal(a, b)
    assert int(jnp.sum(one.spike_count)) > 0


def test_threaded_parts_identical_to_one_thread():
    # Parts run concurrently on threads (3 parts of 3 neurons, the last padded) must give
    # exactly the single-threaded result, in order.
    p, amps = _batch_inputs()
    one = hhjax.simulate_batch(p, amps, 60.0, dt=0.05, max_spikes=4, workers=1)
    threaded = hhjax.simulate_batch(p, amps, 60.0, dt=0.05, max_spikes=4, workers=3)
    for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(threaded)):
        np.testing.assert_array_equal(a, b)
    assert len(set(np.asarray(one.spike_count).tolist())) > 1  # the neurons differ
    with pytest.raises(ValueError, match="workers"):
        hhjax.simulate_batch(p, amps, 60.0, dt=0.05, workers=0)


def test_shared_and_per_neuron_stimulus_agree():
    p, amps = _batch_inputs()
    per_neuron = hhjax.simulate_batch(p, hhjax.Step(jnp.full(7, 10.0), 5.0), 40.0, dt=0.05)
    shared = hhjax.simulate_batch(p, hhjax.Step(10.0, 5.0), 40.0, dt=0.05)
    np.testing.assert_array_equal(per_neuron.spike_times, shared.spike_times)


def test_shared_and_per_neuron_parameters_agree():
    # Fields equal for all neurons stay scalars inside simulate_batch; broadcasting them by
    # hand gives the same trajectories. (The program differs, so XLA may round the crossing
    # fraction differently: spike times agree to ~1e-14 ms.)
    p, amps = _batch_inputs()  # g_na per neuron, the other fields scalars
    shared = p.replace(g_na=120.0)
    for mixed in (p, shared):
        per_neuron = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, amps.shape), mixed)
        assert all(jnp.shape(getattr(per_neuron, f)) == (7,) for f in per_neuron.field_names)
        a = hhjax.simulate_batch(mixed, amps, 40.0, dt=0.05, max_spikes=4)
        b = hhjax.simulate_batch(per_neuron, amps, 40.0, dt=0.05, max_spikes=4)
        for name in ("spike_count", "dropped", "final_state"):
            for x, y in zip(
                jax.tree_util.tree_leaves(getattr(a, name)),
                jax.tree_util.tree_leaves(getattr(b, name)),
            ):
                np.testing.assert_array_equal(x, y)
        np.testing.assert_allclose(a.spike_times, b.spike_times, rtol=0, atol=1e-12)
        assert len(set(np.asarray(a.spike_count).tolist())) > 1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_vector_width_option_keeps_results(dtype):
    # The CPU compile asks for 512-bit vectors (XLA accepts the option: unknown ones raise);
    # elementwise IEEE arithmetic must not change. (On CPUs without AVX-512 both compiles
    # use the same width and the test checks only that the option is accepted.) The "other"
    # compile also skips the CPU-only held rates, so this compares those too.
    # 67 neurons: full 512- and 256-bit vectors plus a remainder.
    amps = jnp.linspace(0.0, 30.0, 67, dtype=dtype)
    g_na = jnp.linspace(90.0, 140.0, 67, dtype=dtype)
    p = hhjax.HHParams.neuron(temperature=10.0).replace(g_na=g_na).astype(dtype)
    config = KernelConfig(0.0, 0.05, 80, 10, 0, 0.0, 4, ("v",), 1)
    wide = _run_chunk(p, hhjax.Step(amps, 5.0), None, config, 67, "cpu")
    default = _run_chunk(p, hhjax.Step(amps, 5.0), None, config, 67, "other")
    for x, y in zip(jax.tree_util.tree_leaves(wide), jax.tree_util.tree_leaves(default)):
        np.testing.assert_array_equal(x, y)
    assert int(jnp.sum(wide[0])) > 0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_rates_held_in_carried_buffer_are_unchanged(dtype):
    # On CPU the chunk kernel routes alpha_m and alpha_n through a dynamic-update-slice into a
    # carried buffer (so XLA does not split them across threads); that must not touch a bit.
    import functools

    from hhjax import _batch

    amps = jnp.linspace(0.0, 30.0, 67, dtype=dtype)
    p = hhjax.HHParams.neuron(temperature=10.0).astype(dtype)
    config = KernelConfig(0.0, 0.05, 80, 10, 0, 0.0, 4, ("v", "m"), 1)

    def run(hold_rates):
        impl = functools.partial(_batch._run_chunk_impl, hold_rates=hold_rates)
        return jax.jit(impl, static_argnums=(3, 4))(p, hhjax.Step(amps, 5.0), None, config, 67)

    held, plain = run(True), run(False)
    text = jax.jit(
        functools.partial(_batch._run_chunk_impl, hold_rates=True), static_argnums=(3, 4)
    ).lower(p, hhjax.Step(amps, 5.0), None, config, 67).as_text()
    assert "dynamic_update_slice" in text  # the held path really was compiled
    for x, y in zip(jax.tree_util.tree_leaves(held), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_array_equal(x, y)
    assert int(jnp.sum(held[0])) > 0


def _block_reference(p, amps, t1, dt, steps_per_block, max_spikes, threshold=0.0):
    """Counts, dropped and stored times by the kernel's block rules, from a plain step loop."""
    from hhjax._spikes import _crossing_fraction

    state = jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, amps.shape), hhjax.rest_state(p)
    )
    n_steps = int(round(t1 / dt))
    step = jax.jit(lambda s, i: exp_euler_step(p, s, i, dt))
    count = np.zeros(amps.shape, int)
    dropped = np.zeros(amps.shape, int)
    times = np.full(amps.shape + (max_spikes,), np.nan)
    in_block = np.zeros(amps.shape, int)
    for k in range(n_steps):
        if k % steps_per_block == 0:
            in_block[:] = 0
        t_mid = (k + 0.5) * dt
        i_stim = np.where(t_mid >= 1.0, np.asarray(amps), 0.0)
        new = step(state, jnp.asarray(i_stim))
        v0, v1 = np.asarray(state.v), np.asarray(new.v)
        up = (v0 < threshold) & (v1 >= threshold)
        for j in np.flatnonzero(up):
            if in_block[j] == 0 and count[j] < max_spikes:
                # v_inf of this step, from the new gates as in the scheme.
                m, h, n = (np.asarray(getattr(new, name))[j] for name in "mhn")
                g = p.g_na * m**3 * h + p.g_k * n**4 + p.g_l
                drive = (
                    p.g_na * m**3 * h * p.e_na + p.g_k * n**4 * p.e_k + p.g_l * p.e_l + i_stim[j]
                )
                v_inf = drive / g
                frac = _crossing_fraction(float(v0[j]), float(v1[j]), float(v_inf), threshold)
                times[j, count[j]] = k * dt + float(frac) * dt
            if in_block[j] >= 1:
                dropped[j] += 1
            in_block[j] += 1
            count[j] += 1
        state = new
    return count, dropped, times


def test_block_rules_with_groups_remainder_tail_overflow_and_drops():
    # 38 blocks of 10 ms (one group of 32 stored together, then 6) plus a 2-step tail; at
    # 40 µA/cm² some blocks hold two crossings (dropped) and the 3-slot buffers overflow.
    # Counts, drops and stored times must follow the block rules exactly.
    p = hhjax.HHParams.neuron()
    amps = jnp.array([0.0, 10.0, 20.0, 40.0])
    t1, dt = 380.05, 0.025
    feats = hhjax.simulate_batch(
        p, hhjax.Step(amps, 1.0), t1, dt=dt, max_spikes=3, record=("v",), record_dt=10.0,
        progress=False,
    )
    count, dropped, times = _block_reference(p, amps, t1, dt, 400, 3)
    np.testing.assert_array_equal(np.asarray(feats.spike_count), count)
    np.testing.assert_array_equal(np.asarray(feats.dropped), dropped)
    np.testing.assert_allclose(np.asarray(feats.spike_times), times, rtol=0, atol=1e-9)
    assert count.max() > 3 and dropped.sum() > 0  # the cases this test is for did occur
    assert feats.record["v"].shape == (4, 40)


def test_crossing_fraction_follows_the_steps_exponential():
    # Pade form of s = ln a / ln b for v(s) = v_inf + (v0 - v_inf) exp(-rate s):
    # exact at both ends, within 0.031 of a step for rate <= 1, 0.11 for rate <= 2.
    from hhjax._spikes import _crossing_fraction

    s = np.linspace(0.0, 1.0, 1001)
    for rate, tol in [(0.05, 1e-4), (0.5, 0.008), (1.0, 0.031), (2.0, 0.11)]:
        v_inf, v0 = 55.0, -20.0
        v1 = v_inf + (v0 - v_inf) * np.exp(-rate)
        thr = v_inf + (v0 - v_inf) * np.exp(-rate * s)
        got = np.asarray(_crossing_fraction(v0, v1, v_inf, thr))
        assert abs(got[0]) < 1e-12 and abs(got[-1] - 1.0) < 1e-12
        assert np.max(np.abs(got - s)) < tol, rate
        assert np.all((got >= 0.0) & (got <= 1.0))


@pytest.mark.parametrize("dtype, rtol", [(jnp.float32, 1e-5), (jnp.float64, 1e-12)])
def test_gate_update_finite_and_exact_over_wide_voltages(dtype, rtol):
    # m and n share one division; compare with one division per gate, from -1.5 V to +1.5 V.
    p = hhjax.HHParams.neuron().astype(dtype)
    v = jnp.linspace(-1500.0, 1500.0, 30001, dtype=dtype)
    x0 = jnp.full_like(v, 0.4)
    state = hhjax.HHState(v, x0, x0, x0)
    got = exp_euler_step(p, state, 0.0, 0.025)
    phi = 3.0 ** ((p.temperature - 6.3) / 10.0)
    rates = fast_rates(p.astype(jnp.float64), jnp.asarray(v, jnp.float64), phi)
    for name, (a, b) in zip("mhn", rates):
        x = np.asarray(getattr(got, name), np.float64)
        assert np.all(np.isfinite(x)) and np.all((x >= 0) & (x <= 1)), name
        total = a + b
        want = a / total + (0.4 - a / total) * np.exp(-0.025 * total)
        np.testing.assert_allclose(x, want, rtol=rtol, atol=1e-30 if dtype == jnp.float64 else 1e-7)


def test_float32_in_float32_out():
    p, amps = _batch_inputs(jnp.float32)
    feats = hhjax.simulate_batch(p, hhjax.Step(amps, 5.0), 100.0, dt=0.025, record=("v",))
    assert feats.spike_times.dtype == jnp.float32
    assert feats.rate.dtype == jnp.float32
    assert feats.record["v"].dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in feats.final_state)
    p64, amps64 = _batch_inputs(jnp.float64)
    ref = hhjax.simulate_batch(p64, hhjax.Step(amps64, 5.0), 100.0, dt=0.025)
    np.testing.assert_array_equal(feats.spike_count, ref.spike_count)
    np.testing.assert_allclose(feats.spike_times, ref.spike_times, atol=0.05)
    traj = hhjax.simulate(
        hhjax.HHParams.neuron().astype(jnp.float32),
        hhjax.Step(10.0, 5.0),
        20.0,
        solver=hhjax.ExponentialEuler(),
        dt0=0.025,
    )
    assert traj.v.dtype == jnp.float32 and traj.m.dtype == jnp.float32


def test_bad_arguments():
    p = hhjax.HHParams.neuron()
    with pytest.raises(ValueError, match="whole number of steps"):
        hhjax.simulate_batch(p, 10.0, 10.01, dt=0.025)
    with pytest.raises(ValueError, match="record"):
        hhjax.simulate_batch(p, 10.0, 10.0, dt=0.025, record=("x",))
    with pytest.raises(ValueError, match="per neuron"):
        hhjax.simulate_batch(p.replace(g_na=jnp.ones(3)), jnp.ones((2, 2)), 10.0)
    with pytest.raises(ValueError, match="dt0"):
        hhjax.simulate(p, 10.0, 10.0, solver=hhjax.ExponentialEuler())


def test_single_neuron_and_partial_last_block():
    # 10.3 ms at 0.05 ms is 206 steps: 20 blocks of 0.5 ms and a last block of 6 steps.
    p = hhjax.HHParams.neuron()
    feats = hhjax.simulate_batch(p, hhjax.Step(10.0, 1.0), 10.3, dt=0.05, record=("v",))
    traj = hhjax.simulate(p, hhjax.Step(10.0, 1.0), 10.3, solver=hhjax.ExponentialEuler(), dt0=0.05)
    assert feats.spike_count.shape == () and feats.spike_times.shape == (64,)
    assert int(feats.spike_count) == int(hhjax.spike_count(traj.v)) == 1
    np.testing.assert_allclose(feats.record_ts, np.append(traj.ts[::10], 10.3), atol=1e-12)
    np.testing.assert_allclose(feats.record["v"][:-1], traj.v[::10], atol=1e-9)
    np.testing.assert_allclose(feats.record["v"][-1], traj.v[-1], atol=1e-9)


def test_spike_times_adaptive_float32_and_long_runs(neuron_spikes):
    # The event's root-finding tolerance scales with the dtype and the horizon: float32 must
    # locate every crossing (its v at the crossing cannot be resolved to float64 tolerances),
    # and a long float64 run must not fail on the late ones.
    p = hhjax.HHParams.neuron()
    stim = hhjax.Step(10.0, 5.0, 4005.0)
    p32 = p.astype(jnp.float32)
    out = hhjax.spike_times_adaptive(
        p32, stim, 300.0, y0=hhjax.steady_state(p32, -65.0), rtol=1e-6, atol=1e-6, max_spikes=32
    )
    assert bool(out.ok) and out.times.dtype == jnp.float32
    n = int(out.count)
    assert n == int(np.sum(neuron_spikes < 300.0))
    np.testing.assert_allclose(out.times[:n], neuron_spikes[:n], atol=2e-3)
    long = hhjax.spike_times_adaptive(
        p, stim, 4005.0, y0=hhjax.steady_state(p, -65.0), rtol=1e-5, atol=1e-5, max_spikes=512
    )
    assert bool(long.ok) and 250 < int(long.count) < 300  # ~68 spikes per second


def test_spike_times_adaptive_matches_neuron(neuron_spikes):
    # 100 ms at 10 µA/cm² (7 spikes) against NEURON's CVODE at 1e-13; each crossing ends a
    # solve (a Diffrax event located on the solver's dense interpolant), no grid is saved.
    p = hhjax.HHParams.neuron()
    y0 = hhjax.steady_state(p, -65.0)
    stim = hhjax.Step(10.0, 5.0, 1005.0)
    out = hhjax.spike_times_adaptive(p, stim, 100.0, y0=y0, rtol=1e-6, atol=1e-6, max_spikes=9)
    assert bool(out.ok) and int(out.count) == 7 and out.times.shape == (9,)
    np.testing.assert_allclose(out.times[:7], neuron_spikes[:7], atol=1e-3)
    assert np.all(np.isnan(np.asarray(out.times[7:])))
    ref = hhjax.simulate(p, stim, 100.0, y0=y0)
    np.testing.assert_allclose(out.final_state.v, ref.v[-1], atol=1e-3)
    # Tighter tolerance, smaller error: the interpolant is not the limiting factor.
    tight = hhjax.spike_times_adaptive(p, stim, 100.0, y0=y0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(tight.times[:7], neuron_spikes[:7], atol=5e-5)
    with pytest.raises(ValueError, match="unbatched"):
        hhjax.spike_times_adaptive(p.replace(g_na=jnp.array([120.0, 110.0])), stim, 10.0)


def test_value_and_grad_forward_matches_finite_differences():
    import diffrax

    p = hhjax.HHParams.neuron()
    y0 = hhjax.steady_state(p, -65.0)
    stim = hhjax.Step(10.0, 2.0)
    target = hhjax.simulate(p.replace(g_na=110.0, g_k=40.0), stim, 15.0, y0=y0).v

    def loss(q):
        kw = dict(y0=y0, rtol=1e-10, atol=1e-10, adjoint=diffrax.ForwardMode())
        return jnp.mean((hhjax.simulate(q, stim, 15.0, **kw).v - target) ** 2)

    value, grad = jax.jit(hhjax.value_and_grad_forward(loss))(p)
    np.testing.assert_allclose(value, loss(p), rtol=1e-12)
    for name, h in (("g_na", 1e-3), ("e_k", 1e-4), ("c_m", 1e-5)):
        up = loss(p.replace(**{name: getattr(p, name) + h}))
        down = loss(p.replace(**{name: getattr(p, name) - h}))
        np.testing.assert_allclose(getattr(grad, name), (up - down) / (2 * h), rtol=1e-5)
