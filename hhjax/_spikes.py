"""Spike detection inside a solve: in the exponential-Euler step, and by Diffrax events.

Units: mV, ms.

hhjax has one sampled-trace detector ([`hhjax.spike_times`][], on saved voltages) and the two
in-solve detectors here: [`_crossing_fraction`][] locates an upward threshold crossing inside one
exponential-Euler step from the step's own voltage path (the batch kernel,
[`hhjax.simulate_batch`][]); [`spike_times_adaptive`][] ends an adaptive solve at each crossing
with a Diffrax event. All three count upward crossings of one threshold, by default the model's
`spike_threshold`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._checks import check_count
from ._model import AbstractModel, _spike_threshold
from ._simulate import _as_state, _cast_floats, _jump_times, _model, _start_controller
from ._solvers import MembraneTerm
from ._stimulus import AbstractStimulus, as_stimulus

__all__ = ["AdaptiveSpikes", "spike_times_adaptive"]


def _crossing_fraction(v0, v1, v_inf, threshold):
    r"""Where in a step (0..1) the step's voltage path crosses `threshold`, from one division.

    Within a step the scheme's voltage is $v(s) = v_\infty + (v_0 - v_\infty) e^{-\lambda s}$,
    so the crossing is at $s = \ln a / \ln b$ with $a = (\theta - v_\infty)/(v_0 - v_\infty)$
    and $b = (v_1 - v_\infty)/(v_0 - v_\infty)$. With the (1, 1) Padé form
    $\ln(1 - x) \approx -2x/(2 - x)$ for both logarithms this is
    $s = (\theta - v_0)(v_0 + v_1 - 2 v_\infty) / ((v_1 - v_0)(v_0 + \theta - 2 v_\infty))$:
    exact at both ends and off the exact $s$ by at most 0.008 / 0.031 / 0.11 of a step for
    $\lambda = G \Delta t / C_m \le$ 0.5 / 1 / 2 (tested). At a 0 mV upstroke crossing with
    hh.mod parameters and `dt = 0.025`, $\lambda \approx 0.25$ at 6.3 °C and 0.45 at 20 °C,
    where linear interpolation would be off by up to 0.03 and 0.06 of a step. Only meaningful
    where $v_0 < \theta \le v_1$ (then the denominator is nonzero); clipped to [0, 1], and 1
    should rounding ever make it 0/0, so that a stored time is never NaN.
    """
    num = (threshold - v0) * (v0 + v1 - 2.0 * v_inf)
    den = (v1 - v0) * (v0 + threshold - 2.0 * v_inf)
    # The inner `where` keeps 0/0 out of reverse-mode derivatives (steps with no crossing).
    nonzero = den != 0.0
    return jnp.clip(jnp.where(nonzero, num / jnp.where(nonzero, den, 1.0), 1.0), 0.0, 1.0)


# ---------------------------------------------------------------------------- adaptive spikes
class AdaptiveSpikes(eqx.Module):
    """Spike times from [`spike_times_adaptive`][].

    **Fields:**

    - `times`: upward threshold-crossing times (ms), NaN-padded to `max_spikes`.
    - `count`: number of crossings in $(t_0, t_1]$ (may exceed `max_spikes`; later ones are not
      stored).
    - `num_steps`: solver steps (accepted and rejected), as `Trajectory.num_steps`.
    - `final_state`: the model's state at `t1`.
    - `ok`: whether the solve succeeded.
    """

    times: Float[Array, " max_spikes"]
    count: Int[Array, ""]
    num_steps: Int[Array, ""]
    final_state: Any
    ok: Bool[Array, ""]


def _signed_voltage(t, y, args, **kwargs):
    """The event function: `sign · (v - threshold)`, with `args = (sign, threshold)`; its
    upward zero is the upstroke for sign +1, the downstroke for sign -1."""
    # In the default float dtype: Diffrax pairs it with a Python-float 0.0 inside a `cond`,
    # which is float64 whenever x64 is on, even for a float32 model.
    return (args[0] * (y.v - args[1])).astype(jnp.result_type(float))


class _AdaptiveConfig(eqx.Module):
    """The span (ms), the Diffrax solver and its tolerances, the threshold (mV; may be traced),
    the spike buffer size and the step budget of one `spike_times_adaptive` call."""

    t0: float
    t1: float
    solver: diffrax.AbstractAdaptiveSolver
    rtol: float
    atol: float
    threshold: Any
    max_spikes: int
    max_steps: int


@eqx.filter_jit
def _adaptive_spikes(params, stimulus, y0, jumps, config: _AdaptiveConfig):
    t0, t1, solver, rtol, atol = config.t0, config.t1, config.solver, config.rtol, config.atol
    threshold, max_spikes, max_steps = config.threshold, config.max_spikes, config.max_steps
    dtype = jnp.result_type(params.dtype, float)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    if y0 is None:
        y0 = params.rest_state()
    y0 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), y0)
    # As in `simulate`: explicit solvers start with the step capped at the stability limit of
    # the initial state's linearisation. Without the cap a float32 solve from an exact rest
    # state (zero error estimate, 1-ms steps) stalled at a stimulus edge: HH channels plus an
    # h current, 8 µA/cm² from 5 ms, ran out of steps at t = 5.0000005 ms.
    controller = _start_controller(solver, params, y0, stimulus, t0, rtol, atol, jumps, dtype)
    t1_ = jnp.asarray(t1, dtype)
    # One solve per threshold crossing, each ended by a Diffrax event whose time is found by
    # Newton's method on the solver's own dense interpolant. Nothing per step is saved:
    # keeping every step (SaveAt(steps=True)) costs more than the solve itself on a CPU. The
    # event looks alternately for the upstroke (recorded) and the downstroke, so a restart,
    # which sits exactly on the threshold, cannot trigger again at once.
    # Newton stops once |v - threshold| < tol (mV) at the located time. v there cannot be
    # resolved better than |dv/dt| * eps * t, so tol scales with the horizon: 3000 * eps * t
    # leaves room for upstrokes up to ~1000 mV/ms. The time error is tol / |dv/dt|: ~1e-11
    # ms in float64 and ~4e-3 ms in float32 at t = 1 s for a 100 mV/ms upstroke.
    tol = 3000.0 * float(jnp.finfo(dtype).eps) * max(1.0, abs(t0), abs(t1))
    event = diffrax.Event(
        _signed_voltage, root_finder=optx.Newton(rtol=0.0, atol=tol), direction=True
    )

    def segment(carry):
        t, y, sign, count, times, steps, ok = carry
        sol = diffrax.diffeqsolve(
            MembraneTerm(params, stimulus, fast=True),
            solver,
            t0=t,
            t1=t1_,
            dt0=None,
            y0=y,
            args=(sign, jnp.asarray(threshold, dtype)),
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=controller,
            max_steps=max_steps,
            event=event,
            throw=False,
        )
        hit = sol.result == diffrax.RESULTS.event_occurred
        upstroke = hit & (sign > 0)
        t_end = sol.ts[-1]
        times = times.at[jnp.where(upstroke & (count < max_spikes), count, max_spikes)].set(
            t_end, mode="drop"
        )
        steps = steps + sol.stats["num_steps"]
        ok = ok & (hit | (sol.result == diffrax.RESULTS.successful)) & (steps <= max_steps)
        y_end = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
        count = count + upstroke.astype(jnp.int32)
        return t_end, y_end, jnp.where(hit, -sign, sign), count, times, steps, ok

    init = (
        jnp.asarray(t0, dtype),
        y0,
        jnp.asarray(1.0, dtype),
        jnp.zeros((), jnp.int32),
        jnp.full((max_spikes,), jnp.nan, dtype),
        jnp.zeros((), jnp.int32),
        jnp.asarray(True),
    )
    _, final, _, count, times, steps, ok = jax.lax.while_loop(
        lambda c: (c[0] < t1_) & c[6], segment, init
    )
    return AdaptiveSpikes(times, count, steps, final, ok)


def spike_times_adaptive(
    params: AbstractModel,
    stimulus: AbstractStimulus | ArrayLike | None = None,
    t1: float = 1000.0,
    *,
    t0: float = 0.0,
    y0: Any | Sequence[ArrayLike] | None = None,
    threshold: float | None = None,
    solver: diffrax.AbstractAdaptiveSolver | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_spikes: int = 256,
    max_steps: int | None = None,
) -> AdaptiveSpikes:
    """Spike times of one neuron from an adaptive solve that saves nothing along the way.

    [`hhjax.simulate`][] evaluates the dense solution on a 0.025 ms grid (40,000 points per
    simulated second). Here each threshold crossing ends one Diffrax solve with an event whose
    time Newton's method finds on the solver's own dense interpolant, and the next solve starts
    from there (upstrokes are recorded, downstrokes only re-arm the detector). Stimulus edges
    are stepped on exactly, as in `simulate`.

    Accuracy (NEURON hh.mod parameters, 10 µA/cm² from 5 ms, 1 s, 69 spikes, against NEURON
    CVODE at 1e-13): max spike-time error 1.5e-3 ms at the default `rtol = atol = 1e-5`
    with Tsit5; see `benchmarks/results/adaptive.json` for the tolerance sweep.

    **Arguments:**

    - `params`: any unbatched model (use `jax.vmap` over a wrapper for batches).
    - `stimulus`: a stimulus, a constant (µA/cm²), or `None`.
    - `t1`, `t0`: end and start (ms).
    - `y0`: initial state; default [`hhjax.rest_state`][].
    - `threshold`: detection level (mV), upward crossings; default `params.spike_threshold`.
    - `solver`: an adaptive Diffrax solver; default `diffrax.Tsit5()`.
    - `rtol`, `atol`: tolerances of the PID controller.
    - `max_spikes`: size of the returned buffer.
    - `max_steps`: step budget (default `max(10_000, 50·(t1 - t0))`); check `ok`.

    **Returns:**

    An [`AdaptiveSpikes`][].
    """
    params = _model("spike_times_adaptive", params)
    if params.batch_shape:
        raise ValueError(
            f"`params` must be unbatched, got batch shape {params.batch_shape}; use jax.vmap."
        )
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        raise ValueError(f"`t1` ({t1} ms) must be finite and greater than `t0` ({t0} ms).")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"`rtol` and `atol` must be > 0, got {rtol}, {atol}.")
    max_spikes = check_count("max_spikes", max_spikes)
    if solver is None:
        solver = diffrax.Tsit5()
    if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise TypeError(f"`solver` must be an adaptive Diffrax solver, got {solver!r}.")
    if max_steps is None:
        max_steps = max(10_000, int(50 * (t1 - t0)))
    max_steps = check_count("max_steps", max_steps)
    stimulus = as_stimulus(stimulus)
    dtype = jnp.result_type(params.dtype, float)
    if stimulus is not None:
        stimulus.check_span(t0, t1)
        stimulus = _cast_floats(stimulus, dtype)
    jumps = _jump_times(stimulus, t0, t1)
    if y0 is not None:
        y0 = _as_state(y0, params)  # finite, gates in [0, 1]
    threshold = _spike_threshold("spike_times_adaptive", params, threshold)  # may be traced
    config = _AdaptiveConfig(
        t0, t1, solver, float(rtol), float(atol), threshold, max_spikes, max_steps
    )
    return _adaptive_spikes(params, stimulus, y0, jumps, config)

