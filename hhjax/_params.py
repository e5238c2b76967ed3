"""Parameters of a single-compartment Hodgkin–Huxley membrane.

Units: conductances mS/cm², reversal potentials and voltages mV, capacitance µF/cm²,
temperature °C. Every field is a JAX array: a scalar for one neuron, or an array with a leading
batch axis for many (see [`hhjax.simulate`][]).
"""

from __future__ import annotations

import os
import sys
import warnings

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._checks import (  # noqa: F401 (re-exported: the models and stimuli import them here)
    _check_batch_shapes,
    _check_finite,
    _check_numbers,
    _check_real,
    _concrete,
    _describe_bad,
)
from ._model import AbstractModel

__all__ = ["HHParams", "FIELDS", "TEMPERATURE_LIMITS", "TEMPERATURE_RANGE"]

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
    package = os.path.dirname(os.path.abspath(__file__))
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
        for name in FIELDS:
            _check_real("HHParams", name, getattr(self, name))
        _check_batch_shapes("HHParams", {name: getattr(self, name) for name in FIELDS})
        for name in FIELDS:
            value = _check_finite("HHParams", name, getattr(self, name), _UNITS[name])
            if value is None:
                continue
            if name in _NONNEGATIVE and np.any(value < 0):
                raise ValueError(
                    f"HHParams.{name} is a conductance and must be >= 0 mS/cm², got {value!r}."
                )
            if name in _POSITIVE and np.any(value <= 0):
                raise ValueError(f"HHParams.c_m must be > 0 µF/cm², got {value!r}.")
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

    # ------------------------------------------------------------------ model interface
    @property
    def spike_threshold(self):
        """The default spike threshold (mV): 65 mV above `v_ref`, the rest of the 1952 axon.

        0 mV in the modern convention (NEURON's usual APCount level) and 65 mV in the 1952
        one, where rest is 0 mV and a subthreshold response can pass 0 mV by tens of mV
        (a 0-mV level counted such bumps of `squid_1952` as spikes: 10 Hz at 2 µA/cm²).
        """
        return jnp.broadcast_to(self.v_ref + 65.0, self.batch_shape)

    def vector_field(self, t, y, stimulus):
        """The HH right-hand side (see [`hhjax.vector_field`][])."""
        from ._vector_field import vector_field

        return vector_field(t, y, (self, stimulus))

    def rest_state(self, i_hold=0.0):
        """The resting state (see [`hhjax.rest_state`][])."""
        from ._simulate import rest_state

        return rest_state(self, i_hold)

    def steady_state(self, v):
        """Gates at steady state at voltage `v` (see [`hhjax.steady_state`][])."""
        from ._simulate import steady_state

        return steady_state(self, v)


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
