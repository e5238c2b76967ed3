"""The model interface that [`hhjax.simulate`][] integrates.

A model is an `equinox.Module` holding its parameters as array fields (scalars for one neuron,
a leading batch axis for many). It supplies its right-hand side and its resting state; the
simulator, the features and the fitting code need nothing else. [`hhjax.HHParams`][] is the
classic HH model; other membranes (e.g. cortical models with extra channels) implement the same
three methods.

Units: mV, ms, µA/cm².
"""

from __future__ import annotations

import abc
import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import _concrete

__all__ = ["AbstractModel"]


class AbstractModel(eqx.Module):
    """Base class of every membrane model `simulate` accepts.

    Subclasses define:

    - `vector_field(t, y, stimulus)`: the pure right-hand side; `y` is the model's state PyTree
      (an `equinox.Module` with at least a field `v`, the membrane potential in mV) and
      `stimulus` a callable `t -> µA/cm²` or `None`.
    - `rest_state(i_hold=0.0)`: the state with $dy/dt = 0$ under constant current `i_hold`.
    - `steady_state(v)`: the state at voltage `v` with every gate at steady state.
    """

    @abc.abstractmethod
    def vector_field(self, t, y, stimulus):
        """Time derivative of the state `y` at time `t` (ms) under `stimulus`."""

    @abc.abstractmethod
    def rest_state(self, i_hold=0.0):
        """The resting state (for a single, unbatched model)."""

    @abc.abstractmethod
    def steady_state(self, v):
        """The state at voltage `v` (mV) with gates at steady state."""

    @property
    def spike_threshold(self):
        """The voltage (mV) whose upward crossing hhjax counts as a spike for this model, the
        default `threshold` of [`hhjax.fi_curve`][], [`hhjax.simulate_batch`][] and
        [`hhjax.spike_times_adaptive`][]: 0 mV, the overshoot criterion, for models whose rest
        lies near -60 to -75 mV. Models with another voltage convention override it (HH:
        65 mV above its reference potential, so 65 mV in the 1952 rest-at-0 convention)."""
        return jnp.zeros(self.batch_shape, jnp.result_type(self.dtype, float))

    # ---------------------------------------------------------------- shared helpers
    @property
    def field_names(self) -> tuple[str, ...]:
        """Names of the array fields (the parameters)."""
        return tuple(f.name for f in dataclasses.fields(self) if not f.metadata.get("static"))

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The broadcast shape of all parameter fields: `()` for a single neuron."""
        return jnp.broadcast_shapes(*(jnp.shape(getattr(self, n)) for n in self.field_names))

    @property
    def dtype(self):
        """The dtype all fields promote to."""
        return jnp.result_type(*(getattr(self, n) for n in self.field_names))

    def broadcast(self):
        """A copy with every field broadcast to `batch_shape`."""
        shape = self.batch_shape
        return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, shape), self)

    def replace(self, **changes):
        """A copy with some fields replaced (values are converted to arrays)."""
        unknown = set(changes) - set(self.field_names)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no field(s) {sorted(unknown)}; fields are "
                f"{', '.join(self.field_names)}."
            )
        values = {name: getattr(self, name) for name in self.field_names}
        values.update(changes)
        return type(self)(**values)

    def astype(self, dtype):
        """A copy with every field cast to `dtype` (e.g. `jnp.float32`)."""
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=dtype), self)

    def to_dict(self) -> dict:
        """Field values as plain Python numbers (nested lists for batches)."""
        import numpy as np

        return {n: np.asarray(getattr(self, n)).tolist() for n in self.field_names}

    def __len__(self) -> int:
        shape = self.batch_shape
        if not shape:
            raise TypeError(f"A single (unbatched) {type(self).__name__} has no len().")
        return shape[0]

    def __getitem__(self, index):
        """Select neurons from a batch: `params[3]`, `params[:10]`."""
        return jax.tree_util.tree_map(lambda x: x[index], self.broadcast())


def _spike_threshold(owner: str, params: AbstractModel, threshold):
    """`threshold` (mV), by default `params.spike_threshold`: a float when concrete (one value
    for the whole batch, else an error asking for `threshold`), the traced value under
    `jit`/`vmap`/`grad`."""
    if threshold is None:
        threshold = params.spike_threshold
    value = _concrete(threshold)
    if value is None:
        return threshold
    values = np.unique(value)
    if values.size != 1:
        raise ValueError(
            f"{owner}: the neurons have different spike thresholds ({values.min()}..."
            f"{values.max()} mV, e.g. from different `v_ref`); pass one `threshold`."
        )
    if not np.isfinite(values[0]):
        raise ValueError(f"{owner}: `threshold` must be a finite voltage (mV), got {values[0]}.")
    return float(values[0])
