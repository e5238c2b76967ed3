"""Which model fields a fit estimates, and the unconstrained coordinates it optimises them in.

Fields are looked up by name on any `equinox.Module` model, so the same code serves
[`hhjax.HHParams`][] and other membrane models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._checks import check_count, check_real  # noqa: F401 (re-exported for the fitting modules)

__all__ = ["FreeParams", "DEFAULT_FREE"]

DEFAULT_FREE = ("g_na", "g_k", "g_l", "e_l", "c_m")
"""The fields fitted by default: the three conductances, the leak reversal and the capacitance."""

# Linear (shifted) coordinates for potentials, whose sign is free; log for everything else
# (conductances, capacitances, time constants), which keeps them positive.
_LINEAR_PREFIXES = ("e_", "v_")
_LINEAR_SCALE = 10.0  # mV: one unit of the optimiser's coordinate


POTENTIAL_BOUNDS = (-200.0, 150.0)
"""Default bounds (mV) of a free potential (a field named `e_*` or `v_*`)."""


@dataclasses.dataclass(frozen=True)
class FreeParams:
    """The free fields of a model, their transforms and bounds.

    **Arguments:**

    - `names`: field names to fit, e.g. `("g_na", "g_k", "g_l", "e_l", "c_m")`.
    - `transforms`: optional `{name: "log" | "linear"}`. Default: `"linear"` for names starting
      with `e_` or `v_` (potentials, coordinate $x/10\\,$mV), `"log"` for the rest (positive
      quantities, coordinate $\\log x$).
    - `bounds`: optional `{name: (low, high)}` in natural units; the optimisers keep iterates
      inside them. `None` for either end means unbounded.

    The optimisers work on $\\theta$ (one float per name); [`FreeParams.apply`][] writes
    $x(\\theta)$ into a model.
    """

    names: tuple[str, ...]
    transforms: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    nuisance: tuple[str, ...] = ()
    """Extra coordinates after the model's fields (e.g. each recording's initial voltage
    `v0[k]`, mV, linear coordinates): fitted beside them, not written into the model.
    `transforms`, `lower` and `upper` cover `names + nuisance`."""

    @classmethod
    def make(
        cls,
        names: Sequence[str],
        model,
        transforms: Mapping[str, str] | None = None,
        bounds: Mapping[str, tuple] | None = None,
    ) -> FreeParams:
        """Validate `names` against `model` and build the specification."""
        if isinstance(names, str):
            names = (names,)
        names = tuple(names)
        if not names:
            raise ValueError("`free` must name at least one field to fit.")
        if len(set(names)) != len(names):
            raise ValueError(f"`free` lists a field twice: {names}.")
        fields = list(model.field_names)
        for name in names:
            if name not in fields:
                raise ValueError(
                    f"`free`: {type(model).__name__} has no field {name!r}; fields are "
                    f"{', '.join(fields)}."
                )
            if np.ndim(getattr(model, name)) != 0:
                raise ValueError(f"`free`: field {name!r} must be a scalar in `params0`.")
        transforms = dict(transforms or {})
        bounds = dict(bounds or {})
        for key in (*transforms, *bounds):
            if key not in names:
                raise ValueError(f"`transforms`/`bounds` name {key!r}, which is not in `free`.")
        tr, lo, hi = [], [], []
        for name in names:
            t = transforms.get(name, "linear" if name.startswith(_LINEAR_PREFIXES) else "log")
            if t not in ("log", "linear"):
                raise ValueError(f"`transforms[{name!r}]` must be 'log' or 'linear', got {t!r}.")
            # Potentials default to [-200, 150] mV: far outside any cell's, yet it stops the
            # runaway E_L -> -1e3..-1e5 mV that a vanishing leak conductance allows (seen on
            # cortical fits from a poor leak start).
            default = POTENTIAL_BOUNDS if name.startswith(_LINEAR_PREFIXES) else (None, None)
            low, high = bounds.get(name, default)
            low = -np.inf if low is None else float(low)
            high = np.inf if high is None else float(high)
            if t == "log":
                low = max(low, 0.0)
            if not low < high:
                raise ValueError(f"`bounds[{name!r}]` must satisfy low < high, got {(low, high)}.")
            tr.append(t)
            lo.append(low)
            hi.append(high)
        return cls(names, tuple(tr), tuple(lo), tuple(hi))

    def __len__(self) -> int:
        return len(self.names) + len(self.nuisance)

    @property
    def coords(self) -> tuple[str, ...]:
        """Names of every optimiser coordinate: the model's fields, then the nuisance ones."""
        return self.names + self.nuisance

    def with_nuisance(self, names, lower: float = POTENTIAL_BOUNDS[0],
                      upper: float = POTENTIAL_BOUNDS[1]) -> FreeParams:
        """This specification with extra potential-like coordinates (mV, linear) appended."""
        names = tuple(names)
        return dataclasses.replace(
            self, nuisance=self.nuisance + names,
            transforms=self.transforms + ("linear",) * len(names),
            lower=self.lower + (float(lower),) * len(names),
            upper=self.upper + (float(upper),) * len(names))

    def nuisance_values(self, theta):
        """The nuisance coordinates of `theta` in natural units (mV), shape `(*batch, n)`."""
        return jnp.asarray(theta)[..., len(self.names):] * _LINEAR_SCALE

    # -------------------------------------------------------------- coordinates
    def _forward(self, x, i):
        if self.transforms[i] == "log":
            return jnp.log(x)
        return x / _LINEAR_SCALE

    def _inverse(self, th, i):
        if self.transforms[i] == "log":
            return jnp.exp(th)
        return th * _LINEAR_SCALE

    def values(self, model, nuisance=None):
        """The free fields' values (natural units), shape `(*batch, free)`; with `nuisance`
        (natural values of the nuisance coordinates, last axis over them) appended."""
        x = jnp.stack([jnp.asarray(getattr(model, n)) for n in self.names], axis=-1)
        if nuisance is None:
            return x
        nuisance = jnp.broadcast_to(jnp.asarray(nuisance, x.dtype),
                                    x.shape[:-1] + (len(self.nuisance),))
        return jnp.concatenate([x, nuisance], axis=-1)

    def to_theta(self, x):
        """Natural values `x` (last axis over `names`) to optimiser coordinates."""
        x = jnp.asarray(x)
        return jnp.stack([self._forward(x[..., i], i) for i in range(x.shape[-1])], axis=-1)

    def to_natural(self, theta):
        """Optimiser coordinates to natural values (last axis over `names`)."""
        theta = jnp.asarray(theta)
        return jnp.stack([self._inverse(theta[..., i], i) for i in range(theta.shape[-1])],
                         axis=-1)

    def dx_dtheta(self, theta):
        """$dx/d\\theta$ per free field (the Jacobian of the transform is diagonal)."""
        x = self.to_natural(theta)
        scale = jnp.asarray([1.0 if t == "log" else _LINEAR_SCALE for t in self.transforms],
                            x.dtype)
        is_log = jnp.asarray([t == "log" for t in self.transforms])
        return jnp.where(is_log, x, scale)

    def theta_bounds(self):
        """`(low, high)` arrays of the bounds in optimiser coordinates (±inf where open)."""
        with np.errstate(divide="ignore"):
            lo = [
                np.log(b) if t == "log" else b / _LINEAR_SCALE
                for t, b in zip(self.transforms, self.lower)
            ]
            hi = [
                np.log(b) if t == "log" else b / _LINEAR_SCALE
                for t, b in zip(self.transforms, self.upper)
            ]
        return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)

    def clip(self, theta):
        """`theta` clipped into the bounds."""
        lo, hi = self.theta_bounds()
        return jnp.clip(theta, jnp.asarray(lo, theta.dtype), jnp.asarray(hi, theta.dtype))

    def apply(self, theta, model):
        """`model` with the free fields set from `theta` (no validation: works under tracing)."""
        x = self.to_natural(jnp.asarray(theta)[..., : len(self.names)])
        dtype = jnp.result_type(*(getattr(model, n) for n in self.names), float)
        values = [x[..., i].astype(dtype) for i in range(len(self.names))]
        return eqx.tree_at(lambda m: [getattr(m, n) for n in self.names], model, values)
