"""The Pospischil cortical model family against independent references.

References: the rate equations of Pospischil et al. 2008 written out again here in plain numpy,
integrated with scipy's LSODA at tight tolerance; analytic limits of the Traub rates at their
0/0 points; the analytic charging curve of a passive membrane.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

import hhjax
from hhjax.models import (
    GATES,
    CaL,
    CaT,
    HCurrent,
    KdTraub,
    NaTraub,
    Pospischil,
    integrate,
    pa_to_density,
    traub_rates,
)


# ---------------------------------------------------------------- independent numpy reference
def ref_rates(v, vt, tau_max):
    """Pospischil 2008 Eqs. (Traub–Miles with V_T; Yamada M current), written from the paper."""
    am = -0.32 * (v - vt - 13) / (np.exp(-(v - vt - 13) / 4) - 1)
    bm = 0.28 * (v - vt - 40) / (np.exp((v - vt - 40) / 5) - 1)
    ah = 0.128 * np.exp(-(v - vt - 17) / 18)
    bh = 4 / (1 + np.exp(-(v - vt - 40) / 5))
    an = -0.032 * (v - vt - 15) / (np.exp(-(v - vt - 15) / 5) - 1)
    bn = 0.5 * np.exp(-(v - vt - 10) / 40)
    p_inf = 1 / (1 + np.exp(-(v + 35) / 10))
    tau_p = tau_max / (3.3 * np.exp((v + 35) / 20) + np.exp(-(v + 35) / 20))
    return am, bm, ah, bh, an, bn, p_inf, tau_p


def ref_rhs(t, y, p, amp, on, off):
    v, m, h, n, q = y
    am, bm, ah, bh, an, bn, p_inf, tau_p = ref_rates(v, p["v_t"], p["tau_max"])
    i = amp if on <= t < off else 0.0
    i_ion = (
        p["g_na"] * m**3 * h * (v - p["e_na"])
        + p["g_kd"] * n**4 * (v - p["e_k"])
        + p["g_m"] * q * (v - p["e_k"])
        + p["g_l"] * (v - p["e_l"])
    )
    return [
        (i - i_ion) / p["c_m"],
        am * (1 - m) - bm * m,
        ah * (1 - h) - bh * h,
        an * (1 - n) - bn * n,
        (p_inf - q) / tau_p,
    ]


def ref_rest(p):
    def i_ss(v):
        am, bm, ah, bh, an, bn, p_inf, _ = ref_rates(v, p["v_t"], p["tau_max"])
        m, h, n = am / (am + bm), ah / (ah + bh), an / (an + bn)
        return (
            p["g_na"] * m**3 * h * (v - p["e_na"])
            + p["g_kd"] * n**4 * (v - p["e_k"])
            + p["g_m"] * p_inf * (v - p["e_k"])
            + p["g_l"] * (v - p["e_l"])
        )

    return brentq(i_ss, -90.0, -60.0, xtol=1e-12)


def ref_spikes(model, amp, on, off, t1):
    p = {k: float(v) for k, v in model.to_dict().items()}
    v0 = ref_rest(p)
    am, bm, ah, bh, an, bn, p_inf, _ = ref_rates(v0, p["v_t"], p["tau_max"])
    y0 = [v0, am / (am + bm), ah / (ah + bh), an / (an + bn), p_inf]
    ts = []
    for a, b in ((0.0, on), (on, off), (off, t1)):
        sol = solve_ivp(
            ref_rhs,
            (a, b),
            y0,
            args=(p, amp, on, off),
            method="LSODA",
            rtol=1e-10,
            atol=1e-10,
            dense_output=True,
            max_step=0.05,
        )
        y0 = sol.y[:, -1]
        grid = np.arange(a, b, 0.005)
        v = sol.sol(grid)[0]
        k = np.flatnonzero((v[:-1] < 0) & (v[1:] >= 0))
        ts += list(grid[k] - v[k] * 0.005 / (v[k + 1] - v[k]))
    return np.array(ts), v0


# ---------------------------------------------------------------- rates
def test_rates_match_paper_equations():
    v = np.linspace(-100.0, 50.0, 301) + 0.123  # avoid the exact 0/0 points here
    vt, tau_max = -56.2, 608.0
    ref = ref_rates(v, vt, tau_max)
    got = traub_rates(jnp.asarray(v), vt)
    mine = [*got["m"], *got["h"], *got["n"]]
    for a, b in zip(mine, ref[:6]):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-10)
    p_inf, tau_p = Pospischil(tau_max=tau_max).inf_tau(jnp.asarray(v))["p"]
    np.testing.assert_allclose(np.asarray(p_inf), ref[6], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(tau_p), ref[7], rtol=1e-12)


@pytest.mark.parametrize(
    "gate, index, offset, limit, slope",
    [
        # a*u/(1-exp(-u/k)) -> a*k at u=0, derivative a/2; beta_m has the mirrored form.
        ("m", 0, 13.0, 0.32 * 4, 0.32 / 2),
        ("m", 1, 40.0, 0.28 * 5, -0.28 / 2),
        ("n", 0, 15.0, 0.032 * 5, 0.032 / 2),
    ],
)
def test_traub_rates_finite_at_removable_singularity(gate, index, offset, limit, slope):
    vt = -56.2
    v = jnp.asarray(vt + offset)
    f = lambda v: traub_rates(v, vt)[gate][index]
    value, grad = jax.value_and_grad(f)(v)
    assert np.isfinite(float(value)) and np.isfinite(float(grad))
    np.testing.assert_allclose(float(value), limit, rtol=1e-12)
    np.testing.assert_allclose(float(grad), slope, rtol=1e-6)
    # also the gradient with respect to V_T (the shift), which flows through the same point
    g_vt = jax.grad(lambda s: traub_rates(v, s)[gate][index])(jnp.asarray(vt))
    np.testing.assert_allclose(float(g_vt), -slope, rtol=1e-6)


def test_cal_alpha_q_finite_at_singularity():
    m = Pospischil.intrinsically_bursting()
    f = lambda v: m.inf_tau(v)["q"][0]
    value, grad = jax.value_and_grad(f)(jnp.asarray(-27.0))
    assert np.isfinite(float(value)) and np.isfinite(float(grad))
    # alpha_q = 0.055(-27-v)/(exp((-27-v)/3.8)-1): q_inf continuous through v = -27
    near = 0.5 * (float(f(jnp.asarray(-27.0 - 1e-5))) + float(f(jnp.asarray(-27.0 + 1e-5))))
    np.testing.assert_allclose(float(value), near, rtol=1e-8)


# ---------------------------------------------------------------- rest and dynamics
@pytest.mark.parametrize(
    "preset",
    [
        "regular_spiking",
        "fast_spiking",
        "intrinsically_bursting",
        "low_threshold",
        "regular_spiking_h",
    ],
)
def test_rest_state_is_a_fixed_point(preset):
    m = getattr(Pospischil, preset)()
    y = m.rest_state()
    dy = m.vector_field(0.0, y, None)
    for name in ("v", *GATES):
        assert abs(float(getattr(dy, name))) < 1e-9, name
    for name in GATES:
        assert 0.0 <= float(getattr(y, name)) <= 1.0


def test_rest_matches_reference_root():
    m = Pospischil()
    p = {k: float(v) for k, v in m.to_dict().items()}
    np.testing.assert_allclose(float(m.rest_state().v), ref_rest(p), atol=1e-9)


def test_simulate_matches_scipy_reference():
    """hhjax.simulate (Tsit5, tight) vs an independent numpy model under scipy LSODA."""
    m = Pospischil()
    amp, on, off, t1 = 3.0, 20.0, 120.0, 140.0
    ref_t, _ = ref_spikes(m, amp, on, off, t1)
    traj = hhjax.simulate(
        m, hhjax.Step(amp, on, off), t1, rtol=1e-9, atol=1e-9, dt_save=0.01, max_steps=400_000
    )
    got = np.asarray(hhjax.spike_times(traj.ts, traj.v))
    got = got[np.isfinite(got)]
    assert got.size == ref_t.size >= 3
    # both spike-time estimates are good to ~1e-4 ms; tolerance covers interpolation
    np.testing.assert_allclose(got, ref_t, atol=2e-3)


def test_exponential_euler_matches_reference_spike_times():
    m = Pospischil()
    amp, on, off, t1, dt = 3.0, 20.0, 220.0, 240.0, 0.025
    ref_t, _ = ref_spikes(m, amp, on, off, t1)
    steps = int(round(t1 / dt))
    tm = (np.arange(steps) + 0.5) * dt
    v = np.asarray(integrate(m, np.where((tm >= on) & (tm < off), amp, 0.0), dt))
    t = np.arange(steps + 1) * dt
    k = np.flatnonzero((v[:-1] < 0) & (v[1:] >= 0))
    got = t[k] - v[k] * dt / (v[k + 1] - v[k])
    assert got.size == ref_t.size
    # first-order scheme: spike times drift by O(dt) per spike; stated bound 0.5 ms at 0.025 ms
    np.testing.assert_allclose(got, ref_t, atol=0.5)


def test_passive_membrane_exact_charging_curve():
    """With every channel off, exponential Euler is exact: v = E_L + I/g (1 - e^{-g t/C})."""
    m = Pospischil(g_na=0.0, g_kd=0.0, g_m=0.0, g_l=0.05, e_l=-65.0, c_m=1.3)
    dt, steps, amp = 0.1, 500, 0.4
    v = np.asarray(integrate(m, np.full(steps, amp), dt))
    t = np.arange(steps + 1) * dt
    exact = -65.0 + amp / 0.05 * (1 - np.exp(-0.05 * t / 1.3))
    np.testing.assert_allclose(v, exact, atol=1e-10)


def test_channels_compose():
    """A model without the M channel equals the full model with g_M = 0 (same trajectory)."""
    full = Pospischil(g_m=0.0)
    no_m = Pospischil(channels=(NaTraub(), KdTraub()))
    i = np.where(np.arange(4000) * 0.05 > 20.0, 3.0, 0.0)
    np.testing.assert_allclose(
        np.asarray(integrate(full, i, 0.05)), np.asarray(integrate(no_m, i, 0.05)), atol=1e-10
    )
    with pytest.raises(ValueError, match="same gate"):
        Pospischil(channels=(NaTraub(), NaTraub()))


def test_ca_channels_change_dynamics():
    base = Pospischil.low_threshold(g_cat=0.0)
    lts = Pospischil.low_threshold()
    assert isinstance(lts.channels[-1], CaT)
    assert isinstance(Pospischil.intrinsically_bursting().channels[-1], CaL)
    i = np.zeros(2000)
    assert not np.allclose(integrate(base, i, 0.1), integrate(lts, i, 0.1))


def test_parameter_validation_names_field():
    with pytest.raises(ValueError, match="g_na"):
        Pospischil(g_na=-1.0)
    with pytest.raises(ValueError, match="area"):
        Pospischil(area=0.0)
    with pytest.raises(TypeError, match="no field"):
        Pospischil().replace(g_k=1.0)


def test_unit_conversion():
    # 100 pA on 1e-4 cm² (10 000 µm²) is 1 µA/cm²; 1 pA on 1e-8 cm² (1 µm²) is 100 µA/cm².
    np.testing.assert_allclose(float(pa_to_density(100.0, 1e-4)), 1.0, rtol=1e-14)
    np.testing.assert_allclose(float(pa_to_density(1.0, 1e-8)), 100.0, rtol=1e-14)


def test_batch_equals_single_and_grad_matches_fd():
    models = Pospischil(g_l=jnp.array([0.02, 0.03]))
    i = np.where(np.arange(300) * 0.1 > 5.0, -0.5, 0.0)
    batch = jax.vmap(lambda m: integrate(m, i, 0.1))(models.broadcast())
    for k, g in enumerate([0.02, 0.03]):
        np.testing.assert_allclose(batch[k], integrate(Pospischil(g_l=g), i, 0.1), atol=1e-12)

    y0 = Pospischil().steady_state(-70.0)  # fixed start: the gradient is through the scan only

    def loss(g_l):
        return jnp.mean(integrate(Pospischil(g_l=g_l), i, 0.1, y0)[-100:])

    g = float(jax.grad(loss)(0.02))
    h = 1e-6
    fd = (float(loss(0.02 + h)) - float(loss(0.02 - h))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_float32_runs_and_keeps_dtype():
    m = Pospischil().astype(jnp.float32)
    i = np.where(np.arange(4000) * 0.05 > 20.0, 3.0, 0.0).astype(np.float32)
    v = integrate(m, jnp.asarray(i), 0.05)
    assert v.dtype == jnp.float32
    v64 = integrate(Pospischil(), i.astype(np.float64), 0.05)
    # same spike count; float32 round-off moves spike times by << 1 ms over 200 ms
    count = lambda v: int(np.sum((np.asarray(v)[:-1] < 0) & (np.asarray(v)[1:] >= 0)))
    assert count(v) == count(v64) > 0


def test_simulate_accepts_fixed_step_solver():
    m = Pospischil()
    traj = hhjax.simulate(m, hhjax.Step(3.0, 5.0, 30.0), 30.0, solver=diffrax.Euler(), dt0=0.01)
    assert bool(traj.ok) and traj.state.p.shape == traj.v.shape


def test_h_current_gives_sag():
    """With I_h a hyperpolarising step sags back (minimum below the plateau); without, not."""
    i = np.where(np.arange(12000) * 0.1 >= 100.0, -1.0, 0.0)
    with_h = np.asarray(integrate(Pospischil.regular_spiking_h(g_h=0.05), i, 0.1))
    without = np.asarray(integrate(Pospischil(), i, 0.1))
    assert isinstance(Pospischil.regular_spiking_h().channels[-1], HCurrent)
    assert with_h.min() < with_h[-1] - 1.0
    assert without.min() > without[-1] - 0.1


def test_data_features_on_known_trace():
    """Spikes placed by hand: count, latency, ISI, rest and steady state known exactly."""
    from hhjax.models import data_features

    t = np.arange(0.0, 700.0, 0.05)
    v = np.full_like(t, -65.0)
    v[(t >= 100) & (t < 600)] = -50.0
    for s in (130.0, 180.0, 250.0):  # 2-ms triangular spikes peaking at +20 mV
        k = np.abs(t - s) < 1.0
        v[k] = 20.0 - 70.0 * np.abs(t[k] - s)
    noisy = (t > 560) & (t < 590)
    v[noisy] = 0.3 * np.sin(t[noisy] * 40.0)  # noise around 0 mV: not spikes (re-arm)
    f = data_features(t, v, 100.0, 600.0)
    assert f.count == 4  # three spikes plus the first upward crossing into the noisy plateau
    np.testing.assert_allclose(f.latency, 30.0 - 20.0 / 70.0, atol=1e-9)
    np.testing.assert_allclose(f.rest, -65.0)
    assert f.steady > -50.0  # the plateau pulls the last-100-ms mean up
