"""`integrate`: a voltage trace of one model on a fixed grid driven by a sampled current, as a
`lax.scan` of the model's exponential-Euler step ([`hhjax.AbstractModel.exp_euler_step`][];
`exp_euler_step` here is that step as a function).

Units: mV, ms, µA/cm². The current sample `k` is held over the step $[k\\Delta t,
(k+1)\\Delta t)$ (array-driven paths; [`hhjax.ExponentialEuler`][] and
[`hhjax.simulate_batch`][] sample a stimulus function at each step's midpoint, which is the same
value for a piecewise-constant current sampled on the grid).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .._solvers import exp_euler_step

__all__ = ["exp_euler_step", "integrate"]


@eqx.filter_jit
def integrate(
    model, i_stim: ArrayLike, dt: float, y0: Any = None, *, save_every: int = 1
) -> Array:
    """Integrate `model` (one cell) on a fixed grid and return the voltage trace (mV).

    **Arguments:**

    - `model`: any model with scalar fields (vmap for batches).
    - `i_stim`: injected current density (µA/cm²) per step, shape `(steps,)`; sample `k` is
      held on $[k\\Delta t, (k+1)\\Delta t)$.
    - `dt`: step (ms).
    - `y0`: initial state; default `model.rest_state()` (rest at zero current).
    - `save_every`: keep every `save_every`-th voltage (must divide `steps`).

    **Returns:**

    Voltage (mV), shape `(steps // save_every + 1,)`: `v[0]` is the initial voltage, `v[j]` the
    voltage at time $j \\cdot$ `save_every` $\\cdot \\Delta t$.
    """
    i_stim = jnp.asarray(i_stim)
    steps = i_stim.shape[0]
    if steps % save_every:
        raise ValueError(f"`save_every` ({save_every}) must divide the number of steps ({steps}).")
    if y0 is None:
        y0 = model.rest_state()
    chunks = i_stim.reshape(steps // save_every, save_every)

    def inner(y, i):
        return model.exp_euler_step(y, i, dt), None

    def outer(y, chunk):
        y, _ = jax.lax.scan(inner, y, chunk)
        return y, y.v

    _, vs = jax.lax.scan(outer, y0, chunks)
    return jnp.concatenate([jnp.reshape(y0.v, (1,)), vs])
