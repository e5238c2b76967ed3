"""`simulate`: the one jit boundary around `diffrax.diffeqsolve` for any membrane model, with
the model-generic helpers around it (`rest_state`, `steady_state`, `currents`) and forward-mode
gradients (`value_and_grad_forward`).

Units: ms, mV, µA/cm².
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ._checks import _concrete, check_count, padded_length
from ._model import AbstractModel
from ._solvers import MembraneTerm
from ._stimulus import AbstractStimulus, as_stimulus

__all__ = [
    "Trajectory",
    "SimulationError",
    "RESULTS",
    "simulate",
    "steady_state",
    "rest_state",
    "currents",
    "Currents",
    "value_and_grad_forward",
    "DEFAULT_RTOL",
    "DEFAULT_ATOL",
    "DEFAULT_DT_SAVE",
]

DEFAULT_RTOL = 1e-8
DEFAULT_ATOL = 1e-8
DEFAULT_DTMAX = 1.0
"""Largest step (ms) adaptive solves may take."""
DEFAULT_DT_SAVE = 0.025
"""Save-grid spacing (ms) used by adaptive solves when neither `ts` nor `dt_save` is given."""


class SimulationError(RuntimeError):
    """A solve did not reach `t1` (too many steps, a non-finite state, or a solver failure)."""


class RESULTS(diffrax.RESULTS):  # pyright: ignore
    """Diffrax's result codes plus hhjax's own: a solve that ran to `t1` but whose state
    stopped being finite (a fixed step beyond the solver's stability limit) is a failure too."""

    nonfinite_state = (
        "The state became non-finite (NaN or inf) although the solver reported success: the "
        "fixed step is beyond this solver's stability limit (or an input is non-finite)."
    )


class Trajectory(eqx.Module):
    """The solution of [`hhjax.simulate`][] on its save grid.

    **Fields** (arrays of shape `(*batch, times)`):

    - `ts`: save times (ms).
    - `state`: the model's state PyTree (for HH an [`HHState`][]); `traj.v` (mV) and, for HH,
      the gates `traj.m`, `traj.h`, `traj.n` read from it.
    - `i_stim`: the injected current at the save times (µA/cm²).
    - `result`: the result code ([`hhjax.RESULTS`][]: Diffrax's codes plus `nonfinite_state`);
      `ok` says, per neuron, whether the solve reached `t1` with a finite state throughout.
    - `num_steps`: accepted plus rejected solver steps taken.
    """

    ts: Float[Array, "*batch times"]
    state: Any
    i_stim: Float[Array, "*batch times"]
    result: RESULTS
    num_steps: Int[Array, "*batch"]

    @property
    def v(self) -> Array:
        """Membrane potential (mV)."""
        return self.state.v

    @property
    def m(self) -> Array:
        """Na activation gate."""
        return self.state.m

    @property
    def h(self) -> Array:
        """Na inactivation gate."""
        return self.state.h

    @property
    def n(self) -> Array:
        """K activation gate."""
        return self.state.n

    def __getattr__(self, name):
        # Any other gate of the model's state (e.g. `traj.p` of a cortical model).
        if name.startswith("_") or name == "state":
            raise AttributeError(name)
        return getattr(self.state, name)

    @property
    def ok(self) -> Array:
        """`True` where the solve reached `t1` and every saved state is finite."""
        return self.result == RESULTS.successful

    def final_state(self):
        """The state at the last save time (usable as `y0` to continue)."""
        return jax.tree_util.tree_map(lambda x: x[..., -1], self.state)


def _model(owner: str, params) -> AbstractModel:
    if not isinstance(params, AbstractModel):
        raise TypeError(
            f"{owner}: `params` must be an hhjax model (an hhjax.AbstractModel such as "
            f"hhjax.HHParams or hhjax.models.Pospischil), got {type(params).__name__}."
        )
    return params


def steady_state(params: AbstractModel, v: ArrayLike):
    """The state with voltage `v` (mV) and every gate at its steady state $x_\\infty(v)$.

    This is NEURON's `finitialize(v)`; usable as `y0`. Any model: see
    [`hhjax.AbstractModel.steady_state`][].
    """
    return _model("steady_state", params).steady_state(v)


def rest_state(params: AbstractModel, i_hold: ArrayLike = 0.0, *, iterations: int = 40):
    """The resting state: the voltage where $dv/dt = 0$ with gates at steady state.

    A bracketed, safeguarded Newton solve on the steady-state I–V relation, NaN where there
    is no root, differentiable with respect to the parameters to any order (see
    [`hhjax.AbstractModel.rest_state`][]).

    **Arguments:**

    - `params`: any model ([`HHParams`][], a cortical model, a composed
      [`hhjax.models.Membrane`][]); batched fields give one rest state per neuron.
    - `i_hold`: a constant injected current (µA/cm²) to rest under; default 0.
    - `iterations`: Newton steps polishing the bracketed root (40 is ample).

    **Returns:**

    The model's state (for HH an [`HHState`][]).
    """
    return _model("rest_state", params).rest_state(i_hold, iterations=iterations)


class Currents(eqx.Module):
    """Membrane current densities (µA/cm², outward positive for ionic currents).

    **Fields:**

    - `channels`: `{name: current}` for each channel of the model (HH: `"na"`, `"k"`, `"l"`);
      each is also an attribute `i_<name>` (HH: `i_na`, `i_k`, `i_l`).
    - `i_ion`: their sum.
    - `i_stim`: the injected (stimulus) current, inward positive.
    - `i_sum`: the net current charging the membrane, `i_stim - i_ion` = $C_m\\,dv/dt$
      (seed 000's "Isum").
    """

    channels: dict
    i_ion: Array
    i_stim: Array
    i_sum: Array

    def __getattr__(self, name):
        if name.startswith("i_") and name != "i_" and "channels" in self.__dict__:
            try:
                return self.channels[name[2:]]
            except KeyError:
                pass
        raise AttributeError(
            f"Currents has no {name!r}; channel currents here: "
            f"{', '.join('i_' + k for k in self.__dict__.get('channels', {}))}."
        )


def currents(params: AbstractModel, traj: Trajectory) -> Currents:
    """Membrane current densities (µA/cm²) along a trajectory: every channel, their sum, the
    stimulus, and the net current.

    **Returns:** a [`Currents`][] with one current per channel of the model (HH: `i_na`,
    `i_k`, `i_l`), `i_ion`, `i_stim` and `i_sum = i_stim - i_ion` ($C_m dv/dt$), each shaped
    like `traj.v`.
    """
    p = jax.tree_util.tree_map(lambda x: jnp.expand_dims(x, -1), _model("currents", params))
    by_channel = p.currents(traj.state)
    i_ion = sum(by_channel.values())
    return Currents(by_channel, i_ion, traj.i_stim, traj.i_stim - i_ion)


# ---------------------------------------------------------------------------- validation
def _as_time(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a number of milliseconds, got {value!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    return value


def _save_grid(t0: float, t1: float, ts, dt_save, step_grid) -> np.ndarray:
    if ts is not None and dt_save is not None:
        raise ValueError("Pass either `ts` or `dt_save`, not both.")
    if ts is not None:
        ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        if ts.size == 0:
            raise ValueError("`ts` is empty; pass at least one save time.")
        if not np.all(np.isfinite(ts)):
            raise ValueError("`ts` contains non-finite values.")
        if np.any(np.diff(ts) <= 0):
            raise ValueError(
                "`ts` must be strictly increasing (sorted, no repeats); sort it first."
            )
        if ts[0] < t0 or ts[-1] > t1:
            raise ValueError(
                f"`ts` must lie within [t0, t1] = [{t0}, {t1}] ms, got [{ts[0]}, {ts[-1]}]."
            )
        return ts
    if dt_save is None:
        if step_grid is not None:
            return step_grid
        dt_save = DEFAULT_DT_SAVE
    dt_save = _as_time("dt_save", dt_save)
    if dt_save <= 0:
        raise ValueError(f"`dt_save` must be > 0 ms, got {dt_save}.")
    return _uniform_grid(t0, t1, dt_save)


def _uniform_grid(t0: float, t1: float, dt: float) -> np.ndarray:
    """`t0, t0 + dt, ...` (by multiplication, no accumulated round-off), ending exactly at t1."""
    n = int(math.floor((t1 - t0) / dt + 1e-9))
    grid = t0 + dt * np.arange(n + 1, dtype=np.float64)
    if t1 - grid[-1] > 1e-9 * max(1.0, abs(t1)):
        grid = np.append(grid, t1)
    else:
        grid[-1] = t1
    return grid


def _as_state(y0, params: AbstractModel):
    """`y0` as the model's state (its own state type, or a sequence `(v, *gates)`), checked:
    finite, gates in [0, 1]."""
    state_type = type(jax.eval_shape(params.steady_state, 0.0))
    names = ("v",) + params.gate_names
    if isinstance(y0, eqx.Module):
        if not isinstance(y0, state_type):
            raise TypeError(
                f"`y0` must be a {state_type.__name__} for {type(params).__name__}, got "
                f"{type(y0).__name__}."
            )
        state = y0
    else:
        try:
            values = tuple(y0)
            if len(values) != len(names):
                raise ValueError
        except (TypeError, ValueError):
            raise TypeError(
                f"`y0` must be a {state_type.__name__} or a sequence ({', '.join(names)}); use "
                "hhjax.steady_state(p, v) for gates at steady state."
            ) from None
        values = [jnp.asarray(x) for x in values]
        state = params.make_state(values[0], dict(zip(names[1:], values[1:])))
    for name in names:
        value = _concrete(getattr(state, name))
        if value is None:
            continue
        if not np.all(np.isfinite(value)):
            raise ValueError(f"`y0.{name}` must be finite, got {value}.")
        if name == "v":
            continue
        if not np.all((value >= 0) & (value <= 1)):
            raise ValueError(f"`y0.{name}` is a gate and must lie in [0, 1], got {value}.")
    return state


def _jump_times(stimulus, t0: float, t1: float):
    """The stimulus' edges, sorted, with those outside the open span moved past `t1` (where the
    step-size controller never looks); `None` when there are none."""
    if stimulus is None:
        return None
    jumps = jnp.asarray(stimulus.jump_ts()).reshape(-1)
    if not jumps.shape[0]:
        return None
    inside = (jumps > t0) & (jumps < t1)
    return jnp.sort(jnp.where(inside, jumps, t1 + (t1 - t0)))


def _adaptive_controller(rtol, atol, jumps, dtype, dtmax=DEFAULT_DTMAX):
    """hhjax's adaptive step control: PID with the step capped at `dtmax` (default
    `DEFAULT_DTMAX`), stepping exactly onto the stimulus edges `jumps` (or `None`)."""
    # dtmax: from an exact rest state the error estimate is zero and steps grow tenfold each
    # time; a huge step proposed just after a stimulus edge can overflow the exponentials and
    # stall the controller on NaN errors. 1 ms is far longer than any step the spiking
    # dynamics accept, so it costs nothing elsewhere.
    pid = diffrax.PIDController(rtol=rtol, atol=atol, dtmax=dtmax)
    jump_ts = None if jumps is None else jnp.asarray(jumps, dtype)
    return diffrax.ClipStepSizeController(pid, jump_ts=jump_ts)


def _cast_floats(tree, dtype):
    """Every floating array leaf of `tree` cast to `dtype` (stimuli follow the parameters)."""
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def _is_traced(tree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def _result_message(result) -> str:
    messages = RESULTS._index_to_message
    index = int(result)
    return messages[index] if 0 <= index < len(messages) else f"diffrax result code {index}."


# ---------------------------------------------------------------------------- the solve
def _finite(tree):
    """Per-neuron: every leaf finite along its last (time) axis."""
    leaves = jax.tree_util.tree_leaves(tree)
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x), axis=-1) for x in leaves])


_STABLE_REAL = 2.5
"""|λ·dt| kept below this where the solution sits still: inside the real-axis stability interval
of the explicit Runge–Kutta solvers (Tsit5's reaches about -3.5)."""


def _stable_step(params, y, stimulus, t0, dtype):
    """The largest step (ms) at which an explicit solver stays stable for the linearisation at
    the initial state: `_STABLE_REAL / ρ(J)`, with the spectral radius ρ bounded by
    `‖J^16‖^(1/16)` (scale-free up to a 16th root; three matrix squarings, any device).

    Why: at an exact rest state the solver's error estimate is zero, so the step grows to
    `DEFAULT_DTMAX`. The forward solution does not care (it stays at rest), but the
    derivatives are carried by the linearisation, which such a step amplifies every time: a
    Pospischil low-threshold cell with a -13 /ms rest eigenvalue gave d<v>/dg_l = 4e24 after
    12 ms (it is 425, the rest state's own sensitivity), NaN in float32.
    """
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(y)
    field = lambda x: ravel_pytree(params.vector_field(t0, unravel(x), stimulus))[0]
    jac = jax.lax.stop_gradient(jax.jacfwd(field)(jax.lax.stop_gradient(flat)))
    scale = jnp.max(jnp.abs(jac))
    power = jac / jnp.where(scale > 0, scale, 1.0)
    for _ in range(4):
        power = power @ power
    radius = scale * jnp.linalg.norm(power) ** (1.0 / 16.0)
    step = _STABLE_REAL / jnp.where(radius > 0, radius, 1.0)
    # A non-finite estimate (a wild initial state) leaves the usual cap in place.
    return jnp.where(jnp.isfinite(step) & (radius > 0), step, DEFAULT_DTMAX).astype(dtype)


def _start_controller(solver, params, y0, stimulus, t0, rtol, atol, jumps, dtype):
    """The adaptive controller of a solve from `y0`: explicit solvers get their steps capped
    at `_stable_step` of `y0` (implicit ones at `DEFAULT_DTMAX` only)."""
    dtmax = DEFAULT_DTMAX
    if not isinstance(solver, diffrax.AbstractImplicitSolver):
        dtmax = jnp.minimum(dtmax, _stable_step(params, y0, stimulus, t0, dtype))
    return _adaptive_controller(rtol, atol, jumps, dtype, dtmax)


class SolveConfig(eqx.Module):
    """How `simulate` solves (static under `jit`): the Diffrax solver, the first step `dt0`
    (ms; fixed-step solvers), tolerances, the step budget, whether a failure raises inside the
    compiled solve (traced inputs only), and the adjoint."""

    solver: diffrax.AbstractSolver
    dt0: float | None
    rtol: float
    atol: float
    max_steps: int
    throw: bool
    adjoint: diffrax.AbstractAdjoint


@eqx.filter_jit
def _solve(params, stimulus, y0, save_ts, step_grid, jumps, t0, t1, config: SolveConfig):
    solver, dt0, rtol, atol = config.solver, config.dt0, config.rtol, config.atol
    max_steps, throw, adjoint = config.max_steps, config.throw, config.adjoint
    dtype = jnp.result_type(params.dtype, float)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    # The stimulus follows the parameters' dtype, so float32 solves stay float32 under x64.
    stimulus = _cast_floats(stimulus, dtype)
    save_ts = jnp.asarray(save_ts, dtype)

    def one(p, y):
        if y is None:
            y = p.rest_state()
        y = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), y)
        if step_grid is None:
            controller = _start_controller(solver, p, y, stimulus, t0, rtol, atol, jumps, dtype)
            dt = dt0
        else:
            controller = diffrax.StepTo(ts=jnp.asarray(step_grid, dtype))
            dt = None
        sol = diffrax.diffeqsolve(
            MembraneTerm(p, stimulus),
            solver,
            t0=jnp.asarray(t0, dtype),
            t1=jnp.asarray(t1, dtype),
            dt0=dt,
            y0=y,
            saveat=diffrax.SaveAt(ts=save_ts),
            stepsize_controller=controller,
            max_steps=max_steps,
            throw=throw,
            adjoint=adjoint,
        )
        ys = sol.ys
        result = RESULTS.promote(sol.result)
        # A fixed-step solver past its stability limit "succeeds" with NaN or inf states.
        bad = (result == RESULTS.successful) & ~_finite(ys)
        result = RESULTS.where(bad, RESULTS.nonfinite_state, result)
        if throw:
            ys = result.error_if(ys, bad)
        return ys, result, sol.stats["num_steps"]

    batch = params.batch_shape
    if batch:
        flat = jax.tree_util.tree_map(lambda x: x.reshape(-1), params.broadcast())
        y_axis = None
        if y0 is not None:
            y0 = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, batch).reshape(-1), y0)
            y_axis = 0
        ys, result, steps = jax.vmap(one, in_axes=(0, y_axis))(flat, y0)
        unflat = lambda x: x.reshape(*batch, *x.shape[1:])
        ys, result, steps = jax.tree_util.tree_map(unflat, (ys, result, steps))
    else:
        ys, result, steps = one(params, y0)
    i_stim = (
        jnp.zeros_like(save_ts) if stimulus is None else jax.vmap(stimulus)(save_ts).astype(dtype)
    )
    i_stim = jnp.broadcast_to(i_stim, ys.v.shape)
    ts = jnp.broadcast_to(save_ts, ys.v.shape)
    return Trajectory(ts, ys, i_stim, result, steps)


@eqx.filter_jit
def _rest(params):
    if params.batch_shape:
        flat = jax.tree_util.tree_map(lambda x: x.reshape(-1), params.broadcast())
        y = jax.vmap(type(params).rest_state)(flat)
        return jax.tree_util.tree_map(lambda x: x.reshape(params.batch_shape), y)
    return params.rest_state()


def _checked_rest_state(params):
    """The rest state of concrete parameters, or a clear error if there is none."""
    y0 = _rest(params)
    finite = np.asarray(_finite(jax.tree_util.tree_map(lambda x: jnp.expand_dims(x, -1), y0)))
    if not np.all(finite):
        where = "" if finite.ndim == 0 else f" (neuron {np.argwhere(~finite)[0].tolist()})"
        v = np.asarray(y0.v).reshape(-1)[~finite.reshape(-1)][0]
        raise ValueError(
            f"simulate: no resting state for these parameters{where}: the rest-state solve gave "
            f"v = {v} mV. This happens when every conductance is 0 (nothing sets a rest "
            "potential) or the membrane has no steady state. Pass `y0` (e.g. "
            "hhjax.steady_state(p, -65.0))."
        )
    return y0


def simulate(
    params: AbstractModel,
    stimulus: AbstractStimulus | float | None = None,
    t1: float = 100.0,
    *,
    t0: float = 0.0,
    ts: ArrayLike | Sequence[float] | None = None,
    dt_save: float | None = None,
    y0: Any | Sequence[ArrayLike] | None = None,
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    throw: bool = True,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> Trajectory:
    """Integrate the HH equations from `t0` to `t1` with Diffrax.

    **Arguments:**

    - `params`: an [`HHParams`][] (or another [`AbstractModel`][]). Fields with a leading batch
      axis simulate a batch of neurons in one vmapped solve (fields broadcast to one batch shape).
    - `stimulus`: injected current: a stimulus ([`Step`][], [`Pulses`][], [`Sampled`][],
      [`OUNoise`][], or a sum), a constant in µA/cm², or `None`.
    - `t1`, `t0`: end and start of the span (ms). They are traced values, and the save grid is
      padded to one of 8 lengths per octave, so a new `t1` mostly reuses the compiled solve.
    - `ts`: save times (ms), increasing, within `[t0, t1]`. Or `dt_save`: a uniform grid spacing
      (ms). Default: every step for fixed-step solvers, 0.025 ms for adaptive ones.
    - `y0`: initial [`HHState`][] (or `(v, m, h, n)`); default [`rest_state`][]`(params)`.
      [`steady_state`][]`(params, v)` gives NEURON's `finitialize(v)`.
    - `solver`: any Diffrax ODE solver. Default `diffrax.Tsit5()` with a PID controller at
      `rtol`/`atol`. Fixed-step solvers (e.g. `diffrax.Euler()`, or `hhjax.ExponentialEuler()`)
      need `dt0` and step on the exact grid `t0 + k·dt0`.
    - `dt0`: initial (adaptive) or fixed step (ms).
    - `rtol`, `atol`: tolerances of adaptive solvers; default 1e-8 in float64, 1e-6 in float32
      (tighter than float32 round-off only wastes steps).
    - `max_steps`: step budget; default generous (`max(100_000, 200·(t1-t0))`, or the grid
      length for fixed steps).
    - `throw`: raise [`SimulationError`][] on failure; with `False`, check `traj.ok` instead.
    - `adjoint`: a Diffrax adjoint for reverse-mode gradients (default: recursive checkpointing).

    **Returns:**

    A [`Trajectory`][]; arrays of shape `(*batch, times)`.

    Stimulus discontinuities (`stimulus.jump_ts()`) are handed to the step-size controller, so
    adaptive solvers step exactly onto every edge.
    """
    params = _model("simulate", params)
    stimulus = as_stimulus(stimulus)
    t0, t1 = _as_time("t0", t0), _as_time("t1", t1)
    if t1 <= t0:
        raise ValueError(f"`t1` ({t1} ms) must be greater than `t0` ({t0} ms).")
    if solver is None:
        solver = diffrax.Tsit5()
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(f"`solver` must be a diffrax solver instance, got {solver!r}.")
    adaptive = isinstance(solver, diffrax.AbstractAdaptiveSolver) and not getattr(
        solver, "fixed_step_only", False
    )
    if dt0 is not None:
        dt0 = _as_time("dt0", dt0)
        if dt0 <= 0:
            raise ValueError(f"`dt0` must be > 0 ms, got {dt0}.")
    step_grid = None
    if not adaptive:
        if dt0 is None:
            raise ValueError(
                f"{type(solver).__name__} is a fixed-step solver: pass `dt0` (ms), e.g. dt0=0.025."
            )
        step_grid = _uniform_grid(t0, t1, dt0)
    low_precision = jnp.finfo(jnp.result_type(params.dtype, float)).bits < 64
    if rtol is None:
        rtol = 1e-6 if low_precision else DEFAULT_RTOL
    if atol is None:
        atol = 1e-6 if low_precision else DEFAULT_ATOL
    if adaptive and not (rtol > 0 and atol > 0):
        raise ValueError(f"`rtol` and `atol` must be > 0, got {rtol}, {atol}.")
    save_ts = _save_grid(t0, t1, ts, dt_save, step_grid)
    if max_steps is None:
        max_steps = len(step_grid) if step_grid is not None else max(100_000, int(200 * (t1 - t0)))
    if y0 is not None:
        y0 = _as_state(y0, params)
    if stimulus is not None:
        stimulus.check_span(t0, t1)
    jumps = _jump_times(stimulus, t0, t1)
    if adjoint is None:
        adjoint = diffrax.RecursiveCheckpointAdjoint()

    max_steps = check_count("max_steps", max_steps)
    traced = _is_traced((params, stimulus, y0))
    if y0 is None and not traced:
        # Found eagerly so that a membrane with no rest (all conductances 0) is named here,
        # instead of surfacing as a NaN state that stalls the step-size controller.
        y0 = _checked_rest_state(params)
    config = SolveConfig(
        solver, dt0, float(rtol), float(atol), int(max_steps), bool(throw and traced), adjoint
    )
    n_save = len(save_ts)
    # The compiled solve is keyed on its save grid's shape; padding the grid (with copies of
    # its last time) to 8 lengths per octave lets a new `t1` reuse a compilation (~2.5 s).
    if step_grid is None:
        save_ts = np.concatenate(
            [save_ts, np.full(padded_length(n_save, 8, 64) - n_save, save_ts[-1])]
        )
    # 0-d arrays are traced values, not static arguments: a new t1 does not recompile.
    t0_, t1_ = np.array(t0), np.array(t1)
    traj = _solve(params, stimulus, y0, save_ts, step_grid, jumps, t0_, t1_, config)
    if len(save_ts) != n_save:
        traj = eqx.tree_at(
            lambda tr: (tr.ts, tr.state, tr.i_stim),
            traj,
            jax.tree_util.tree_map(lambda x: x[..., :n_save], (traj.ts, traj.state, traj.i_stim)),
        )
    if throw and not traced:
        ok = np.asarray(traj.ok)
        if not np.all(ok):
            bad = np.asarray(traj.result._value).reshape(-1)[~ok.reshape(-1)][0]
            fixes = (
                f"Fixes: a smaller `dt0` (now {dt0} ms), or a stable scheme such as "
                "hhjax.ExponentialEuler() or an adaptive solver."
                if bad == RESULTS.nonfinite_state._value
                else f"Fixes: raise `max_steps` (now {max_steps}), loosen `rtol`/`atol`, try a "
                "stiff solver such as diffrax.Kvaerno5(), or check the parameters."
            )
            raise SimulationError(
                f"simulate: the {type(solver).__name__} solve on [{t0}, {t1}] ms failed "
                f"({np.sum(~ok)} of {ok.size} neuron(s)): {_result_message(bad)} {fixes} Pass "
                "throw=False to get the partial result with traj.ok instead."
            )
    return traj


# ---------------------------------------------------------------------------- forward gradients
def value_and_grad_forward(fun, argnums: int = 0):
    """Like `jax.value_and_grad`, but by forward mode: one batched JVP per input element.

    With few parameters (an [`HHParams`][] has 9 scalars) forward mode costs about as many
    tangent propagations as there are parameters, carried along the same solve, and needs no
    backward pass or checkpointing: on the benchmark (100 ms, 9 fields) it took about 4× one
    forward solve against 5–18× for reverse mode. Inside `fun`, call [`hhjax.simulate`][]
    with `adjoint=diffrax.ForwardMode()` (the default checkpointed adjoint is reverse-only).

    **Arguments:**

    - `fun`: a function returning a scalar.
    - `argnums`: which positional argument to differentiate (an int).

    **Returns:**

    A function with `fun`'s signature returning `(value, grad)`, `grad` shaped like the
    argument.
    """
    if not isinstance(argnums, int):
        raise TypeError(f"`argnums` must be an int, got {argnums!r}.")

    def wrapped(*args, **kwargs):
        def both(x):
            call = list(args)
            call[argnums] = x
            value = fun(*call, **kwargs)
            return value, value

        try:
            grad, value = jax.jacfwd(both, has_aux=True)(args[argnums])
        except TypeError as error:
            if "custom_vjp" not in str(error):
                raise
            raise TypeError(
                "value_and_grad_forward: forward-mode differentiation reached a reverse-only "
                "adjoint. Inside `fun`, call hhjax.simulate(..., adjoint=diffrax.ForwardMode()) "
                "(the default diffrax.RecursiveCheckpointAdjoint supports reverse mode only)."
            ) from error
        return value, grad

    return wrapped
