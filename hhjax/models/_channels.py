"""Ion channels, one small Module each: the parts every hhjax membrane model is composed of.

Units: mV, ms, mS/cm², µA/cm².

A channel owns some gates of its model's state and reads the parameters it needs (conductance,
reversal, threshold shift) from the model it belongs to, by name (listed in its `params`), so
parameters shared by several channels (the threshold shift $V_T$ of Na and K_d, the K reversal
$E_K$ of K_d and M) are one field. Every channel supplies, for the voltage $v$:

- `inf_rate(model, v)`: `{gate: (x_inf, rate)}` for the gates it owns, the relaxation rate
  $1/\\tau$ in 1/ms ($\\alpha + \\beta$ for α/β kinetics: no division), or equivalently
  `inf_tau(model, v)`: `{gate: (x_inf, tau)}` (tau in ms); a channel defines either;
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

import math
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
    "hh_rates",
    "traub_rates",
]


def _linoid(a, u, k):
    r"""$a\,u / (1 - e^{-u/k}) = a\,k \cdot x/(e^{x}-1)$ with $x = -u/k$; 1/ms, NaN-safe at u=0."""
    return a * k * xexpm1(-u / k)


def traub_rates(v, v_t):
    """Traub–Miles rates (1/ms) of the gates m, h, n at voltage `v` with threshold shift `v_t`.

    With $u = v - V_T$: $\\alpha_m = 0.32 (13 - u)/(e^{(13-u)/4} - 1)$,
    $\\beta_m = 0.28 (u - 40)/(e^{(u-40)/5} - 1)$, $\\alpha_h = 0.128 e^{(17-u)/18}$,
    $\\beta_h = 4/(1 + e^{(40-u)/5})$, $\\alpha_n = 0.032 (15 - u)/(e^{(15-u)/5} - 1)$,
    $\\beta_n = 0.5 e^{(10-u)/40}$ (Pospischil et al. 2008, Eqs. 3–5).

    All six come from two exponentials, $e^{-u/40}$ and $e^{-u/18}$: $e^{-u/20}$, $e^{-u/5}$
    and $e^{-u/4}$ are its powers (as in HH's `fast_rates`, `models/_hh.py`), which made the
    cortical step in [`hhjax.simulate_batch`][] 1.6× faster than six or more exponentials.
    Equal to the direct formulas to 3e-13 relative in float64 and 4e-6 in float32 for
    $v \\in [-100, 60]$ mV (tested); $v$ is clipped to ±250 mV, and $\\beta_m$ is held at
    its value at $u = 200$ mV beyond it (below 1e-12/ms there), so that values and
    derivatives are finite for every finite $v$ in both dtypes.

    **Returns:** `dict(m=(alpha, beta), h=(alpha, beta), n=(alpha, beta))`.
    """
    # Beyond ±250 mV (no membrane gets there; adaptive trial stages may) the rates are those
    # at ±250 mV, so the powers below never overflow (float32 overflows at u < -350 mV).
    u = jnp.asarray(jnp.clip(v, -250.0, 250.0) - v_t)
    cutoff = K.series_cutoff(u.dtype)
    e40 = K.keep(jnp.exp(u * (-1.0 / 40.0)))  # keep the powers below
    e20 = e40 * e40
    e10 = e20 * e20
    e5 = e10 * e10  # e^{-u/5}
    e4 = e5 * e20  # e^{-u/4}
    alpha_m = 1.28 * K.xexpm1_from_exp((13.0 - u) * 0.25, _E_13_4 * e4, cutoff)
    # β_m needs e^{(u-40)/5} = e^{-8}/e^{-u/5}; above u = 200 mV (where β_m < 1e-12/ms) it is
    # held at its value there, so the division's derivative (1/e5²) stays finite in float32.
    e5_m = jnp.maximum(e5, _E_M40)
    beta_m = 1.4 * K.xexpm1_from_exp((jnp.minimum(u, 200.0) - 40.0) * 0.2, _E_M8 / e5_m, cutoff)
    alpha_h = (0.128 * _E_17_18) * jnp.exp(u * (-1.0 / 18.0))
    beta_h = 4.0 / (1.0 + _E8 * e5)
    alpha_n = 0.16 * K.xexpm1_from_exp((15.0 - u) * 0.2, _E3 * e5, cutoff)
    beta_n = (0.5 * _E_1_4) * e40
    return dict(m=(alpha_m, beta_m), h=(alpha_h, beta_h), n=(alpha_n, beta_n))


_E_13_4, _E8, _E_M8, _E3 = math.exp(3.25), math.exp(8.0), math.exp(-8.0), math.exp(3.0)
_E_M40 = math.exp(-40.0)
_E_17_18, _E_1_4 = math.exp(17.0 / 18.0), math.exp(0.25)


def _from_rates(alpha, beta):
    """`(x_inf, rate)` of α/β kinetics."""
    total = alpha + beta
    return alpha / total, total


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

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = lambda name: getattr(cls, name) is not getattr(AbstractChannel, name)
        if cls.gates and not (own("inf_rate") or own("inf_tau")):
            raise TypeError(f"{cls.__name__} owns gates {cls.gates}: define inf_rate or inf_tau.")

    def inf_rate(self, model, v) -> dict:
        """`{gate: (x_inf, rate)}` at voltage `v` (mV): steady state and relaxation rate
        $1/\\tau$ (1/ms) of each gate this channel owns (by default from `inf_tau`)."""
        if not self.gates:
            return {}
        return {g: (x, 1.0 / tau) for g, (x, tau) in self.inf_tau(model, v).items()}

    def inf_tau(self, model, v) -> dict:
        """`{gate: (x_inf, tau_ms)}` at voltage `v` (mV) (by default from `inf_rate`)."""
        if not self.gates:
            return {}
        return {g: (x, 1.0 / rate) for g, (x, rate) in self.inf_rate(model, v).items()}

    def conductance(self, model, v, state):
        """`(g, e)`: present conductance (mS/cm²) and reversal potential (mV)."""
        raise NotImplementedError

    def current(self, model, v, state):
        """The channel current (µA/cm², outward positive)."""
        g, e = self.conductance(model, v, state)
        return g * (v - e)


def check_channels(owner: str, channels) -> None:
    """`TypeError` unless every entry is a channel instance; `ValueError` if two own a gate."""
    for channel in channels:
        if isinstance(channel, type):
            raise TypeError(
                f"{owner}: every entry of `channels` must be a channel instance, got the class "
                f"{channel.__name__}: pass {channel.__name__}() (add `()`)."
            )
        if not isinstance(channel, AbstractChannel):
            raise TypeError(
                f"{owner}: every entry of `channels` must be a channel instance such as "
                f"hhjax.models.Leak(), got {channel!r}."
            )
    owned = [g for c in channels for g in c.gates]
    if len(owned) != len(set(owned)):
        raise ValueError(f"{owner}: two channels own the same gate: {owned}.")
    names = [c.name for c in channels]
    if "" in names or len(names) != len(set(names)):
        raise ValueError(
            f"{owner}: every channel needs its own `name` (its current's key), got {names}."
        )


class Leak(AbstractChannel):
    r"""The leak: $I_L = g_L (v - E_L)$, no gates."""

    name: ClassVar[str] = "l"
    params: ClassVar[tuple[str, ...]] = ("g_l", "e_l")

    def conductance(self, model, v, state):
        return model.g_l, model.e_l


def hh_rates(v, v_ref):
    """The 1952 rates (1/ms, at 6.3 °C) of the gates m, h, n at voltage `v` measured from
    `v_ref` ([`hhjax.kinetics`][]); scale by the Q10 factor for other temperatures.

    **Returns:** `dict(m=(alpha, beta), h=(alpha, beta), n=(alpha, beta))`.
    """
    u = jnp.asarray(v) - v_ref
    return dict(
        m=(K.alpha_m(u), K.beta_m(u)),
        h=(K.alpha_h(u), K.beta_h(u)),
        n=(K.alpha_n(u), K.beta_n(u)),
    )


def _hh_inf_rate(model, alpha, beta):
    # x_inf = α/(α+β) and rate φ(α+β): the Q10 factor φ scales both rates.
    x_inf, total = _from_rates(alpha, beta)
    return x_inf, K.temperature_factor(model.temperature) * total


class _TransientSodium(AbstractChannel):
    """$\\bar g_{Na} m^3 h (v - E_{Na})$, the conductance both Na channels share; their kinetics
    differ."""

    name: ClassVar[str] = "na"

    def conductance(self, model, v, state):
        return model.g_na * state.m**3 * state.h, model.e_na


class HHSodium(_TransientSodium):
    r"""The squid axon's Na current: $\bar g_{Na} m^3 h (v - E_{Na})$ (Hodgkin & Huxley 1952).

    Rates from [`hhjax.kinetics`][] at $u = v - v_{ref}$, scaled by $3^{(T - 6.3)/10}$.
    """

    gates: ClassVar[tuple[str, ...]] = ("m", "h")
    name: ClassVar[str] = "na"
    params: ClassVar[tuple[str, ...]] = ("g_na", "e_na", "v_ref", "temperature")

    def inf_rate(self, model, v):
        r = hh_rates(v, model.v_ref)
        return dict(m=_hh_inf_rate(model, *r["m"]), h=_hh_inf_rate(model, *r["h"]))


class HHPotassium(AbstractChannel):
    r"""The squid axon's delayed-rectifier K current: $\bar g_K n^4 (v - E_K)$."""

    gates: ClassVar[tuple[str, ...]] = ("n",)
    name: ClassVar[str] = "k"
    params: ClassVar[tuple[str, ...]] = ("g_k", "e_k", "v_ref", "temperature")

    def inf_rate(self, model, v):
        return dict(n=_hh_inf_rate(model, *hh_rates(v, model.v_ref)["n"]))

    def conductance(self, model, v, state):
        return model.g_k * state.n**4, model.e_k


class NaTraub(_TransientSodium):
    r"""Fast Na: $I_{Na} = \bar g_{Na} m^3 h (v - E_{Na})$, Traub–Miles rates shifted by $V_T$."""

    gates: ClassVar[tuple[str, ...]] = ("m", "h")
    name: ClassVar[str] = "na"
    params: ClassVar[tuple[str, ...]] = ("g_na", "e_na", "v_t")

    def inf_rate(self, model, v):
        r = traub_rates(v, model.v_t)
        return dict(m=_from_rates(*r["m"]), h=_from_rates(*r["h"]))


class KdTraub(AbstractChannel):
    r"""Delayed-rectifier K: $I_{Kd} = \bar g_{Kd} n^4 (v - E_K)$, rates shifted by $V_T$."""

    gates: ClassVar[tuple[str, ...]] = ("n",)
    name: ClassVar[str] = "kd"
    params: ClassVar[tuple[str, ...]] = ("g_kd", "e_k", "v_t")

    def inf_rate(self, model, v):
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

    def inf_rate(self, model, v):
        # One exponential, e = e^{-(v+35)/20}: p_inf = 1/(1 + e²) and
        # 1/tau = (3.3/e + e) / tau_max = (3.3 + e²) / (tau_max e).
        # The barrier keeps XLA from rewriting e² back into a second exponential (measured
        # on one core: 123 instead of 89 M neuron-steps/s for the RS cell's step).
        # v clipped to ±250 mV as in `traub_rates`: e and e² stay finite in float32.
        v = jnp.clip(v, -250.0, 250.0)
        e = K.keep(jnp.exp((v + 35.0) * (-1.0 / 20.0)))
        e2 = e * e
        return dict(p=(1.0 / (1.0 + e2), (3.3 + e2) / (model.tau_max * e)))

    def conductance(self, model, v, state):
        return model.g_m * state.p, model.e_k


class CaL(AbstractChannel):
    r"""High-threshold Ca (intrinsic bursting): $\bar g_L q^2 r (v - E_{Ca})$."""

    gates: ClassVar[tuple[str, ...]] = ("q", "r")
    name: ClassVar[str] = "cal"
    params: ClassVar[tuple[str, ...]] = ("g_cal", "e_ca")

    def inf_rate(self, model, v):
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
