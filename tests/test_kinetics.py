"""Rate functions: values and gradients finite and exact at the 0/0 points and over ±200 mV."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rates_1952

import hhjax
from hhjax import kinetics as K

V = np.linspace(-200.0, 200.0, 4001)


def test_seed_formulas_are_nan_at_the_singular_points():
    # The seeds' direct formulas are 0/0 at u = 10 (alpha_n) and u = 25 (alpha_m).
    with np.errstate(invalid="ignore", divide="ignore"):
        am, _, _, _, an, _ = rates_1952(np.array([25.0, 10.0]))
    assert np.isnan(am[0]) and np.isnan(an[1])


@pytest.mark.parametrize(
    "fn, u0, value, slope",
    # limits of a (c-u)/(exp((c-u)/k)-1): value a*k, slope d/du = a/2 (with a*k scaling)
    [(K.alpha_n, 10.0, 0.1, 0.1 / 20.0), (K.alpha_m, 25.0, 1.0, 1.0 / 20.0)],
)
def test_singular_points_exact(fn, u0, value, slope):
    assert float(fn(u0)) == pytest.approx(value, rel=1e-15)
    g = float(jax.grad(fn)(jnp.asarray(u0)))
    assert g == pytest.approx(slope, rel=1e-12)
    # Continuity: the values and slopes just beside the point agree with the direct formula.
    for du in (1e-2, -1e-2):
        u = u0 + du
        direct = rates_1952(u)[4 if fn is K.alpha_n else 0]
        assert float(fn(u)) == pytest.approx(direct, rel=1e-12)
        fd = (rates_1952(u + 1e-4)[4 if fn is K.alpha_n else 0]
              - rates_1952(u - 1e-4)[4 if fn is K.alpha_n else 0]) / 2e-4
        assert float(jax.grad(fn)(jnp.asarray(u))) == pytest.approx(fd, rel=1e-6)


def test_rates_match_direct_formulas_and_are_finite_on_pm200():
    u = jnp.asarray(V)
    ours = [K.alpha_m(u), K.beta_m(u), K.alpha_h(u), K.beta_h(u), K.alpha_n(u), K.beta_n(u)]
    mask = (np.abs(V - 10.0) > 1e-6) & (np.abs(V - 25.0) > 1e-6)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = rates_1952(V)
    for a, b in zip(ours, ref):
        a = np.asarray(a)
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a[mask], b[mask], rtol=1e-12)
    for fn in (K.alpha_m, K.beta_m, K.alpha_h, K.beta_h, K.alpha_n, K.beta_n):
        grads = jax.vmap(jax.grad(fn))(u)
        assert np.all(np.isfinite(np.asarray(grads)))


@pytest.mark.parametrize("preset", [hhjax.HHParams, hhjax.HHParams.squid_1952])
def test_vector_field_gradient_finite_at_singular_voltages(preset):
    p = preset()
    for v in (p.v_ref + 10.0, p.v_ref + 25.0, p.v_ref - 200.0, p.v_ref + 200.0):
        y = hhjax.HHState(jnp.asarray(v), jnp.asarray(0.3), jnp.asarray(0.5), jnp.asarray(0.4))

        def total(y, p):
            dy = hhjax.vector_field(0.0, y, (p, None))
            return dy.v + dy.m + dy.h + dy.n

        gy, gp = jax.grad(total, argnums=(0, 1))(y, p)
        leaves = jax.tree_util.tree_leaves((gy, gp))
        assert all(np.isfinite(np.asarray(x)) for x in leaves)


def test_gates_inf_in_unit_interval_and_temperature_q10():
    p = hhjax.HHParams()
    for x in hhjax.gates_inf(p, jnp.asarray(V)):
        assert np.all((np.asarray(x) >= 0) & (np.asarray(x) <= 1))
    assert float(K.temperature_factor(16.3)) == pytest.approx(3.0)
    assert float(K.temperature_factor(6.3)) == 1.0
