"""The one model contract every hhjax path uses: [`AbstractModel`][].

A model is an `equinox.Module` holding its parameters as array fields (scalars for one neuron,
a leading batch axis for many) and a tuple of channels (`mechanisms`, leak included). From the
channels' conductance pairs $(g, E)$ and gate kinetics $(x_\\infty, 1/\\tau)$ the contract
derives the vector field, the steady and rest states (one rest solver, `_rest_voltage`), the
named currents and one Rush–Larsen step; simulation, batches, spike detection, plots and the
fitting code need nothing else. [`hhjax.HHParams`][], [`hhjax.models.Pospischil`][] and
[`hhjax.models.Membrane`][] implement it.

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

_REST_ITERATIONS = 40  # safeguarded Newton steps of the rest-state solve


class AbstractModel(eqx.Module):
    """Base class of every membrane model: the one contract every hhjax path uses.

    A model is a leak plus ion channels, each a conductance $g$ with a reversal potential $E$,
    its gates relaxing to $x_\\infty(v)$ with time constant $\\tau(v)$:

    $$C_m \\frac{dv}{dt} = I_{stim}(t) - \\sum_c g_c(v, x)\\,(v - E_c), \\qquad
    \\frac{dx}{dt} = \\frac{x_\\infty(v) - x}{\\tau_x(v)}$$

    A subclass supplies four things:

    - `mechanisms`: the [`hhjax.models.AbstractChannel`][]s, leak included, whose
      `inf_rate(model, v)` (or `inf_tau`) and `conductance(model, v, state)` read the model's
      fields;
    - `make_state(v, gates)`: its state PyTree from the voltage and a `{gate: value}` dict
      (any `equinox.Module` with a field `v` and one attribute per gate);
    - `c_m`: the specific capacitance (µF/cm²), a field;
    - `rest_guess`: where the rest-state Newton solve starts (mV).

    Everything else is generic and may be overridden by a faster fused implementation of the
    same equations (as [`hhjax.HHParams`][] does for its vector field and its step):
    [`vector_field`][], [`steady_state`][], [`rest_state`][], [`channel_conductances`][],
    [`currents`][], [`exp_euler_step`][] (one Rush–Larsen step, used by
    [`hhjax.ExponentialEuler`][], [`hhjax.simulate_batch`][] and the fitting code).
    """

    # ---------------------------------------------------------------- what a model supplies
    @property
    @abc.abstractmethod
    def mechanisms(self) -> tuple:
        """The model's channels, leak included (instances of `hhjax.models.AbstractChannel`)."""

    @abc.abstractmethod
    def make_state(self, v, gates: dict):
        """The model's state from the voltage `v` (mV) and a `{gate: value}` dict."""

    @property
    def rest_guess(self):
        """Starting voltage (mV) of the rest-state solve; default the leak reversal `e_l`."""
        return self.e_l

    # ---------------------------------------------------------------- generic equations
    @property
    def gate_names(self) -> tuple[str, ...]:
        """Names of the gates, in the order of the channels that own them."""
        return tuple(g for c in self.mechanisms for g in c.gates)

    def inf_rate(self, v) -> dict:
        """`{gate: (x_inf, rate)}` at voltage `v` (mV) for every gate of the model: the steady
        state and the relaxation rate $1/\\tau$ (1/ms), the form the step and the field use."""
        out = {}
        for channel in self.mechanisms:
            out.update(channel.inf_rate(self, v))
        return out

    def inf_tau(self, v) -> dict:
        """`{gate: (x_inf, tau_ms)}` at voltage `v` (mV) for every gate of the model."""
        return {g: (x, 1.0 / rate) for g, (x, rate) in self.inf_rate(v).items()}

    def channel_conductances(self, state) -> dict:
        """`{channel name: (g, e)}`: present conductance (mS/cm²) and reversal (mV) of each
        channel at `state`; every current is $g\\,(v - e)$, linear in $v$ for frozen gates."""
        return {c.name: c.conductance(self, state.v, state) for c in self.mechanisms}

    def conductances(self, state) -> list:
        """`[(g, e), ...]`: the pairs of [`channel_conductances`][] in channel order, leak
        first for the cortical models (their long-standing list form)."""
        return list(self.channel_conductances(state).values())

    def currents(self, state) -> dict:
        """`{channel name: current}` densities (µA/cm², outward positive) at `state`."""
        pairs = self.channel_conductances(state).items()
        return {name: g * (state.v - e) for name, (g, e) in pairs}

    def ionic_current(self, state):
        """Total membrane current density (µA/cm², outward positive) at `state`."""
        return sum(self.currents(state).values())

    def vector_field(self, t, y, stimulus):
        """$dy/dt$ (mV/ms and 1/ms) at time `t` (ms) under `stimulus` (a callable
        `t -> µA/cm²`, or `None`)."""
        i_stim = 0.0 if stimulus is None else stimulus(t)
        dv = (i_stim - self.ionic_current(y)) / self.c_m
        kinetics = self.inf_rate(y.v).items()
        rates = {g: (x_inf - getattr(y, g)) * rate for g, (x_inf, rate) in kinetics}
        return self.make_state(dv, rates)

    def _fast_vector_field(self, t, y, stimulus):
        """The vector field as hot forward-only loops evaluate it (a fused override may trade
        the last ulp for speed); by default `vector_field`."""
        return self.vector_field(t, y, stimulus)

    def steady_state(self, v):
        """The state at voltage `v` (mV) with every gate at its steady state $x_\\infty(v)$
        (NEURON's `finitialize(v)`); usable as `y0`."""
        v = jnp.asarray(v, dtype=jnp.result_type(self.dtype, float))
        inf = {g: jnp.broadcast_to(x, jnp.shape(v)) for g, (x, _) in self.inf_rate(v).items()}
        return self.make_state(v, inf)

    def steady_current(self, v):
        """Steady-state I–V relation: membrane current (µA/cm²) with gates at steady state."""
        return self.ionic_current(self.steady_state(v))

    def rest_state(self, i_hold=0.0, *, iterations: int = _REST_ITERATIONS):
        """The state with $dy/dt = 0$ under constant current `i_hold` (µA/cm²).

        The rest voltage is a root of the steady-state I–V relation $I_\\infty(v) = $
        `i_hold`: the stable root (current increasing through it) the membrane relaxes to from
        `rest_guess` with its gates at steady state (the first below it where the net current
        there is outward, above it where inward), within 150 mV, bracketed on a 1-mV grid and
        polished by `iterations` safeguarded Newton steps. Derivatives with respect to the
        parameters and `i_hold` come from the implicit-function theorem
        (`jax.lax.custom_root`), exact at the root and to any order. Where no root is found
        (no bracket, and Newton from `rest_guess` does not settle to 1e-3 mV, e.g. every
        conductance 0) the state is NaN, never a finite non-root. Batched models are vmapped.

        optimistix's `Newton` root finder has the implicit adjoint but neither a bracket nor
        step damping; from `rest_guess` the plain iteration stalls at the knee of a cortical
        I–V curve or overshoots at large holding currents, hence the solve written here.
        """
        if self.batch_shape:
            return jax.vmap(lambda m: m.rest_state(i_hold, iterations=iterations))(
                self.broadcast()
            )
        return self.steady_state(_rest_voltage(self, i_hold, iterations))

    def exp_euler_step(self, y, i_stim, dt):
        """One exponential-Euler (Rush–Larsen) step of length `dt` (ms) under constant
        `i_stim` (µA/cm²); see [`hhjax.ExponentialEuler`][] for the scheme."""
        return self._exp_euler_step(y, i_stim, self._step_constants(dt), None)[0]

    # ---------------------------------------------------------------- the step's two halves
    # How many arrays `_exp_euler_step` passes through the batch kernel's `hold` (an XLA:CPU
    # aid against splitting a fusion across threads). Holding the cortical step's new gates
    # changed nothing measurable (HH/cortical per neuron-step 1.83 with, 1.78 without), so the
    # generic step holds none.
    _n_held = 0

    def _step_constants(self, dt):
        """Per-neuron constants of a step of length `dt`, computed once outside a time loop."""
        return dt, dt / self.c_m

    def _exp_euler_step(self, y, i_stim, constants, hold):
        """The Rush–Larsen step and the voltage it relaxes toward: `(new state, v_inf)`.

        Gates advance exactly for the voltage frozen at `y.v`; then the voltage exactly for the
        conductances frozen at the new gates. `hold`, if given, takes `_n_held` arrays and
        returns them unchanged (see `hhjax._batch._keep_whole`); this generic step holds none.
        """
        del hold
        dt, dt_over_c = constants
        gates = {g: getattr(y, g) for g in self.gate_names}
        for gate, (x_inf, rate) in self.inf_rate(y.v).items():
            gates[gate] = x_inf + (gates[gate] - x_inf) * jnp.exp(-dt * rate)
        new = self.make_state(y.v, gates)
        pairs = self.channel_conductances(new).values()
        g_total = sum(g for g, _ in pairs)
        v_inf = (sum(g * e for g, e in pairs) + i_stim) / g_total
        v = v_inf + (y.v - v_inf) * jnp.exp(-g_total * dt_over_c)
        return self.make_state(v, gates), v_inf

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
        """A copy with some fields replaced (values are converted to arrays); static fields
        (e.g. a cortical model's `channels`) are kept unless given."""
        every = tuple(f.name for f in dataclasses.fields(self))
        unknown = set(changes) - set(every)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} has no field(s) {sorted(unknown)}; fields are "
                f"{', '.join(self.field_names)}."
            )
        values = {name: getattr(self, name) for name in every}
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


_REST_SPAN = 150.0  # mV either side of `rest_guess` searched for a bracketed root
_REST_GRID = 301  # voltages on that span (1 mV apart)
_REST_TOL = 1e-3  # mV: a root is accepted when the last Newton step is below this


def _rest_voltage(model: AbstractModel, i_hold, iterations: int = _REST_ITERATIONS):
    """The rest voltage of an unbatched model (see `AbstractModel.rest_state`), NaN if the
    steady-state I–V relation has no root the search finds."""
    dtype = jnp.result_type(model.dtype, float)
    guess = jnp.asarray(jax.lax.stop_gradient(model.rest_guess), dtype)

    def current(v):
        return model.steady_current(v) - i_hold

    def solve(f, v0):
        # 1. Bracket the stable root (the current rising through i_hold) that the membrane
        #    relaxes to from the guess with its gates at steady state: the first one below
        #    the guess if the net current there is outward, above it if inward; found as an
        #    upward sign change on a 1-mV grid. A damped Newton iteration alone stalls at the
        #    knee (local maximum) of a cortical I–V curve and returns a finite non-root there
        #    (Pospischil LTS at 0.5 µA/cm²: -56.9 mV, residual -0.6 µA/cm²; the root is at
        #    -16.2 mV).
        half = (_REST_GRID - 1) // 2
        grid = v0 + jnp.linspace(-_REST_SPAN, _REST_SPAN, _REST_GRID, dtype=dtype)
        values = jax.vmap(f)(grid)
        up = (values[:-1] < 0) & (values[1:] >= 0)
        index = jnp.arange(_REST_GRID - 1)
        downward = values[half] >= 0
        side = jnp.where(downward, index < half, index >= half)
        order = jnp.where(downward, half - index, index - half)  # distance along the path
        rank = jnp.where(up & side, order, _REST_GRID)
        k = jnp.argmin(rank)
        found = rank[k] < _REST_GRID
        lo = jnp.where(found, grid[k], -jnp.inf)
        hi = jnp.where(found, grid[k + 1], jnp.inf)
        start = jnp.where(found, 0.5 * (grid[k] + grid[k + 1]), v0)
        df = jax.grad(f)

        # 2. Polish: Newton steps (damped to 10 mV), bisection whenever a step leaves the
        #    bracket, the bracket shrinking with every evaluation. Without a bracket: damped
        #    Newton from the guess (a root beyond the search span).
        def step(_, carry):
            v, lo, hi, last = carry
            fv = f(v)
            lo = jnp.where(fv < 0, v, lo)
            hi = jnp.where(fv >= 0, v, hi)
            newton = v - jnp.clip(fv / df(v), -10.0, 10.0)
            inside = (newton > lo) & (newton < hi) & jnp.isfinite(newton)
            bisect = jnp.where(jnp.isfinite(lo) & jnp.isfinite(hi), 0.5 * (lo + hi), newton)
            new = jnp.where(inside | ~found, newton, bisect)
            return new, lo, hi, jnp.abs(new - v)

        init = (start, lo, hi, jnp.asarray(jnp.inf, dtype))
        v, _, _, last = jax.lax.fori_loop(0, iterations, step, init)
        return jnp.where(last < _REST_TOL, v, jnp.nan)

    # Derivatives by the implicit-function theorem (dv/dθ = -(∂I/∂θ)/(∂I/∂v) at the root, to
    # any order), not through the iterations.
    return jax.lax.custom_root(current, guess, solve, lambda g, y: y / g(jnp.ones_like(y)))


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
