"""Parameters of a single-compartment Hodgkin–Huxley membrane.

Units: conductances mS/cm², reversal potentials and voltages mV, capacitance µF/cm²,
temperature °C. Every field is a JAX array: a scalar for one neuron, or an array with a leading
batch axis for many (see [`hhjax.simulate`][]).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._model import AbstractModel

__all__ = ["HHParams", "FIELDS"]

FIELDS = ("g_na", "g_k", "g_l", "e_na", "e_k", "e_l", "c_m", "temperature", "v_ref")
"""Names of all HHParams fields, in order."""

_NONNEGATIVE = ("g_na", "g_k", "g_l")
_POSITIVE = ("c_m",)

# Hodgkin & Huxley (1952) fixed the leak reversal at 10.613 mV above rest so that the
# membrane rests exactly at the reference potential.
_E_L_1952 = 10.613


def _concrete(x) -> np.ndarray | None:
    """The value of `x` as numpy if it is concrete (not a tracer), else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - unknown array-likes
        return None


class HHParams(AbstractModel):
    """Membrane parameters of the Hodgkin–Huxley model.

    The default is the classic 1952 squid-axon model in the modern convention (rest at -65 mV).
    Presets: [`HHParams.neuron`][] (NEURON's hh.mod defaults) and [`HHParams.squid_1952`][]
    (Hodgkin and Huxley's own convention, rest at 0 mV). All presets take keyword overrides.

    **Fields:**

    - `g_na`, `g_k`, `g_l`: maximal Na, K and leak conductances (mS/cm²), >= 0.
    - `e_na`, `e_k`, `e_l`: reversal potentials (mV).
    - `c_m`: membrane capacitance (µF/cm²), > 0.
    - `temperature`: °C; rates scale by $3^{(T - 6.3)/10}$.
    - `v_ref`: the voltage (mV) the 1952 rate functions are measured from: -65 in the modern
      convention, 0 in the 1952 one.

    Values that are concrete are checked on construction: a negative or non-finite conductance
    or capacitance raises `ValueError` naming the field.
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
            value = _concrete(getattr(self, name))
            if value is None:
                continue
            if not np.issubdtype(value.dtype, np.number):
                raise TypeError(f"HHParams.{name} must be numeric, got dtype {value.dtype}.")
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"HHParams.{name} must be finite, got {value!r}. Pass a finite number "
                    f"(units: {_UNITS[name]})."
                )
            if name in _NONNEGATIVE and np.any(value < 0):
                raise ValueError(
                    f"HHParams.{name} is a conductance and must be >= 0 mS/cm², got {value!r}."
                )
            if name in _POSITIVE and np.any(value <= 0):
                raise ValueError(f"HHParams.c_m must be > 0 µF/cm², got {value!r}.")

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
