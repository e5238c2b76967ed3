"""The model contract, end to end: every public entry point on every kind of model.

Three models, one of each kind (ids in brackets):

- `hhjax.HHParams.neuron()` ["hh"]: the classic model, with its fused overrides;
- `hhjax.models.Pospischil.regular_spiking()` ["pospischil-rs"]: the cortical family;
- a `hhjax.models.Membrane` composed here from HH Na + HH K + M + leak ["composed"]: a model no
  solver code was written for, reached only through `hhjax.AbstractModel`.

(`Pospischil.fast_spiking()` ["pospischil-fs"] joins them under `-m slow`.)

Every entry point is checked for what it promises on each model, mostly against another entry
point that computes the same quantity another way (the sampled-trace spike detector against the
in-step and event detectors, `currents` against the vector field, `rest_state` against finite
differences, a batched run against per-neuron runs). The independent reference is at the end:
the composed model's equations written out again in plain numpy and integrated by scipy.

Cost: compilation, not integration, is what these tests spend their time on. Each solve is
short (40 ms, one or two neurons) and compiled once per model (module-scoped fixtures shared by
the tests). Entry points that need a compiled program of their own for each model run by
default on the composed model and on every model under `-m slow` (see `HEAVY`); so does the
full `fit` (~10 s each).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rates_1952
from matplotlib.figure import Figure

import hhjax
import hhjax.fitting as hf
from hhjax import plot
from hhjax.models import HHPotassium, HHSodium, Leak, Membrane, MSlow, Pospischil

T1 = 40.0  # ms: every trajectory below runs 0..T1
ONSET = 5.0  # ms: every suprathreshold step starts here
DT = 0.025  # ms: the fixed step of ExponentialEuler and simulate_batch
COMPOSED_PARAMS = dict(
    g_na=120.0, e_na=50.0, g_k=36.0, e_k=-77.0, v_ref=-65.0, temperature=6.3,
    g_m=0.5, tau_max=608.0, g_l=0.3, e_l=-54.4, c_m=1.0,
)  # fmt: skip


def composed_model() -> Membrane:
    return Membrane(channels=(HHSodium(), HHPotassium(), MSlow(), Leak()), params=COMPOSED_PARAMS)


@dataclasses.dataclass(frozen=True)
class Case:
    """One model and the currents (µA/cm²) that drive it: `amp` spikes 2-3 times in 35 ms,
    `i_hold` keeps it subthreshold, `i_fit` is the hyperpolarising step of the fitting trace."""

    name: str
    model: object
    amp: float
    i_hold: float
    i_fit: float


def _case(name: str) -> Case:
    if name == "hh":
        return Case(name, hhjax.HHParams.neuron(), amp=10.0, i_hold=1.0, i_fit=-2.0)
    if name == "pospischil-rs":
        return Case(name, Pospischil.regular_spiking(), amp=3.0, i_hold=0.2, i_fit=-0.5)
    if name == "pospischil-fs":
        return Case(name, Pospischil.fast_spiking(), amp=3.0, i_hold=0.2, i_fit=-0.5)
    if name == "composed":
        return Case(name, composed_model(), amp=10.0, i_hold=1.0, i_fit=-2.0)
    raise KeyError(name)


IDS = ("hh", "pospischil-rs", "composed")
SLOW = pytest.mark.slow
# Every test runs on every model. The default run gives each model the checks of its own
# equations and of the paths that are cheap to compile; the entry points that cost one more
# compiled solve each (~2-4 s: batched ExponentialEuler, simulate_batch, the event detector,
# fi_curve) run there on the composed model, the one no solver code was written for, and on
# the others under `-m slow` (for HH they are also covered by test_fast.py and test_simulate.py).
ALL_MODELS = pytest.mark.parametrize(
    "case", [*IDS, pytest.param("pospischil-fs", marks=SLOW)], indirect=True
)
HEAVY = pytest.mark.parametrize(
    "case",
    [
        pytest.param("hh", marks=SLOW),
        pytest.param("pospischil-rs", marks=SLOW),
        "composed",
        pytest.param("pospischil-fs", marks=SLOW),
    ],
    indirect=True,
)


def threshold(model) -> float:
    return float(model.spike_threshold)


def sampled_spikes(traj, model) -> np.ndarray:
    """Spike times (ms) from a saved trace, by the sampled-trace detector."""
    return np.asarray(hhjax.spike_times(traj.ts, traj.v, threshold(model)))


def state_leaves(state, model) -> dict:
    """`{"v": ..., gate: ...}` of a model state, as numpy arrays."""
    return {name: np.asarray(getattr(state, name)) for name in ("v",) + model.gate_names}


def batched(model):
    """Two neurons: the model itself and one with a 1.5x leak. (`jnp.stack` keeps the field's
    weak type, so each neuron `batched(model)[k]` reuses the compiled solve of `model`.)"""
    return model.replace(g_l=jnp.stack([model.g_l, 1.5 * model.g_l]))


# ---------------------------------------------------------------------------- shared solves
@pytest.fixture(scope="module")
def case(request) -> Case:
    return _case(request.param)


@pytest.fixture(scope="module")
def step(case):
    return hhjax.Step(case.amp, ONSET)


@pytest.fixture(scope="module")
def adaptive(case, step):
    """The default solve: Tsit5 with hhjax's adaptive control, from rest."""
    return hhjax.simulate(case.model, step, T1)


@pytest.fixture(scope="module")
def euler(case, step):
    """ExponentialEuler at `DT`, saved at every step."""
    return hhjax.simulate(case.model, step, T1, solver=hhjax.ExponentialEuler(), dt0=DT)


@pytest.fixture(scope="module")
def euler_batch(case, step):
    """ExponentialEuler on the two-neuron batch."""
    return hhjax.simulate(batched(case.model), step, T1, solver=hhjax.ExponentialEuler(), dt0=DT)


# ---------------------------------------------------------------------------- the contract
@ALL_MODELS
def test_contract_methods(case):
    model = case.model
    names = model.gate_names
    assert isinstance(names, tuple) and names and all(isinstance(g, str) for g in names), names
    assert len(set(names)) == len(names), f"{case.name}: duplicate gate names {names}"

    v = jnp.linspace(-90.0, 40.0, 27)
    inf_tau = model.inf_tau(v)
    assert set(inf_tau) == set(names), f"{case.name}: inf_tau keys {set(inf_tau)} != {names}"
    for gate, (x_inf, tau) in inf_tau.items():
        x_inf, tau = np.asarray(x_inf), np.asarray(tau)
        assert x_inf.shape == tau.shape == v.shape, (gate, x_inf.shape, tau.shape)
        assert np.all((x_inf >= 0) & (x_inf <= 1)), f"{case.name}: {gate}_inf outside [0, 1]"
        assert np.all(np.isfinite(tau) & (tau > 0)), f"{case.name}: tau_{gate} not > 0"

    gates = {g: jnp.asarray(0.1 + 0.1 * k) for k, g in enumerate(names)}
    state = model.make_state(jnp.asarray(-50.0), gates)
    got = state_leaves(state, model)
    assert got["v"] == -50.0 and all(got[g] == float(gates[g]) for g in names), got

    conductances = model.channel_conductances(state)
    assert model.conductances(state) == list(conductances.values())
    currents = model.currents(state)
    assert set(conductances) == set(currents), (set(conductances), set(currents))
    for name, (g, e) in conductances.items():
        assert float(g) >= 0, f"{case.name}: conductance {name} = {float(g)} < 0"
        np.testing.assert_allclose(
            float(currents[name]), float(g) * (-50.0 - float(e)), rtol=1e-12,
            err_msg=f"{case.name}: current {name} != g (v - e)",
        )  # fmt: skip

    thr = np.asarray(model.spike_threshold)
    assert thr.shape == () and np.isfinite(thr), f"{case.name}: spike_threshold {thr}"

    # One Rush-Larsen step of length dt agrees with dt * f(y) to first order in dt.
    y = model.steady_state(-55.0)
    dy = state_leaves(model.vector_field(0.0, y, lambda t: 5.0), model)
    for dt in (1e-4, 1e-5):
        new = state_leaves(model.exp_euler_step(y, 5.0, dt), model)
        old = state_leaves(y, model)
        for name in old:
            np.testing.assert_allclose(
                (new[name] - old[name]) / dt, dy[name], rtol=50 * dt, atol=1e-10,
                err_msg=f"{case.name}: exp_euler_step({name}) is not y + dt f(y) + O(dt²)",
            )  # fmt: skip


@ALL_MODELS
def test_steady_state_is_x_inf(case):
    model = case.model
    for v in (-80.0, -65.0, -40.0, 0.0):
        state = hhjax.steady_state(model, v)
        assert float(state.v) == v
        for gate, (x_inf, _) in model.inf_tau(jnp.asarray(v)).items():
            assert float(getattr(state, gate)) == pytest.approx(float(x_inf), abs=1e-15), (
                f"{case.name}: steady_state({v}).{gate} != {gate}_inf"
            )


# ---------------------------------------------------------------------------- simulate
@ALL_MODELS
def test_simulate_adaptive(case, adaptive):
    n = len(adaptive.ts)
    assert bool(adaptive.ok), f"{case.name}: adaptive solve failed: {adaptive.result}"
    assert n == round(T1 / 0.025) + 1, n  # the documented default save grid of adaptive solves
    np.testing.assert_allclose(np.asarray(adaptive.ts)[[0, -1]], [0.0, T1])
    for name, x in state_leaves(adaptive.state, case.model).items():
        assert x.shape == (n,), f"{case.name}: traj.{name} has shape {x.shape}, not ({n},)"
        assert np.all(np.isfinite(x)), f"{case.name}: traj.{name} is not finite"
    expected_i = np.where(np.asarray(adaptive.ts) >= ONSET, case.amp, 0.0)
    np.testing.assert_array_equal(np.asarray(adaptive.i_stim), expected_i)
    # From rest: nothing moves before the step.
    before = np.asarray(adaptive.v)[np.asarray(adaptive.ts) < ONSET]
    assert np.ptp(before) < 1e-6, f"{case.name}: v drifts at rest by {np.ptp(before)} mV"
    spikes = sampled_spikes(adaptive, case.model)
    assert len(spikes) >= 2 and spikes[0] > ONSET, f"{case.name}: spikes {spikes}"


@ALL_MODELS
def test_simulate_exponential_euler(case, euler, adaptive):
    n = round(T1 / DT) + 1
    assert bool(euler.ok), f"{case.name}: ExponentialEuler solve failed: {euler.result}"
    np.testing.assert_allclose(np.asarray(euler.ts), DT * np.arange(n), atol=1e-12)
    for name, x in state_leaves(euler.state, case.model).items():
        assert x.shape == (n,), f"{case.name}: traj.{name} has shape {x.shape}, not ({n},)"
    ours, ref = sampled_spikes(euler, case.model), sampled_spikes(adaptive, case.model)
    assert len(ours) == len(ref), f"{case.name}: EE spikes {ours} vs adaptive {ref}"
    # The scheme is second order in dt for spike times: ~0.01 ms at 0.025 ms over 40 ms.
    err = np.max(np.abs(ours - ref))
    assert err < 0.1, f"{case.name}: EE spike times {ours} vs adaptive {ref} ({err:.3g} ms)"


@HEAVY
def test_batched_model_equals_per_neuron_runs(case, step, euler_batch):
    model2 = batched(case.model)
    assert bool(np.all(euler_batch.ok)), f"{case.name}: batched solve failed"
    assert euler_batch.v.shape == (2, round(T1 / DT) + 1), euler_batch.v.shape
    for k in range(2):
        one = hhjax.simulate(model2[k], step, T1, solver=hhjax.ExponentialEuler(), dt0=DT)
        got, ref = state_leaves(euler_batch.state, case.model), state_leaves(one.state, case.model)
        for name in ref:
            np.testing.assert_allclose(
                got[name][k], ref[name], rtol=1e-12, atol=1e-12,
                err_msg=f"{case.name}: batched neuron {k}, {name} differs from its own run",
            )  # fmt: skip


# ---------------------------------------------------------------------------- spikes
@HEAVY
def test_simulate_batch(case, step, euler_batch):
    model2 = batched(case.model)
    record = ("v",) + case.model.gate_names
    out = hhjax.simulate_batch(model2, step, T1, dt=DT, record=record)
    assert np.all(np.asarray(out.ok)), f"{case.name}: simulate_batch not ok: {out.ok}"
    # The same scheme and the same midpoint-sampled stimulus as simulate + ExponentialEuler.
    for k in range(2):
        ref = np.asarray(
            hhjax.spike_times(euler_batch.ts[k], euler_batch.v[k], threshold(case.model))
        )
        count = int(out.spike_count[k])
        assert count == len(ref) >= 1, f"{case.name}[{k}]: count {count}, trace spikes {ref}"
        times = np.asarray(out.spike_times[k])
        np.testing.assert_allclose(
            times[:count], ref, atol=5e-3,
            err_msg=f"{case.name}[{k}]: in-step crossing times vs the trace's",
        )  # fmt: skip
        assert np.all(np.isnan(times[count:]))
    np.testing.assert_allclose(np.asarray(out.rate), np.asarray(out.spike_count) * 1000.0 / T1)
    # The final state and the coarse record are the trace's own states.
    final, trace = (
        state_leaves(out.final_state, case.model),
        state_leaves(euler_batch.state, case.model),
    )
    samples = round(T1 / 0.5) + 1
    np.testing.assert_allclose(np.asarray(out.record_ts), 0.5 * np.arange(samples), atol=1e-12)
    assert set(out.record) == set(record), (set(out.record), record)
    for name in record:
        assert final[name].shape == (2,), f"{case.name}: final_state.{name} {final[name].shape}"
        rec = np.asarray(out.record[name])
        assert rec.shape == (2, samples), f"{case.name}: record[{name!r}] shape {rec.shape}"
        np.testing.assert_allclose(
            final[name],
            trace[name][:, -1],
            rtol=1e-9,
            atol=1e-9,
            err_msg=f"{case.name}: final_state.{name}",
        )
        np.testing.assert_allclose(
            rec,
            trace[name][:, ::20],
            rtol=1e-9,
            atol=1e-9,
            err_msg=f"{case.name}: record[{name!r}]",
        )


@HEAVY
def test_spike_times_adaptive(case, step, adaptive):
    out = hhjax.spike_times_adaptive(case.model, step, T1)
    assert bool(out.ok), f"{case.name}: spike_times_adaptive not ok"
    ref = sampled_spikes(adaptive, case.model)
    count = int(out.count)
    times = np.asarray(out.times)
    assert count == len(ref), f"{case.name}: event detector {times[:count]} vs trace {ref}"
    err = np.max(np.abs(times[:count] - ref))
    assert err < 0.05, f"{case.name}: event times {times[:count]} vs trace {ref} ({err:.3g} ms)"
    assert np.all(np.isnan(times[count:]))


# ---------------------------------------------------------------------------- rest and steady
# Jitted: the same values as eager calls, at a fraction of the cost (eager, each of the Newton
# loop's operations is dispatched and compiled on its own).
rest_state_jit = jax.jit(hhjax.rest_state)


@ALL_MODELS
def test_rest_state(case, adaptive):
    model = case.model
    rest = rest_state_jit(model, 0.0)
    dy = state_leaves(model.vector_field(0.0, rest, None), model)
    assert abs(dy["v"]) < 1e-8, f"{case.name}: dv/dt = {dy['v']} mV/ms at rest"
    for gate in model.gate_names:
        assert abs(dy[gate]) < 1e-10, f"{case.name}: d{gate}/dt = {dy[gate]} at rest"
    # Gates at rest are at steady state; simulate starts there by default.
    for gate, (x_inf, _) in model.inf_tau(rest.v).items():
        assert float(getattr(rest, gate)) == pytest.approx(float(x_inf), abs=1e-14)
    start = state_leaves(adaptive.state, model)
    for name, x in state_leaves(rest, model).items():
        assert start[name][0] == pytest.approx(float(x), abs=1e-12), (case.name, name)

    held = rest_state_jit(model, case.i_hold)
    dy = state_leaves(model.vector_field(0.0, held, lambda t: case.i_hold), model)
    assert abs(dy["v"]) < 1e-8, f"{case.name}: dv/dt = {dy['v']} at rest under {case.i_hold}"
    shift = float(held.v) - float(rest.v)
    assert 0.05 < shift < 15.0, f"{case.name}: i_hold = {case.i_hold} moved rest by {shift} mV"


@ALL_MODELS
def test_rest_state_gradient(case):
    model = case.model
    g_l = float(model.g_l)
    rest_v = lambda x: rest_state_jit(model.replace(g_l=x), 0.0).v
    grad = float(jax.jit(jax.grad(lambda x: hhjax.rest_state(model.replace(g_l=x)).v))(g_l))
    h = 1e-4 * g_l
    fd = (float(rest_v(g_l + h)) - float(rest_v(g_l - h))) / (2 * h)
    assert np.isfinite(grad) and grad != 0.0, f"{case.name}: d rest_v / d g_l = {grad}"
    assert grad == pytest.approx(fd, rel=1e-5), f"{case.name}: grad {grad} vs FD {fd}"


def test_rest_state_is_a_root_or_nan():
    # The rest solve returns a root of the steady-state I–V relation or NaN, never a finite
    # non-root: above the knee of a cortical I–V curve (LTS: a local maximum of 0.215 µA/cm²
    # at -47 mV) the cell rests depolarised (a damped Newton iteration alone stopped at
    # -56.9 mV with a 0.6 µA/cm² residual); a hyperpolarising current moves rest down; a
    # membrane without conductances has no rest. Derivatives are implicit, to second order.
    lts = Pospischil.low_threshold()
    rest_lts = jax.jit(lambda i: hhjax.rest_state(lts, i).v)
    for i_hold, (lo, hi) in ((0.5, (-17.0, -15.0)), (-0.1, (-90.0, -54.0))):
        v = float(rest_lts(i_hold))
        assert lo < v < hi, (i_hold, v)
        assert abs(float(lts.steady_current(v)) - i_hold) < 1e-9, (i_hold, v)
    assert np.isnan(float(hhjax.rest_state(hhjax.HHParams(g_na=0.0, g_k=0.0, g_l=0.0)).v))
    p = hhjax.HHParams.neuron()
    rest_v = lambda g: hhjax.rest_state(p.replace(g_l=g)).v
    first, second = jax.jit(jax.grad(rest_v)), jax.jit(jax.grad(jax.grad(rest_v)))
    h = 1e-4
    fd = (float(first(0.3 + h)) - float(first(0.3 - h))) / (2 * h)
    second = float(second(0.3))
    assert second == pytest.approx(fd, rel=1e-5) and second != 0.0, (second, fd)


def test_spike_times_adaptive_float32_passes_a_stimulus_edge_from_rest():
    # From an exact rest state the error estimate is zero and steps grew to 1 ms; at the
    # stimulus edge the float32 solve of HH channels plus an h current then stalled at
    # t = 5.0000005 ms until it ran out of steps (0 spikes, ok False). Steps now start capped
    # at the stability limit of the rest state, as in `simulate`.
    from hhjax.models import HCurrent

    params = dict(COMPOSED_PARAMS, g_h=0.05, e_h=-43.0, temperature=16.3)
    del params["g_m"], params["tau_max"]
    model = Membrane((HHSodium(), HHPotassium(), HCurrent(), Leak()), params)
    out = hhjax.spike_times_adaptive(model.astype(jnp.float32), hhjax.Step(8.0, 5.0), 40.0)
    # 5 spikes: the float64 solve's count (first at 6.82 ms, then every ~7.0 ms).
    assert bool(out.ok) and int(out.count) == 5, (out.ok, out.count, out.num_steps)


# ---------------------------------------------------------------------------- currents
@ALL_MODELS
def test_currents(case, adaptive, step):
    model = case.model
    c = hhjax.currents(model, adaptive)
    names = set(model.currents(model.steady_state(-65.0)))
    assert set(c.channels) == names, f"{case.name}: currents {set(c.channels)} vs {names}"
    n = len(adaptive.ts)
    for name, x in c.channels.items():
        assert np.shape(x) == (n,), f"{case.name}: i_{name} shape {np.shape(x)}"
        np.testing.assert_array_equal(np.asarray(getattr(c, "i_" + name)), np.asarray(x))
    np.testing.assert_allclose(
        np.asarray(c.i_ion), np.asarray(sum(c.channels.values())), rtol=1e-12, atol=1e-12,
        err_msg=f"{case.name}: i_ion != sum of channel currents",
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(c.i_stim), np.asarray(adaptive.i_stim))
    # i_sum = C dv/dt, with dv/dt from the model's vector field at each saved state.
    dvdt = jax.jit(jax.vmap(lambda t, y: model.vector_field(t, y, step).v))(
        adaptive.ts, adaptive.state
    )
    lhs, rhs = np.asarray(c.i_sum), float(model.c_m) * np.asarray(dvdt)
    scale = np.max(np.abs(rhs))
    assert scale > 10.0, f"{case.name}: no spike in the trace ({scale})"
    np.testing.assert_allclose(
        lhs, rhs, rtol=0, atol=1e-10 * scale, err_msg=f"{case.name}: i_sum != C_m dv/dt"
    )


# ---------------------------------------------------------------------------- f-I curve
@pytest.fixture(scope="module")
def fi(case):
    amps = jnp.asarray([0.0, 0.5 * case.amp, case.amp, 2.0 * case.amp])
    # The step of `euler` (onset 5 ms, to T1), counted on the same solver and grid.
    return hhjax.fi_curve(
        case.model, amps, duration=T1 - ONSET, delay=ONSET, dt_save=DT,
        solver=hhjax.ExponentialEuler(), dt0=DT,
    )  # fmt: skip


@HEAVY
def test_fi_curve(case, fi, euler):
    rates, counts = np.asarray(fi.rates), np.asarray(fi.counts)
    assert rates.shape == counts.shape == (4,), (rates.shape, counts.shape)
    assert np.all(np.asarray(fi.ok)), f"{case.name}: fi_curve solves failed: {fi.ok}"
    assert rates[0] == 0.0 and counts[0] == 0, f"{case.name}: spikes at 0 current: {rates}"
    one_spike = 1000.0 / (T1 - ONSET)
    assert np.all(np.diff(rates) >= -one_spike), f"{case.name}: rates decrease: {rates}"
    assert rates[-1] > rates[1] and rates[-1] >= 2 * one_spike, f"{case.name}: {rates}"
    np.testing.assert_allclose(rates, counts * one_spike)
    assert counts[2] == len(sampled_spikes(euler, case.model)), (
        f"{case.name}: fi_curve counts {counts[2]} at {case.amp} µA/cm², the same solve "
        f"through simulate has {len(sampled_spikes(euler, case.model))}"
    )


# ---------------------------------------------------------------------------- plots
def _lines(fig: Figure) -> int:
    return sum(len(ax.get_lines()) for ax in fig.axes)


def _drawn(fig) -> Figure:
    assert isinstance(fig, Figure), type(fig)
    fig.canvas.draw()  # Agg: lays out and renders without a display
    return fig


@ALL_MODELS
def test_plots_of_a_trajectory(case, adaptive, euler):
    model = case.model
    gates = model.gate_names
    _drawn(plot.voltage(adaptive))
    _drawn(plot.voltage([adaptive, euler], labels=["Tsit5", "ExponentialEuler"]))
    fig = _drawn(plot.gates(adaptive, names=gates))
    assert _lines(fig) == len(gates), f"{case.name}: plot.gates drew {_lines(fig)} lines"
    fig = _drawn(plot.phase_plane(adaptive, pairs=[("v", g) for g in gates]))
    assert len(fig.axes) == len(gates), f"{case.name}: phase_plane has {len(fig.axes)} axes"
    # The model's currents: one line per channel, and I_sum.
    channels = tuple(model.currents(model.steady_state(-65.0)))
    fig = _drawn(plot.currents(model, adaptive))
    assert _lines(fig) == len(channels) + 1, (
        f"{case.name}: plot.currents drew {_lines(fig)} lines for channels {channels} + I_sum"
    )
    fig = _drawn(plot.overview(model, adaptive))
    assert len(fig.axes) == 4, f"{case.name}: overview has {len(fig.axes)} axes"


@HEAVY
def test_plots_of_a_batch_and_an_fi_curve(case, euler_batch, fi):
    thr = threshold(case.model)
    fig = _drawn(plot.raster(euler_batch, threshold=thr))
    ticks = len(fig.axes[0].collections[0].get_offsets())
    spikes = sum(len(hhjax.spike_times(euler_batch.ts[k], euler_batch.v[k], thr)) for k in range(2))
    assert ticks == spikes, f"{case.name}: raster shows {ticks} ticks for {spikes} spikes"
    _drawn(plot.voltage(euler_batch))
    fig = _drawn(plot.batch_heatmap(euler_batch))
    assert fig.axes[0].images[0].get_array().shape == euler_batch.v.shape
    fig = _drawn(plot.fi_curve(fi))
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_ydata(), np.asarray(fi.rates))


# ---------------------------------------------------------------------------- fitting
@ALL_MODELS
def test_fit_accepts_the_model(case):
    """What `fit` checks before any solve: the free fields exist on the model, are scalars, and
    are written back into a model of the same type."""
    model = case.model
    spec = hf.FreeParams.make(("g_l", "e_l"), model)
    theta = spec.to_theta(jnp.asarray([2.0 * float(model.g_l), -60.0]))
    moved = spec.apply(theta, model)
    assert type(moved) is type(model), type(moved)
    assert float(moved.g_l) == pytest.approx(2.0 * float(model.g_l), rel=1e-12)
    assert float(moved.e_l) == pytest.approx(-60.0, rel=1e-12)
    assert float(moved.c_m) == float(model.c_m)


# One compiled fit costs ~10 s: under `-m slow` only (HH's fit is tested in test_fitting.py).
@pytest.mark.slow
@pytest.mark.parametrize("case", [*IDS, "pospischil-fs"], indirect=True)
def test_fit_recovers_passive_fields(case):
    model = case.model
    name = case.name
    # On the save grid of `adaptive` (0..T1 every 0.025 ms): the compiled solve is reused.
    data = hhjax.simulate(model, hhjax.Step(case.i_fit, ONSET, 30.0), T1)
    ts = np.asarray(data.ts)
    noise = 0.1 * np.random.default_rng(0).standard_normal(ts.shape)
    rec = hf.Recording(ts, np.asarray(data.v) + noise, np.asarray(data.i_stim), sigma=0.1)
    true = {"g_l": float(model.g_l), "e_l": float(model.e_l)}
    start = model.replace(g_l=1.4 * true["g_l"], e_l=true["e_l"] + 4.0)
    res = hf.fit(rec, free=("g_l", "e_l"), params0=start)
    assert type(res.params) is type(model), type(res.params)
    assert res.values["g_l"] == pytest.approx(true["g_l"], rel=0.05), (name, res.values)
    assert res.values["e_l"] == pytest.approx(true["e_l"], abs=0.5), (name, res.values)
    assert float(res.params.g_l) == pytest.approx(res.values["g_l"])
    assert np.std(np.asarray(res.trace.residual)) < 0.2, f"{name}: residuals {res.sigma} mV"


# ---------------------------------------------------------------------------- scipy reference
def composed_reference_rhs(p, current):
    """The composed model's right-hand side, y = (v, m, h, n, p), written out in numpy from
    Hodgkin & Huxley (1952) and Yamada et al. (1989) as in Pospischil et al. (2008)."""
    phi = 3.0 ** ((p["temperature"] - 6.3) / 10.0)

    def f(t, y):
        v, m, h, n, q = y
        am, bm, ah, bh, an, bn = rates_1952(v - p["v_ref"])
        q_inf = 1.0 / (1.0 + np.exp(-(v + 35.0) / 10.0))
        tau_q = p["tau_max"] / (3.3 * np.exp((v + 35.0) / 20.0) + np.exp(-(v + 35.0) / 20.0))
        i_ion = (
            p["g_na"] * m**3 * h * (v - p["e_na"])
            + p["g_k"] * n**4 * (v - p["e_k"])
            + p["g_m"] * q * (v - p["e_k"])
            + p["g_l"] * (v - p["e_l"])
        )
        return [
            (current - i_ion) / p["c_m"],
            phi * (am * (1 - m) - bm * m),
            phi * (ah * (1 - h) - bh * h),
            phi * (an * (1 - n) - bn * n),
            (q_inf - q) / tau_q,
        ]

    return f


def composed_reference_y0(p, v0):
    am, bm, ah, bh, an, bn = rates_1952(v0 - p["v_ref"])
    q_inf = 1.0 / (1.0 + np.exp(-(v0 + 35.0) / 10.0))
    return np.array([v0, am / (am + bm), ah / (ah + bh), an / (an + bn), q_inf])


def test_composed_model_matches_scipy():
    from scipy.integrate import solve_ivp

    model = composed_model()
    amp, on, off, t1 = 10.0, 5.0, 35.0, 50.0
    ts = np.arange(0.0, t1 + 1e-9, DT)
    y0 = composed_reference_y0(COMPOSED_PARAMS, -65.0)
    ours_y0 = hhjax.steady_state(model, -65.0)
    np.testing.assert_allclose(
        [float(getattr(ours_y0, name)) for name in ("v", "m", "h", "n", "p")], y0, rtol=1e-13,
        err_msg="steady_state(-65) differs from the numpy x_inf",
    )  # fmt: skip
    traj = hhjax.simulate(
        model, hhjax.Step(amp, on, off), t1, ts=ts, y0=ours_y0, rtol=1e-10, atol=1e-10
    )
    assert bool(traj.ok)

    ref = np.empty((5, len(ts)))
    y = y0
    for a, b, current in ((0.0, on, 0.0), (on, off, amp), (off, t1, 0.0)):
        sel = (ts >= a - 1e-9) & (ts <= b + 1e-9)
        t_eval = np.union1d(ts[sel], [b])
        sol = solve_ivp(
            composed_reference_rhs(COMPOSED_PARAMS, current),
            (a, b),
            y,
            method="LSODA",
            rtol=1e-11,
            atol=1e-11,
            t_eval=t_eval,
        )
        assert sol.success, sol.message
        ref[:, sel] = sol.y[:, np.isin(t_eval, ts[sel])]
        y = sol.y[:, -1]

    v, v_ref = np.asarray(traj.v), ref[0]
    err = np.max(np.abs(v - v_ref))
    spikes = hhjax.spike_times(ts, v_ref, 0.0)
    assert len(spikes) >= 2, f"the reference trace should spike: {spikes}"
    assert err < 1e-3, f"composed model vs scipy LSODA: max |dv| = {err:.3g} mV"
    for k, name in enumerate(("m", "h", "n", "p"), start=1):
        gate_err = np.max(np.abs(np.asarray(getattr(traj, name)) - ref[k]))
        assert gate_err < 1e-4, f"composed model vs scipy: max |d{name}| = {gate_err:.3g}"
    print(f"composed vs scipy LSODA: max |dv| = {err:.3g} mV over {len(spikes)} spikes")
