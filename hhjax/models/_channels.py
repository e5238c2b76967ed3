"""Ion channels, one small Module each: the parts every hhjax membrane model is composed of.

Units: mV, ms, mS/cm², µA/cm².

A channel owns some gates of its model's state and reads the parameters it needs (conductance,
reversal, threshold shift) from the model it belongs to, by name (listed in its `params`), so
parameters shared by several channels (the threshold shift $V_T$ of Na and K_d, the K reversal
$E_K$ of K_d and M) are one field. Every channel supplies, for the voltage $v$:

- `inf_tau(model, v)`: `{gate: (x_inf, tau)}` for the gates it owns (tau in ms);
- `conductance(model, v, state)`: `(g, e)`, the present conductance (mS/cm²) and reversal (mV),
  so the channel current is $g\\,(v - e)$ (µA/cm²) and all currents are linear in $v$ for frozen
  gates (which the exponential-Euler step uses).

[`Leak`][] and the classic squid-axon channels [`HHSodium`][] and [`HHPotassium`][] (Hodgkin &
Huxley 1952, with the $Q_{10} = 3$ temperature scaling of NEURON's hh.mod) are channels like the
cortical ones: [`hhjax.HHParams`][] is their composition, and [`hhjax.models.Membrane`][]
composes any set of them.

Rates follow Pospischil et al. 2008, Biol Cybern 99:427, Table/Eqs. 1–9 (Traub & Miles 1991 for
Na and K_d, with threshold shift $V_T$; Yamada et al. 1989 for the slow M current; Reuveni et
al. 1993 for I_L; Destexhe et al. 1996 for I_T). [`HCurrent`][] (Huguenard & McCormick 1992)
is not in Pospischil's family; it is offered for cells with a hyperpolarisation sag.
The Traub rates have the form $a (v - c) / (1 - e^{-(v - c)/k})$, 0/0 at $v = c$; they are
evaluated through
[`hhjax.kinetics.xexpm1`][], finite with finite gradients there.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import _kinetics as K
from .._kinetics import exp_safe, xexpm1

__all__ = [
    "AbstractChannel",
    "Leak",
    "HHSodium",
    "HHPotassium",
    "NaTraub",
    "KdTraub",
    "MSlow",
    "CaL",
    "CaT",
    "HCurrent",
    "traub_rates",
]


def _linoid(a, u, k):
    r"""$a\,u / (1 - e^{-u/k}) = a\,k \cdot x/(e^{x}-1)$ with $x = -u/k$; 1/ms, NaN-safe at u=0."""
    return a * k * xexpm1(-u / k)


def traub_rates(v, v_t):
    """Traub–Miles rates (1/ms) of the gates m, h, n at voltage `v` with threshold shift `v_t`.

    **Returns:** `dict(m=(alpha, beta), h=(alpha, beta), n=(alpha, beta))`.
    """
    u = v - v_t
    alpha_m = _linoid(0.32, u - 13.0, 4.0)
    beta_m = _linoid(0.28, -(u - 40.0), 5.0)
    alpha_h = 0.128 * exp_safe(-(u - 17.0) / 18.0)
    beta_h = 4.0 * jnp.exp(-jnp.logaddexp(0.0, -(u - 40.0) / 5.0))  # 4/(1+e^{-(u-40)/5})
    alpha_n = _linoid(0.032, u - 15.0, 5.0)
    beta_n = 0.5 * exp_safe(-(u - 10.0) / 40.0)
    return dict(m=(alpha_m, beta_m), h=(alpha_h, beta_h), n=(alpha_n, beta_n))


def _from_rates(alpha, beta):
    total = alpha + beta
    return alpha / total, 1.0 / total


def _sigmoid(x):
    # 1/(1 + e^{-x}) overflows for x < -88 (float32); jax.nn.sigmoid never does.
    return jax.nn.sigmoid(x)


class AbstractChannel(eqx.Module):
    """A membrane current: the gates it owns, their kinetics, and its conductance.

    Class attributes: `gates` (names of the gates it owns), `name` (the current's name in
    [`hhjax.AbstractModel.currents`][]) and `params` (the model fields it reads).
    """

    gates: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str] = ""
    params: ClassVar[tuple[str, ...]] = ()

    def inf_tau(self, model, v) -> dict:
        """`{gate: (x_inf, tau_ms)}` at voltage `v` (mV) for the gates this channel owns."""
        return {}

    def conductance(self, model, v, state):
        """`(g, e)`: present conductance (mS/cm²) and reversal potential (mV)."""
        raise NotImplementedError

    def current(self, model, v, state):
        """The channel current (µA/cm², outward positive)."""
        g, e = self.conductance(model, v, state)
        return g * (v - e)


class Leak(AbstractChannel):
    r"""The leak: $I_L = g_L (v - E_L)$, no gates."""

    name: ClassVar[str] = "l"
    params: ClassVar[tuple[str, ...]] = ("g_l", "e_l")

    def conductance(self, model, v, state):
        return model.g_l, model.e_l


def _hh_inf_tau(model, alpha, beta):
    # x_inf = α/(α+β) and τ = 1/(φ(α+β)): the Q10 factor φ scales both rates.
    phi = K.temperature_factor(model.temperature)
    return K.gate_inf_tau(alpha, beta, phi)


class HHSodium(AbstractChannel):
    r"""The squid axon's Na current: $\bar g_{Na} m^3 h (v - E_{Na})$ (Hodgkin & Huxley 1952).

    Rates from [`hhjax.kinetics`][] at $u = v - v_{ref}$, scaled by $3^{(T - 6.3)/10}$.
    """

    gates: ClassVar[tuple[str, ...]] = ("m", "h")
    name: ClassVar[str] = "na"
    params: ClassVar[tuple[str, ...]] = ("g_na", "e_na", "v_ref", "temperature")

    def inf_tau(self, model, v):
        u = v - model.v_ref
        return dict(
            m=_hh_inf_tau(model, K.alpha_m(u), K.beta_m(u)),
            h=_hh_inf_tau(model, K.alpha_h(u), K.beta_h(u)),
        )

    def conductance(self, model, v, state):
        return model.g_na * state.m**3 * state.h, model.e_na


class HHPotassium(AbstractChannel):
    r"""The squid axon's delayed-rectifier K current: $\bar g_K n^4 (v - E_K)$."""

    gates: ClassVar[tuple[str, ...]] = ("n",)
    name: ClassVar[str] = "k"
    params: ClassVar[tuple[str, ...]] = ("g_k", "e_k", "v_ref", "temperature")

    def inf_tau(self, model, v):
        u = v - model.v_ref
        return dict(n=_hh_inf_tau(model, K.alpha_n(u), K.beta_n(u)))

    def conductance(self, model, v, state):
        return model.g_k * state.n**4, model.e_k


class NaTraub(AbstractChannel):
    r"""Fast Na: $I_{Na} = \bar g_{Na} m^3 h (v - E_{Na})$, Traub–Miles rates shifted by $V_T$."""

    gates: ClassVar[tuple[str, ...]] = ("m", "h")
    name: ClassVar[str] = "na"
    params: ClassVar[tuple[str, ...]] = ("g_na", "e_na", "v_t")

    def inf_tau(self, model, v):
        r = traub_rates(v, model.v_t)
        return dict(m=_from_rates(*r["m"]), h=_from_rates(*r["h"]))

    def conductance(self, model, v, state):
        return model.g_na * state.m**3 * state.h, model.e_na


class KdTraub(AbstractChannel):
    r"""Delayed-rectifier K: $I_{Kd} = \bar g_{Kd} n^4 (v - E_K)$, rates shifted by $V_T$."""

    gates: ClassVar[tuple[str, ...]] = ("n",)
    name: ClassVar[str] = "kd"
    params: ClassVar[tuple[str, ...]] = ("g_kd", "e_k", "v_t")

    def inf_tau(self, model, v):
        r = traub_rates(v, model.v_t)
        return dict(n=_from_rates(*r["n"]))

    def conductance(self, model, v, state):
        return model.g_kd * state.n**4, model.e_k


class MSlow(AbstractChannel):
    r"""Slow non-inactivating K (M current, spike-frequency adaptation): $\bar g_M p (v - E_K)$.

    $p_\infty = 1/(1 + e^{-(v+35)/10})$,
    $\tau_p = \tau_{max} / (3.3 e^{(v+35)/20} + e^{-(v+35)/20})$.
    """

    gates: ClassVar[tuple[str, ...]] = ("p",)
    name: ClassVar[str] = "m"
    params: ClassVar[tuple[str, ...]] = ("g_m", "e_k", "tau_max")

    def inf_tau(self, model, v):
        x = v + 35.0
        tau = model.tau_max / (3.3 * exp_safe(x / 20.0) + exp_safe(-x / 20.0))
        return dict(p=(_sigmoid(x / 10.0), tau))

    def conductance(self, model, v, state):
        return model.g_m * state.p, model.e_k


class CaL(AbstractChannel):
    r"""High-threshold Ca (intrinsic bursting): $\bar g_L q^2 r (v - E_{Ca})$."""

    gates: ClassVar[tuple[str, ...]] = ("q", "r")
    name: ClassVar[str] = "cal"
    params: ClassVar[tuple[str, ...]] = ("g_cal", "e_ca")

    def inf_tau(self, model, v):
        alpha_q = _linoid(0.055, v + 27.0, 3.8)  # 0.055(-27-v)/(e^{(-27-v)/3.8}-1)
        beta_q = 0.94 * exp_safe((-75.0 - v) / 17.0)
        alpha_r = 0.000457 * exp_safe((-13.0 - v) / 50.0)
        beta_r = 0.0065 * _sigmoid(-(-15.0 - v) / 28.0)
        return dict(q=_from_rates(alpha_q, beta_q), r=_from_rates(alpha_r, beta_r))

    def conductance(self, model, v, state):
        return model.g_cal * state.q**2 * state.r, model.e_ca


class CaT(AbstractChannel):
    r"""Low-threshold Ca (LTS cells): $\bar g_T s_\infty^2 u (v - E_{Ca})$, shifted by $V_x$.

    $s_\infty = 1/(1+e^{-(v+V_x+57)/6.2})$ is instantaneous; $u_\infty = 1/(1+e^{(v+V_x+81)/4})$,
    $\tau_u = (30.8 + (211.4 + e^{(v+V_x+113.2)/5}) / (1 + e^{(v+V_x+84)/3.2})) / 3.7$ ms
    (Destexhe et al. 1996 at 36 °C, $Q_{10} = 3$ from 24 °C: the factor 3.7).
    """

    gates: ClassVar[tuple[str, ...]] = ("u",)
    name: ClassVar[str] = "cat"
    params: ClassVar[tuple[str, ...]] = ("g_cat", "e_ca", "v_x")

    def inf_tau(self, model, v):
        w = v + model.v_x
        u_inf = _sigmoid(-(w + 81.0) / 4.0)
        tau = (30.8 + (211.4 + exp_safe((w + 113.2) / 5.0)) * _sigmoid(-(w + 84.0) / 3.2)) / 3.7
        return dict(u=(u_inf, tau))

    def conductance(self, model, v, state):
        s_inf = _sigmoid((v + model.v_x + 57.0) / 6.2)
        return model.g_cat * s_inf**2 * state.u, model.e_ca


class HCurrent(AbstractChannel):
    r"""Hyperpolarisation-activated cation current: $I_h = \bar g_h w (v - E_h)$.

    Huguenard & McCormick 1992: $w_\infty = 1/(1 + e^{(v+75)/5.5})$,
    $\tau_w = 1/(e^{-14.59 - 0.086 v} + e^{-1.87 + 0.0701 v})$ ms. Not part of Pospischil et al.
    2008; it gives the inward rectification (sag) many real cells show.
    """

    gates: ClassVar[tuple[str, ...]] = ("w",)
    name: ClassVar[str] = "h"
    params: ClassVar[tuple[str, ...]] = ("g_h", "e_h")

    def inf_tau(self, model, v):
        w_inf = _sigmoid(-(v + 75.0) / 5.5)
        tau = 1.0 / (exp_safe(-14.59 - 0.086 * v) + exp_safe(-1.87 + 0.0701 * v))
        return dict(w=(w_inf, tau))

    def conductance(self, model, v, state):
        return model.g_h * state.w, model.e_h
