"""The Hodgkin–Huxley (1952) membrane: parameters, state, equations and its fused fast step.

Units: conductances mS/cm², reversal potentials and voltages mV, capacitance µF/cm²,
temperature °C, currents µA/cm². Every field is a JAX array: a scalar for one neuron, or an array
with a leading batch axis for many (see [`hhjax.simulate`][]).

[`HHParams`][] is the composition of the channels [`HHSodium`][], [`HHPotassium`][] and
[`Leak`][] on the [`hhjax.AbstractModel`][] contract. Two parts of the contract are overridden
by fused implementations of the same equations, because they are what hot loops run: the vector
field (the α/β form, as the 1952 paper writes it) and the exponential-Euler step (six rates from
two exponentials, [`fast_rates`][]: 3.8× a scan of the generic step, `benchmarks/README.md`).

$$C_m \\frac{dv}{dt} = I_{\\mathrm{stim}}(t) - \\bar g_{Na} m^3 h (v - E_{Na})
    - \\bar g_K n^4 (v - E_K) - g_L (v - E_L)$$
$$\\frac{dx}{dt} = \\phi(T)\\,[\\alpha_x(u)(1 - x) - \\beta_x(u) x], \\quad x \\in \\{m, h, n\\},
    \\quad u = v - v_{\\mathrm{ref}}$$
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .. import _kinetics as K
from .._checks import _concrete, _describe_bad, check_parameters
from .._model import AbstractModel
from ._channels import HHPotassium, HHSodium, Leak, hh_rates

__all__ = [
    "HHParams",
    "HHState",
    "FIELDS",
    "TEMPERATURE_LIMITS",
    "TEMPERATURE_RANGE",
    "vector_field",
    "ionic_currents",
    "gate_rates",
    "gates_inf",
    "fast_rates",
]

FIELDS = ("g_na", "g_k", "g_l", "e_na", "e_k", "e_l", "c_m", "temperature", "v_ref")
"""Names of all HHParams fields, in order."""

_NONNEGATIVE = ("g_na", "g_k", "g_l")
_POSITIVE = ("c_m",)

TEMPERATURE_LIMITS = (-273.15, 100.0)
"""Temperatures (°C) accepted at all: absolute zero to boiling water; outside raises."""

TEMPERATURE_RANGE = (-20.0, 60.0)
"""Temperatures (°C) accepted without a warning. Q10 rate scaling has been measured roughly
between freezing and 45 °C; beyond this range the rates are an extrapolation."""

# Hodgkin & Huxley (1952) fixed the leak reversal at 10.613 mV above rest so that the
# membrane rests exactly at the reference potential.
_E_L_1952 = 10.613


def _check_temperature(owner: str, temperature) -> None:
    """`ValueError` outside `TEMPERATURE_LIMITS`, `UserWarning` outside
    `TEMPERATURE_RANGE` (concrete values only)."""
    value = _concrete(temperature)
    if value is None:
        return
    lo, hi = TEMPERATURE_LIMITS
    if np.any(value < lo) or np.any(value > hi):
        hint = " If it is in kelvin, subtract 273.15." if np.any(value > hi) else ""
        raise ValueError(
            f"{owner}: `temperature` must be in °C between {lo} (absolute zero) and {hi} "
            f"(boiling water), got {_describe_range(value, lo, hi)}.{hint}"
        )
    lo, hi = TEMPERATURE_RANGE
    if np.any(value < lo) or np.any(value > hi):
        warnings.warn(
            f"{owner}: `temperature` {_describe_range(value, lo, hi)} °C is outside "
            f"[{lo}, {hi}] °C, where Q10 rate scaling has never been measured; the rates "
            "are an extrapolation.",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )


def _user_stacklevel() -> int:
    """The `stacklevel` that points a warning at the first frame outside hhjax and equinox
    (construction passes through equinox's and dataclasses' generated `__init__`)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(2), 2
    while frame is not None:
        filename = frame.f_code.co_filename
        inside = (
            filename.startswith(package)
            or f"{os.sep}equinox{os.sep}" in filename
            or filename.startswith("<")
            and frame.f_code.co_name == "__init__"
        )
        if not inside:
            return level
        frame, level = frame.f_back, level + 1
    return 1


def _describe_range(value: np.ndarray, lo: float, hi: float) -> str:
    return _describe_bad(value, (value < lo) | (value > hi))


class HHParams(AbstractModel):
    """Membrane parameters of the Hodgkin–Huxley model.

    The default is the classic 1952 squid-axon model in the modern convention (rest at -65 mV).
    Presets: [`HHParams.neuron`][] (NEURON's hh.mod defaults) and [`HHParams.squid_1952`][]
    (Hodgkin and Huxley's own convention, rest at 0 mV). All presets take keyword overrides.

    **Fields:**

    - `g_na`, `g_k`, `g_l`: maximal Na, K and leak conductances (mS/cm²), >= 0.
    - `e_na`, `e_k`, `e_l`: reversal potentials (mV).
    - `c_m`: membrane capacitance (µF/cm²), > 0.
    - `temperature`: °C; rates scale by $3^{(T - 6.3)/10}$. Must lie in
      `TEMPERATURE_LIMITS` (−273.15 to 100 °C: no colder than absolute zero, no hotter
      than boiling water); outside `TEMPERATURE_RANGE` (−20 to 60 °C, beyond any
      measured $Q_{10}$) a `UserWarning` says the rates are an extrapolation.
    - `v_ref`: the voltage (mV) the 1952 rate functions are measured from: -65 in the modern
      convention, 0 in the 1952 one.

    Values that are concrete are checked on construction: a non-finite field, a negative
    conductance, a capacitance <= 0 or a temperature outside `TEMPERATURE_LIMITS` raises
    `ValueError` naming the field; fields whose batch shapes do not broadcast together, or an
    empty field, raise `ValueError` listing the shapes; a complex field raises `TypeError`.
    """

    g_na: Array = eqx.field(converter=jnp.asarray, default=120.0)
    g_k: Array = eqx.field(converter=jnp.asarray, default=36.0)
    g_l: Array = eqx.field(converter=jnp.asarray, default=0.3)
    e_na: Array = eqx.field(converter=jnp.asarray, default=50.0)
    e_k: Array = eqx.field(converter=jnp.asarray, default=-77.0)
    e_l: Array = eqx.field(converter=jnp.asarray, default=_E_L_1952 - 65.0)
    c_m: Array = eqx.field(converter=jnp.asarray, default=1.0)
    temperature: Array = eqx.field(converter=jnp.asarray, default=6.3)
    v_ref: Array = eqx.field(converter=jnp.asarray, default=-65.0)

    def __check_init__(self):
        values = {name: getattr(self, name) for name in FIELDS}
        check_parameters("HHParams", values, _UNITS, _NONNEGATIVE, _POSITIVE)
        _check_temperature("HHParams", self.temperature)

    # ------------------------------------------------------------------ presets
    @classmethod
    def classic(cls, **overrides) -> HHParams:
        """Classic HH 1952 in the modern convention: rest -65 mV, E_L = 10.613 - 65 mV."""
        return cls(**overrides)

    @classmethod
    def neuron(cls, **overrides) -> HHParams:
        """NEURON's hh.mod defaults exactly: e_l = -54.3 mV (rest ≈ -64.97 mV), 6.3 °C."""
        values = dict(e_l=-54.3)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def squid_1952(cls, **overrides) -> HHParams:
        """Hodgkin and Huxley's own convention, as in the seed tutorials: rest at 0 mV.

        E_Na = 115, E_K = -12, E_L = 10.613 mV, rates measured from 0 mV. Seed 000 uses
        `e_l=10.6`; pass it as an override.
        """
        values = dict(e_na=115.0, e_k=-12.0, e_l=_E_L_1952, v_ref=0.0)
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ model contract
    @property
    def mechanisms(self) -> tuple:
        """The classic channels: [`HHSodium`][], [`HHPotassium`][] and the [`Leak`][]."""
        return _HH_CHANNELS

    def make_state(self, v, gates: dict) -> HHState:
        return HHState(v, gates["m"], gates["h"], gates["n"])

    @property
    def rest_guess(self):
        """The rest-state solve starts at `v_ref`, the 1952 axon's rest."""
        return self.v_ref

    @property
    def spike_threshold(self):
        """The default spike threshold (mV): 65 mV above `v_ref`, the rest of the 1952 axon.

        0 mV in the modern convention (NEURON's usual APCount level) and 65 mV in the 1952
        one, where rest is 0 mV and a subthreshold response can pass 0 mV by tens of mV
        (a 0-mV level counted such bumps of `squid_1952` as spikes: 10 Hz at 2 µA/cm²).
        """
        return jnp.broadcast_to(self.v_ref + 65.0, self.batch_shape)

    def vector_field(self, t, y, stimulus):
        """The HH right-hand side in the α/β form (see [`hhjax.vector_field`][])."""
        return _derivative(t, y, self, stimulus, gate_rates(self, y.v))

    def _fast_vector_field(self, t, y, stimulus):
        # The same equations with the six rates from two exponentials (fast_rates; equal to
        # round-off): the 1 s adaptive benchmark solve took 24.7 instead of 26.6 ms.
        return _derivative(t, y, self, stimulus, fast_rates(self, y.v))

    # The fused step passes its two guarded rates, α_m and α_n, through `hold`.
    _n_held = 2

    def _step_constants(self, dt):
        # x_inf = a/(a+b) does not depend on phi, so phi only scales the decay rate: the pow
        # and 1/C_m leave the time loop.
        return dt * _phi(self), dt / self.c_m

    def _exp_euler_step(self, y, i_stim, constants, hold):
        """The fused Rush–Larsen step: see `exp_euler_step` below for the scheme and
        `hhjax._batch` for `hold` (an XLA:CPU scheduling aid, values untouched)."""
        dt_phi, dt_over_c = constants
        v0 = y.v
        m, h, n = _gates(y.m, y.h, y.n, _fast_rates(self, v0, 1.0, hold), dt_phi)
        g, drive = _membrane(self, m, h, n, i_stim)
        v_inf = drive / g
        v = v_inf + (v0 - v_inf) * jnp.exp(-g * dt_over_c)
        return HHState(v, m, h, n), v_inf


_HH_CHANNELS = (HHSodium(), HHPotassium(), Leak())

_UNITS = dict(
    g_na="mS/cm²",
    g_k="mS/cm²",
    g_l="mS/cm²",
    e_na="mV",
    e_k="mV",
    e_l="mV",
    c_m="µF/cm²",
    temperature="°C",
    v_ref="mV",
)


# ---------------------------------------------------------------------------- equations
class HHState(eqx.Module):
    """State of one (or a batch of) HH membrane(s): voltage (mV) and the three gates."""

    v: Array
    m: Array
    h: Array
    n: Array

    def __iter__(self):
        return iter((self.v, self.m, self.h, self.n))


def gate_rates(params: HHParams, v: ArrayLike) -> tuple[tuple[Array, Array], ...]:
    """Temperature-scaled $(\\alpha, \\beta)$ pairs (1/ms) for m, h and n at voltage `v` (mV)."""
    rates = hh_rates(v, params.v_ref)
    phi = K.temperature_factor(params.temperature)
    return tuple((phi * a, phi * b) for a, b in (rates["m"], rates["h"], rates["n"]))


def gates_inf(params: HHParams, v: ArrayLike) -> tuple[Array, Array, Array]:
    """Steady-state gates $(m_\\infty, h_\\infty, n_\\infty)$ at voltage `v` (mV)."""
    return tuple(a / (a + b) for a, b in gate_rates(params, v))


def ionic_currents(params: HHParams, v, m, h, n) -> tuple[Array, Array, Array]:
    """Na, K and leak current densities (µA/cm²) for the given state (the channels'
    currents, [`hhjax.AbstractModel.currents`][])."""
    currents = params.currents(HHState(v, m, h, n))
    return currents["na"], currents["k"], currents["l"]


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


# ---------------------------------------------------------------------------- fused fast rates
def fast_rates(params: HHParams, v: ArrayLike, phi: ArrayLike | None = None):
    """Temperature-scaled $(\\alpha, \\beta)$ pairs (1/ms) for m, h, n from two exponentials.

    The same functions as [`hhjax.kinetics`][] (to round-off: relative 1e-12 in float64,
    1e-5 in float32), but all six rates come from $e^{-u/80}$ and $e^{-u/18}$, $u = v -
    v_{\\mathrm{ref}}$: $e^{-u/20} = (e^{-u/80})^4$ and $e^{-u/10} = (e^{-u/20})^2$ give
    $\\alpha_h$, $\\beta_h$, $\\alpha_m$ and $\\alpha_n$. This removes four of the six exponentials,
    the bulk of the cost of a step.

    `phi`, the temperature factor, may be passed precomputed (it costs a `pow`).

    **Returns:** `((am, bm), (ah, bh), (an, bn))`, each shaped like `v`.
    """
    return _fast_rates(params, v, phi)


def _fast_rates(params, v, phi=None, hold=None):
    """[`fast_rates`][]; `hold(am, an)`, if given, passes the two guarded rates through."""
    v = jnp.asarray(v)
    cutoff = K.series_cutoff(v.dtype)
    u = v - params.v_ref
    if phi is None:
        phi = _phi(params)
    # The barrier stops XLA from rewriting the products below back into exp(k·x) (which
    # would bring back the exponentials this function exists to avoid); it costs nothing.
    e80 = K.keep(jnp.exp(u * (-1.0 / 80.0)))
    e18 = jnp.exp(u * (-1.0 / 18.0))
    e40 = e80 * e80
    e20 = e40 * e40
    e10 = e20 * e20
    x_m = (25.0 - u) * 0.1
    x_n = (10.0 - u) * 0.1
    am = K.xexpm1_from_exp(x_m, math.exp(2.5) * e10, cutoff)
    an = 0.1 * K.xexpm1_from_exp(x_n, math.e * e10, cutoff)
    if hold is not None:
        am, an = hold(am, an)
    bm = 4.0 * e18
    ah = 0.07 * e20
    bh = 1.0 / (1.0 + math.exp(3.0) * e10)
    bn = 0.125 * e80
    return (phi * am, phi * bm), (phi * ah, phi * bh), (phi * an, phi * bn)


def _phi(params: HHParams):
    return 3.0 ** ((params.temperature - 6.3) / 10.0)


def _gate(x, a, b, dt):
    total = a + b
    x_inf = a / total
    return x_inf + (x - x_inf) * jnp.exp(-dt * total)


def _gates(m, h, n, rates, dt):
    """m, h, n after `dt` with their rates frozen; m and n share one division (~8 % of a step).

    With s = α + β for each gate, m_inf = α_m s_n / (s_m s_n) and n_inf = α_n s_m / (s_m s_n).
    At strongly negative voltages both totals grow and both steady states tend to 0, which a
    product overflowing to a zero reciprocal also gives; the gates stay finite for v above
    about -1,600 mV in float32 (-1,800 mV with separate divisions) and -12,800 mV in float64.
    h, whose total grows there while its steady state tends to 1, keeps its own division.
    """
    (am, bm), (ah, bh), (an, bn) = rates
    total_m, total_n = am + bm, an + bn
    r = 1.0 / (total_m * total_n)
    m_inf = am * (r * total_n)
    n_inf = an * (r * total_m)
    m = m_inf + (m - m_inf) * jnp.exp(-dt * total_m)
    n = n_inf + (n - n_inf) * jnp.exp(-dt * total_n)
    return m, _gate(h, ah, bh, dt), n


def _membrane(params: HHParams, m, h, n, i_stim):
    """Total conductance G (mS/cm²) and the driving sum (µA/cm²) with v_inf = sum / G."""
    g_na = params.g_na * (m * m * m) * h
    n2 = n * n
    g_k = params.g_k * (n2 * n2)
    g = g_na + g_k + params.g_l
    drive = g_na * params.e_na + g_k * params.e_k + params.g_l * params.e_l + i_stim
    return g, drive


