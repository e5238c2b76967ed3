"""The Hodgkin–Huxley vector field and membrane currents.

Units: mV, ms, µA/cm², mS/cm², µF/cm².

$$C_m \\frac{dv}{dt} = I_{\\mathrm{stim}}(t) - \\bar g_{Na} m^3 h (v - E_{Na})
    - \\bar g_K n^4 (v - E_K) - g_L (v - E_L)$$
$$\\frac{dx}{dt} = \\phi(T)\\,[\\alpha_x(u)(1 - x) - \\beta_x(u) x], \\quad x \\in \\{m, h, n\\},
    \\quad u = v - v_{\\mathrm{ref}}$$
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from . import _kinetics as K
from ._params import HHParams

__all__ = ["HHState", "Currents", "vector_field", "ionic_currents", "gate_rates", "gates_inf"]


class HHState(eqx.Module):
    """State of one (or a batch of) HH membrane(s): voltage (mV) and the three gates."""

    v: Array
    m: Array
    h: Array
    n: Array

    def __iter__(self):
        return iter((self.v, self.m, self.h, self.n))


class Currents(eqx.Module):
    """Membrane current densities (µA/cm², outward positive for ionic currents).

    - `i_na`, `i_k`, `i_l`: the sodium, potassium and leak currents.
    - `i_ion`: their sum.
    - `i_stim`: the injected (stimulus) current, inward positive.
    - `i_sum`: the net current charging the membrane, `i_stim - i_ion` = $C_m\\,dv/dt$
      (seed 000's "Isum").
    """

    i_na: Array
    i_k: Array
    i_l: Array
    i_ion: Array
    i_stim: Array
    i_sum: Array


def gate_rates(params: HHParams, v: ArrayLike) -> tuple[tuple[Array, Array], ...]:
    """Temperature-scaled $(\\alpha, \\beta)$ pairs (1/ms) for m, h and n at voltage `v` (mV)."""
    u = jnp.asarray(v) - params.v_ref
    phi = K.temperature_factor(params.temperature)
    return (
        (phi * K.alpha_m(u), phi * K.beta_m(u)),
        (phi * K.alpha_h(u), phi * K.beta_h(u)),
        (phi * K.alpha_n(u), phi * K.beta_n(u)),
    )


def gates_inf(params: HHParams, v: ArrayLike) -> tuple[Array, Array, Array]:
    """Steady-state gates $(m_\\infty, h_\\infty, n_\\infty)$ at voltage `v` (mV)."""
    return tuple(a / (a + b) for a, b in gate_rates(params, v))


def ionic_currents(params: HHParams, v, m, h, n) -> tuple[Array, Array, Array]:
    """Na, K and leak current densities (µA/cm²) for the given state."""
    i_na = params.g_na * m**3 * h * (v - params.e_na)
    i_k = params.g_k * n**4 * (v - params.e_k)
    i_l = params.g_l * (v - params.e_l)
    return i_na, i_k, i_l


def vector_field(t, y: HHState, args) -> HHState:
    """The HH right-hand side $f(t, y, \\mathrm{args})$, pure and jit/vmap/grad-friendly.

    **Arguments:**

    - `t`: time (ms), scalar.
    - `y`: an [`HHState`][].
    - `args`: `(params, stimulus)`: an [`HHParams`][] and a stimulus (any callable `t -> µA/cm²`,
      e.g. [`hhjax.Step`][]) or `None` for no injected current.

    **Returns:**

    The time derivative as an [`HHState`][] (mV/ms and 1/ms).
    """
    params, stimulus = args
    return _derivative(t, y, params, stimulus, gate_rates(params, y.v))


def _derivative(t, y: HHState, params: HHParams, stimulus, rates) -> HHState:
    """The right-hand side given the gate rates `((am, bm), (ah, bh), (an, bn))` at `y.v`."""
    v, m, h, n = y.v, y.m, y.h, y.n
    i_na, i_k, i_l = ionic_currents(params, v, m, h, n)
    i_stim = 0.0 if stimulus is None else stimulus(t)
    dv = (i_stim - i_na - i_k - i_l) / params.c_m
    (am, bm), (ah, bh), (an, bn) = rates
    return HHState(
        v=dv,
        m=am * (1.0 - m) - bm * m,
        h=ah * (1.0 - h) - bh * h,
        n=an * (1.0 - n) - bn * n,
    )
