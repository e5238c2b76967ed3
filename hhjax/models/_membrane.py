"""A membrane composed by the user from channel modules: [`Membrane`][].

Units: mV, ms, mS/cm², µF/cm², µA/cm².

```python
from hhjax.models import HHPotassium, HHSodium, Leak, Membrane, MSlow

model = Membrane(
    channels=(HHSodium(), HHPotassium(), MSlow(), Leak()),
    params=dict(g_na=120.0, e_na=50.0, g_k=36.0, e_k=-77.0, v_ref=-65.0, temperature=6.3,
                g_m=0.5, tau_max=608.0, g_l=0.3, e_l=-54.4, c_m=1.0),
)
```

The parameters are one flat dict (a parameter read by several channels, such as $E_K$ of the
K and M currents, is one entry) and read as attributes (`model.g_m`); every hhjax path
(simulation, batches, spikes, currents, plots, fitting) takes the model through the
[`hhjax.AbstractModel`][] contract without any solver code written for it.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._checks import check_parameters
from .._model import AbstractModel
from ._channels import AbstractChannel, check_channels
from ._hh import _check_temperature

__all__ = ["Membrane", "MembraneState"]


class MembraneState(eqx.Module):
    """State of a [`Membrane`][]: the voltage `v` (mV) and `gates`, a `{name: value}` dict;
    each gate is also an attribute (`state.m`)."""

    v: Array
    gates: dict

    def __getattr__(self, name):
        if name.startswith("__") or name in ("v", "gates"):
            raise AttributeError(name)
        try:
            return self.__dict__["gates"][name]
        except KeyError:
            raise AttributeError(f"MembraneState has no gate {name!r}.") from None


class Membrane(AbstractModel):
    """A single-compartment membrane composed of `channels` (include a [`Leak`][]).

    **Arguments:**

    - `channels`: a tuple of [`AbstractChannel`][] instances (static; no two may own a gate).
    - `params`: `{name: value}`, every parameter the channels read (their `params`) plus
      `c_m` (µF/cm²); scalars or arrays with a leading batch axis. Names starting `g_` are
      conductances (>= 0 mS/cm²); `c_m`, `tau_*` and `area` must be > 0. Concrete values are
      checked on construction; a missing parameter raises `ValueError` naming it and the
      channel that reads it.
    """

    params: dict
    channels: tuple[AbstractChannel, ...] = eqx.field(static=True, converter=tuple)

    def __init__(self, channels, params: dict[str, Any]):
        self.channels = tuple(channels)
        self.params = {str(k): jnp.asarray(v) for k, v in dict(params).items()}

    def __check_init__(self):
        check_channels("Membrane", self.channels)
        if not self.channels:
            raise ValueError("Membrane: `channels` is empty; give at least a Leak().")
        needed = {"c_m": "the membrane"}
        for channel in self.channels:
            for name in channel.params:
                needed.setdefault(name, type(channel).__name__)
        missing = [f"{n} (read by {who})" for n, who in needed.items() if n not in self.params]
        if missing:
            raise ValueError(f"Membrane: `params` lacks {', '.join(missing)}.")
        unread = [n for n in self.params if n not in needed and n != "area"]
        if unread:
            raise ValueError(
                f"Membrane: no channel reads `params` {unread} (a typo?); the channels read "
                f"{sorted(needed)}, plus the optional `area` (cm²)."
            )
        names = tuple(self.params)
        nonnegative = {n for n in names if n.startswith("g_")}
        positive = {n for n in names if n in ("c_m", "area") or n.startswith("tau_")}
        units = {n: "mS/cm²" for n in nonnegative} | {"c_m": "µF/cm²", "area": "cm²"}
        units |= {n: "mV" for n in names if n.startswith(("e_", "v_"))}
        units |= {n: "ms" for n in names if n.startswith("tau_")} | {"temperature": "°C"}
        check_parameters("Membrane", self.params, units, nonnegative, positive)
        if "temperature" in self.params:
            _check_temperature("Membrane", self.params["temperature"])

    def __getattr__(self, name):
        if name.startswith("__") or name in ("params", "channels"):
            raise AttributeError(name)
        try:
            return self.__dict__["params"][name]
        except KeyError:
            raise AttributeError(f"Membrane has no parameter {name!r}.") from None

    # ---------------------------------------------------------------- parameters as fields
    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self.params)

    def replace(self, **changes):
        """A copy with some parameters (or `channels`) replaced."""
        channels = changes.pop("channels", self.channels)
        unknown = set(changes) - set(self.params)
        if unknown:
            raise TypeError(
                f"Membrane has no parameter(s) {sorted(unknown)}; parameters are "
                f"{', '.join(self.params)}."
            )
        return Membrane(channels, {**self.params, **changes})

    # ---------------------------------------------------------------- the model contract
    @property
    def mechanisms(self) -> tuple:
        return self.channels

    def make_state(self, v, gates: dict) -> MembraneState:
        return MembraneState(v, {g: gates[g] for g in self.gate_names})

    @property
    def rest_guess(self):
        """`e_l` when the model has a leak parameter, else -65 mV."""
        return self.params.get("e_l", jnp.asarray(-65.0))
