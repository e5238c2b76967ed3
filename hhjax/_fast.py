"""Fast fixed-step simulation: the exponential-Euler (Rush–Larsen) solver and batch features.

Units: mV, ms, µA/cm², mS/cm², µF/cm², Hz.

One step of length $\\Delta t$ from $(v_k, m_k, h_k, n_k)$, with the stimulus taken at the
step's midpoint $t_k + \\Delta t/2$ (so a step edge on the grid is never ambiguous):

1. Gates, exactly for the voltage frozen at $v_k$ (NEURON's `cnexp`, Rush–Larsen):
   $x_{k+1} = x_\\infty(v_k) + (x_k - x_\\infty(v_k))\\,e^{-\\Delta t/\\tau_x(v_k)}$.
   A convex combination of $x_k$ and $x_\\infty \\in [0, 1]$: gates never leave $[0, 1]$.
2. Voltage, exactly for the conductances frozen at the new gates: with
   $G = \\bar g_{Na} m_{k+1}^3 h_{k+1} + \\bar g_K n_{k+1}^4 + g_L$ and
   $v_\\infty = (\\bar g_{Na} m^3 h E_{Na} + \\bar g_K n^4 E_K + g_L E_L + I)/G$,
   $v_{k+1} = v_\\infty + (v_k - v_\\infty)\\,e^{-G \\Delta t / C_m}$.
   Unconditionally stable (the membrane is linear in $v$ once the gates are fixed), like
   NEURON's implicit voltage step, and exact for a passive membrane.

Each half-update is exact for what it freezes and the two are staggered, as in NEURON's fixed
step; measured spike-time errors fall as $\\Delta t^2$ (1.08 / 0.27 / 0.043 ms for the 60th
spike at 0.05 / 0.025 / 0.01 ms, `benchmarks/accuracy.py`). [`ExponentialEuler`][] exposes it
as a Diffrax solver for [`hhjax.simulate`][]; [`simulate_batch`][] runs it as a plain
`lax.scan` over many neurons that keeps only features (spike count, spike times, rate,
optionally a coarse record), so memory does not grow with the simulated time and any number of
neurons runs in chunks.

Two cheaper paths for single neurons sit here too: [`spike_times_adaptive`][] (adaptive
solves that save nothing, each ended by a Diffrax event at a threshold crossing) and
[`value_and_grad_forward`][] (forward-mode gradients, cheaper than reverse mode for the 9
scalars of an [`HHParams`][]).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike

from ._checks import check_count
from ._model import _spike_threshold
from ._params import HHParams
from ._simulate import (
    _adaptive_controller,
    _as_state,
    _cast_floats,
    _jump_times,
    _model_field,
    rest_state,
)
from ._stimulus import AbstractStimulus, Step, as_stimulus
from ._vector_field import HHState, _derivative

__all__ = [
    "ExponentialEuler",
    "BatchFeatures",
    "simulate_batch",
    "exp_euler_step",
    "fast_rates",
    "AdaptiveSpikes",
    "spike_times_adaptive",
    "value_and_grad_forward",
]


# ---------------------------------------------------------------------------- the update
def _series_cutoff(dtype) -> float:
    # Below |x| < cutoff, x/(e^x - 1) comes from its series 1 - x/2 + x²/12 - x⁴/720, whose first
    # neglected term x⁶/30240 is below the dtype's round-off there; above it the difference
    # e^x - 1 of a product of exponentials loses at most ~eps/|x|, also below round-off-ish.
    return 0.3 if jnp.finfo(dtype).bits <= 32 else 0.01


def _xexpm1(x, ex, cutoff):
    """$x/(e^x - 1)$ given `ex` = $e^x$, with the series near 0 (double-`where` guarded)."""
    small = jnp.abs(x) < cutoff
    denominator = jnp.where(small, 1.0, ex - 1.0)
    x2 = x * x
    series = 1.0 - 0.5 * x + x2 * (1.0 / 12.0 - x2 * (1.0 / 720.0))
    return jnp.where(small, series, jnp.where(small, 1.0, x) / denominator)


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
    cutoff = _series_cutoff(v.dtype)
    u = v - params.v_ref
    if phi is None:
        phi = _phi(params)
    # The barrier stops XLA from rewriting the products below back into exp(k·x) (which
    # would bring back the exponentials this function exists to avoid); it costs nothing.
    e80 = jax.lax.optimization_barrier(jnp.exp(u * (-1.0 / 80.0)))
    e18 = jnp.exp(u * (-1.0 / 18.0))
    e40 = e80 * e80
    e20 = e40 * e40
    e10 = e20 * e20
    x_m = (25.0 - u) * 0.1
    x_n = (10.0 - u) * 0.1
    am = _xexpm1(x_m, math.exp(2.5) * e10, cutoff)
    an = 0.1 * _xexpm1(x_n, math.e * e10, cutoff)
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


def exp_euler_step(
    params: HHParams, state: HHState, i_stim: ArrayLike, dt, phi: ArrayLike | None = None
) -> HHState:
    """One exponential-Euler step of length `dt` (ms) under stimulus `i_stim` (µA/cm²).

    See the module docstring for the scheme. Pure, elementwise, broadcasting over any batch
    shape. `phi` is the temperature factor if precomputed.

    **Returns:** the new [`HHState`][].
    """
    v, m, h, n = state.v, state.m, state.h, state.n
    m, h, n = _gates(m, h, n, fast_rates(params, v, phi), dt)
    g, drive = _membrane(params, m, h, n, i_stim)
    v_inf = drive / g
    v = v_inf + (v - v_inf) * jnp.exp(-dt * g / params.c_m)
    return HHState(v, m, h, n)


# ---------------------------------------------------------------------------- Diffrax solver
class ExponentialEuler(diffrax.AbstractSolver):
    """Exponential Euler (Rush–Larsen) for HH membranes: NEURON's fixed-step scheme, order 1.

    Gates advance exactly for the voltage frozen over the step (`cnexp`), the voltage exactly
    for the conductances frozen at the new gates; the stimulus is taken at the step midpoint.
    Stable at any step, gates stay in $[0, 1]$. Fixed step only: use with
    `hhjax.simulate(p, stim, t1, solver=hhjax.ExponentialEuler(), dt0=0.025)`.

    The vector field's `args` must be `(HHParams, stimulus)` as [`hhjax.simulate`][] passes
    them; the terms are not used (the scheme needs the model's structure, not just $f$).

    Accuracy (NEURON hh.mod parameters, 10 µA/cm² from 5 ms, 1 s; error of the 60th spike vs
    NEURON CVODE at 1e-13): 1.08 / 0.27 / 0.043 ms at `dt0` = 0.05 / 0.025 / 0.01 ms, in
    float64 and float32 alike (NEURON's own fixed step: 8.0 / 3.9 / 1.5 ms). The staggered
    updates make voltage and spike times second order in `dt0`; the gates as reported at whole
    steps are first order. See `benchmarks/results/accuracy.json`.
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 1

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        params, stimulus = _split_args(args)
        dt = t1 - t0
        i_stim = 0.0 if stimulus is None else stimulus(t0 + 0.5 * dt)
        y1 = exp_euler_step(params, y0, i_stim, dt)
        dense_info = dict(y0=y0, y1=y1)
        return y1, None, dense_info, None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


ExponentialEuler.__init__.__doc__ = """**Arguments:** None"""


def _split_args(args):
    try:
        params, stimulus = args
    except (TypeError, ValueError):
        raise TypeError(
            "ExponentialEuler needs args=(HHParams, stimulus), as hhjax.simulate passes them."
        ) from None
    if not isinstance(params, HHParams):
        raise TypeError(
            "ExponentialEuler is specific to the Hodgkin–Huxley membrane: args[0] must be an "
            f"hhjax.HHParams, got {type(params).__name__}. Use a generic Diffrax solver instead."
        )
    return params, stimulus


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
    return jnp.clip(jnp.where(den != 0.0, num / den, 1.0), 0.0, 1.0)


# ---------------------------------------------------------------------------- batch features
class BatchFeatures(eqx.Module):
    """Per-neuron features from [`simulate_batch`][]; arrays with a leading `(*batch)` shape.

    **Fields:**

    - `spike_count`: number of upward threshold crossings in $(t_0, t_1]$ (int32).
    - `spike_times`: the first `max_spikes` crossing times (ms), NaN-padded,
      shape `(*batch, max_spikes)`. Each is where the step's own voltage solution (the
      exponential toward $v_\\infty$ with conductances frozen) crosses, located with a Padé
      form of its logarithm: for hh.mod at 6.3 °C within 6e-5 ms of that path's exact
      crossing at `dt = 0.025` (5e-4 ms at 0.05; ~1.2e-4 ms at 20 °C), far inside the
      scheme's own error (see [`ExponentialEuler`][]).
    - `rate`: `spike_count` over the simulated span (Hz).
    - `final_state`: the [`HHState`][] at `t1` (continue a run with it as `y0`).
    - `dropped`: spikes counted but not stored because two crossings fell inside one block
      (`block` ms; only for spike trains above ~1/block kHz); normally all zero.
    - `record_ts`: times (ms) of the coarse record, shape `(samples,)`, or `None`.
    - `record`: dict of recorded variables (`"v"`, `"m"`, `"h"`, `"n"`), each of shape
      `(*batch, samples)`, or `None`.
    - `ok`: per neuron, `True` where the state stayed finite to `t1` (bool). A neuron that is
      not `ok` has `rate` NaN and its counts and times are not to be used; `simulate_batch`
      warns when there is one. Always set by `simulate_batch` (`None` only by hand).
    """

    spike_count: Array
    spike_times: Array
    rate: Array
    final_state: HHState
    dropped: Array
    record_ts: Array | None
    record: dict | None
    ok: Array | None = None


# XLA:CPU splits a loop fusion across its intra-op thread pool when its cost model calls it
# compute-bound (more flops than bytes), as it does for the guarded rates α_m and α_n. Inside the
# time loop that means a hand-off to a second thread every step, which then spins between steps
# and takes cycles from a part running on the other core (two parts on two cores: 225-230 M
# neuron-steps/s split, 243-250 unsplit; benchmarks/README.md). A fusion that ends in an in-place
# dynamic-update-slice is never split, so the two rates are written into a carried buffer one
# element longer than the batch, at a start index known only at run time (0 or 1; the same one
# for reading back), and read back from it. The values are untouched (tests/test_fast.py).
def _keep_whole(buffer, x, zero):
    return jax.lax.dynamic_update_slice(buffer, x, (zero,))


def _read_whole(buffer, size, zero):
    return jax.lax.dynamic_slice(buffer, (zero,), (size,))


_RECORDABLE = ("v", "m", "h", "n")
# Blocks whose crossings are stored together. XLA:CPU splits the scatter across threads (its
# cost model sees the whole spike buffer); once per 32 blocks that hand-off costs nothing.
_STORE_GROUP = 32


def _chunk_kernel(
    params, stimulus, y0, zero, t0, dt, n_blocks, block, tail, threshold, max_spikes, record, unroll
):
    """Simulate one chunk of neurons; `zero` is a run-time int32 0 or 1 (or `None`: no held
    rates, for accelerators), later arguments static."""
    dtype = y0.v.dtype
    size = y0.v.shape[0]
    dt_ = jnp.asarray(dt, dtype)
    thr = jnp.asarray(threshold, dtype)
    t0_ = jnp.asarray(t0, dtype)
    # Per-neuron constants leave the loop: pow and 1/C_m once, not every step.
    # x_inf = a/(a+b) does not depend on phi, so phi only scales the decay rate.
    dt_phi = dt_ * _phi(params)
    dt_inv_c = dt_ / params.c_m

    def current(t):
        if stimulus is None:
            return jnp.zeros((), dtype)
        return jnp.asarray(stimulus(t), dtype)

    def run_block(state, start_step, length):
        # Within a block at most one crossing per neuron is stored (spikes are ms apart). Its
        # time is formed in the step itself (one division, see `_crossing_fraction`), so the
        # loop carries one extra array for it instead of the step's data.
        held = () if zero is None else (jnp.zeros((size + 1,), dtype),) * 2
        init = (state, jnp.zeros((size,), jnp.int32), jnp.full((size,), jnp.nan, dtype), held)

        def step(carry, j):
            state, crossed, t_c, held = carry
            t_k = t0_ + (start_step + j).astype(dtype) * dt_
            i_stim = current(t_k + 0.5 * dt_)
            v0 = state.v

            def hold(am, an):
                nonlocal held
                held = (_keep_whole(held[0], am, zero), _keep_whole(held[1], an, zero))
                return _read_whole(held[0], size, zero), _read_whole(held[1], size, zero)

            rates = _fast_rates(params, v0, 1.0, None if zero is None else hold)
            m, h, n = _gates(state.m, state.h, state.n, rates, dt_phi)
            g, drive = _membrane(params, m, h, n, i_stim)
            v_inf = drive / g
            v1 = v_inf + (v0 - v_inf) * jnp.exp(-g * dt_inv_c)
            up = (v0 < thr) & (v1 >= thr)
            # "First in this block" from t_c itself: the count is then read only by its own
            # update and XLA updates it in place (no copy each step).
            first = up & jnp.isnan(t_c)
            t_c = jnp.where(first, t_k + _crossing_fraction(v0, v1, v_inf, thr) * dt_, t_c)
            crossed = crossed + up.astype(jnp.int32)
            return (HHState(v1, m, h, n), crossed, t_c, held), None

        steps = jnp.arange(length, dtype=jnp.int32)
        (state, crossed, t_c, _), _ = jax.lax.scan(step, init, steps, unroll=min(unroll, length))
        return state, crossed, t_c

    def one_block(carry, b, length=block):
        # Counts advance per block; the crossing time and its buffer slot leave as scan outputs
        # and are stored once per group of blocks (one scatter per group, not per block).
        state, count, dropped = carry
        state, crossed, t_cross = run_block(state, b * block, length)
        slot = jnp.where((crossed > 0) & (count < max_spikes), count, max_spikes)
        dropped = dropped + jnp.maximum(crossed - 1, 0)
        out = (slot, t_cross) + tuple(getattr(state, name) for name in record)
        return (state, count + crossed, dropped), out

    def store(buf, slots, times):
        rows = jnp.broadcast_to(jnp.arange(size), slots.shape)
        return buf.at[rows, slots].set(times, mode="drop")

    def blocks(carry, first, n):
        state, count, dropped, buf = carry
        (state, count, dropped), (slots, times, *rec) = jax.lax.scan(
            one_block, (state, count, dropped), first + jnp.arange(n, dtype=jnp.int32)
        )
        return (state, count, dropped, store(buf, slots, times)), tuple(rec)

    def group(carry, g):
        return blocks(carry, g * _STORE_GROUP, _STORE_GROUP)

    carry = (
        y0,
        jnp.zeros((size,), jnp.int32),
        jnp.zeros((size,), jnp.int32),
        jnp.full((size, max_spikes), jnp.nan, dtype),
    )
    pieces = [tuple(getattr(y0, name)[None] for name in record)]
    n_groups, rest = divmod(n_blocks, _STORE_GROUP)
    if n_groups:
        carry, rec = jax.lax.scan(group, carry, jnp.arange(n_groups, dtype=jnp.int32))
        pieces.append(tuple(r.reshape((-1, size)) for r in rec))
    if rest:
        carry, rec = blocks(carry, n_groups * _STORE_GROUP, rest)
        pieces.append(rec)
    if tail:
        state, count, dropped, buf = carry
        (state, count, dropped), (slot, t_cross, *rec) = one_block(
            (state, count, dropped), n_blocks, tail
        )
        carry = (state, count, dropped, store(buf, slot[None], t_cross[None]))
        pieces.append(tuple(r[None] for r in rec))
    recorded = tuple(jnp.concatenate(rs, axis=0).T for rs in zip(*pieces)) if record else ()
    state, count, dropped, buf = carry
    return count, buf, dropped, state, recorded


def _run_chunk_impl(params, stimulus, y0, config, size, hold_rates=True):
    t0, dt, n_blocks, block, tail, threshold, max_spikes, record, unroll = config
    dtype = jnp.result_type(params.dtype, float)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    if y0 is None:
        if params.batch_shape == ():
            y0 = rest_state(params)
        else:
            y0 = jax.vmap(rest_state)(params.broadcast())
    y0 = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(jnp.asarray(x, dtype), (size,)), y0)
    # Any index in [0, 1] serves `_keep_whole`; this one is 0 but comes from a run-time value.
    # The held rates are an XLA:CPU workaround; other backends skip the extra copies.
    zero = jnp.isnan(jnp.ravel(params.c_m)[0]).astype(jnp.int32) if hold_rates else None
    return _chunk_kernel(
        params, stimulus, y0, zero, t0, dt, n_blocks, block, tail, threshold, max_spikes, record,
        unroll,
    )


# XLA:CPU emits 256-bit vectors by default. The step is arithmetic-bound (exponentials and
# divisions on arrays that stay in cache), so on CPUs with AVX-512 asking LLVM for 512-bit
# vectors ran it ~1.3-1.4x faster on one core here (benchmarks/README.md, "What changed");
# elsewhere LLVM narrows the vectors again. Results are bit-identical (tests/test_fast.py).
_CPU_COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": 512}
_run_chunk_cpu = eqx.filter_jit(_run_chunk_impl, compiler_options=_CPU_COMPILER_OPTIONS)
_run_chunk_other = eqx.filter_jit(functools.partial(_run_chunk_impl, hold_rates=False))


def _run_chunk(params, stimulus, y0, config, size, platform="cpu"):
    """One compiled call for `size` neurons; parameter fields are scalars or `(size,)`."""
    run = _run_chunk_cpu if platform == "cpu" else _run_chunk_other
    return run(params, stimulus, y0, config, size)


# ---------------------------------------------------------------------------- public entry
_DEFAULT_BLOCK = 0.5
_CHUNK_BYTES = 512 * 2**20
_CHUNK_PER_DEVICE = 2**15
_CHUNK_PER_ACCELERATOR = 2**22  # a GPU needs millions of neurons per kernel to fill up
_MIN_PART = 1024  # neurons per thread below which splitting a chunk across cores is not worth it


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _map_in_threads(fn, n: int, workers: int, on_result=None) -> list:
    """`[fn(0), ..., fn(n - 1)]`, on `workers` threads when more than one.

    XLA:CPU runs one compiled loop on one core, so independent parts of a batch run side by
    side on threads. `on_result` sees each result, in order, as it arrives; on an error the
    parts not yet started are cancelled.
    """
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    out = []
    try:
        for result in pool.map(fn, range(n)) if pool else map(fn, range(n)):
            out.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


def _per_neuron_stimulus(stimulus, size: int, dtype) -> bool:
    """Whether `stimulus(t)` returns one value per neuron (True) or one shared value."""
    shape = jax.eval_shape(stimulus, jnp.zeros((), dtype)).shape
    if shape == ():
        return False
    if shape == (size,):
        return True
    raise ValueError(
        f"`stimulus(t)` must return a scalar (shared) or one value per neuron, shape ({size},); "
        f"got shape {shape}. Give per-neuron stimulus fields a leading axis of the batch size."
    )


def _take(tree, lo: int, hi: int, size: int):
    """Rows lo:hi of every leaf with a leading axis of `size`, padded by repeating the last row."""

    def take(x):
        if not (hasattr(x, "shape") and x.ndim >= 1 and x.shape[0] == size):
            return x
        part = x[lo:hi]
        pad = (hi - lo) - part.shape[0]
        if pad:
            part = jnp.concatenate([part, jnp.repeat(part[-1:], pad, axis=0)], axis=0)
        return part

    return jax.tree_util.tree_map(take, tree)


def simulate_batch(
    params: HHParams,
    stimulus: AbstractStimulus | ArrayLike | None = None,
    t1: float = 1000.0,
    *,
    t0: float = 0.0,
    dt: float = 0.025,
    y0: HHState | Sequence[ArrayLike] | None = None,
    threshold: float | None = None,
    max_spikes: int = 64,
    record: Sequence[str] = (),
    record_dt: float | None = None,
    chunk_size: int | None = None,
    unroll: int = 1,
    progress: bool | None = None,
    workers: int | None = None,
) -> BatchFeatures:
    """Simulate many neurons with [`ExponentialEuler`][] and return only their spike features.

    A plain `lax.scan` over time with the exponential-Euler step fused into one loop body:
    no trace is stored, so memory is `O(neurons × max_spikes)` whatever `t1` is. Large batches
    run in chunks of `chunk_size` neurons (with a progress bar); every chunk has the same shape,
    so one compilation serves all of them. On CPU the step is compiled for 512-bit vectors
    (AVX-512 where the CPU has it; results are bit-identical to the default width), and
    parameter fields shared by all neurons stay scalars.

    **Arguments:**

    - `params`: an [`HHParams`][]; fields with a leading batch axis give one neuron each.
    - `stimulus`: a stimulus shared by all neurons (e.g. [`hhjax.Step`][]), one whose fields
      have a leading axis of the batch size (e.g. `Step(amplitudes, 5.0)` with `amplitudes` of
      shape `(batch,)`), a constant current (µA/cm², scalar or `(batch,)` array), or `None`.
      It is sampled at each step's midpoint.
    - `t1`, `t0`: end and start (ms); `t1 - t0` must be a whole number of steps `dt`.
    - `dt`: the fixed step (ms).
    - `y0`: initial [`HHState`][] (broadcast to the batch); default [`hhjax.rest_state`][].
    - `threshold`: spike detection level (mV), upward crossings; default the model's own,
      `params.spike_threshold` (for HH 65 mV above `v_ref`: 0 mV in the modern convention).
    - `max_spikes`: size of the spike-time buffer per neuron (later spikes are counted only).
    - `record`: names among `"v"`, `"m"`, `"h"`, `"n"` to record coarsely, every `record_dt`.
    - `record_dt`: spacing (ms) of the record, a multiple of `dt`; it is also the block length
      inside which at most one spike per neuron is stored (default 0.5 ms).
    - `chunk_size`: neurons per compiled call; default 32768 per CPU device, about 4 million
      per GPU (fewer when a record would exceed ~512 MB / 4 GB).
    - `unroll`: time steps unrolled per scan iteration (a speed knob; results are identical).
    - `progress`: show a tqdm bar over chunks; default when there is more than one chunk.
    - `workers`: on a single CPU device, how many chunks run at once, each on its own thread
      (XLA:CPU runs one compiled scan on one core). Default: the cores available to this
      process, with parts of at least 1,024 neurons; each chunk is then split into `workers`
      equal parts. Ignored on accelerators and with several devices.

    **Returns:**

    A [`BatchFeatures`][]. Runs in the dtype of `params` (`params.astype(jnp.float32)` for
    speed). Several CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`) or
    several GPUs are used by splitting each chunk across them.
    """
    if not isinstance(params, HHParams):
        raise TypeError(f"`params` must be an hhjax.HHParams, got {type(params).__name__}.")
    t0, t1, dt = float(t0), float(t1), float(dt)
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        raise ValueError(f"`t1` ({t1} ms) must be finite and greater than `t0` ({t0} ms).")
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"`dt` must be > 0 ms, got {dt}.")
    n_steps = round((t1 - t0) / dt)
    if n_steps < 1 or abs(n_steps * dt - (t1 - t0)) > 1e-9 * max(1.0, t1 - t0):
        raise ValueError(
            f"`t1 - t0` ({t1 - t0} ms) must be a whole number of steps `dt` ({dt} ms); "
            f"e.g. t1 = {t0 + max(n_steps, 1) * dt}."
        )
    record = tuple(record)
    for name in record:
        if name not in _RECORDABLE:
            raise ValueError(f"`record` entries must be among {_RECORDABLE}, got {name!r}.")
    block_dt = _DEFAULT_BLOCK if record_dt is None else float(record_dt)
    block = max(1, round(block_dt / dt))
    if record_dt is not None and abs(block * dt - block_dt) > 1e-9 * block_dt:
        raise ValueError(f"`record_dt` ({record_dt} ms) must be a multiple of `dt` ({dt} ms).")
    block = min(block, n_steps)
    n_blocks, tail = divmod(n_steps, block)
    max_spikes = check_count("max_spikes", max_spikes)
    if not (isinstance(unroll, int) and unroll >= 1):
        raise ValueError(f"`unroll` must be a positive int, got {unroll!r}.")

    dtype = jnp.result_type(params.dtype, float)
    if stimulus is not None and not isinstance(stimulus, AbstractStimulus):
        amplitude = jnp.asarray(stimulus)
        if amplitude.ndim > 1:
            raise ValueError(
                f"An array `stimulus` must be 1-D (one per neuron), got {amplitude.shape}."
            )
        stimulus = Step(amplitude, start=-jnp.inf)
    stimulus = as_stimulus(stimulus)
    if stimulus is not None:
        stimulus.check_span(t0, t1)

    # The batch: params' batch shape, widened by a per-neuron stimulus or y0.
    shapes = [params.batch_shape]
    if stimulus is not None:
        shapes.append(jax.eval_shape(stimulus, jnp.zeros((), dtype)).shape)
    if y0 is not None:
        y0 = _as_state(y0, params)  # finite, gates in [0, 1]
        shapes.append(jnp.broadcast_shapes(*(jnp.shape(x) for x in y0)))
    batch_shape = jnp.broadcast_shapes(*shapes)
    size = int(np.prod(batch_shape, dtype=np.int64))
    flat = lambda x: jnp.broadcast_to(jnp.asarray(x), batch_shape).reshape(size)
    # Fields shared by all neurons stay scalars: a per-neuron copy would be read every step
    # (about 12 % of the step's time when all of them are copies).
    params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(x) if jnp.ndim(x) == 0 else flat(x), params
    )
    if y0 is not None:
        y0 = jax.tree_util.tree_map(lambda x: flat(x).astype(dtype), y0)
    per_neuron = stimulus is not None and _per_neuron_stimulus(stimulus, size, dtype)
    if per_neuron and len(batch_shape) > 1:
        raise ValueError("Per-neuron stimuli need a 1-D batch; flatten `params` first.")

    devices = jax.local_devices()
    n_dev = len(devices)
    samples = n_blocks + (1 if tail else 0) + 1 if record else 0
    per_neuron_bytes = jnp.finfo(dtype).bits // 8 * (max_spikes + 8 + samples * len(record))
    if chunk_size is None:
        # Small enough that a step's arrays stay in cache, large enough to amortise the
        # per-step dispatch; bounded by memory when recording.
        cap = _CHUNK_PER_DEVICE if devices[0].platform == "cpu" else _CHUNK_PER_ACCELERATOR
        budget = _CHUNK_BYTES if devices[0].platform == "cpu" else 8 * _CHUNK_BYTES
        per_device = min(cap, budget // (n_dev * per_neuron_bytes))
        chunk_size = max(n_dev, min(size, n_dev * max(1, per_device)))
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    chunk_size = min(chunk_size, size)
    if n_dev > 1:
        chunk_size = -(-chunk_size // n_dev) * n_dev
    n_chunks = -(-size // chunk_size)
    threshold = float(_spike_threshold("simulate_batch", params, threshold))
    config = (t0, dt, n_blocks, block, tail, threshold, max_spikes, record, unroll)

    if workers is None:
        workers = _available_cores() if devices[0].platform == "cpu" and n_dev == 1 else 1
        workers = max(1, min(workers, size // _MIN_PART))
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"`workers` must be a positive int, got {workers!r}.")
    if n_dev > 1 or devices[0].platform != "cpu":
        workers = 1
    # Threads share one compiled program: every part has the same size (the last is padded).
    part = -(-chunk_size // workers)
    n_parts = -(-size // part)

    if progress is None:
        progress = n_chunks > 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=size, unit="neuron", desc="simulate_batch")

    def run_part(c):
        lo, hi = c * part, min(size, (c + 1) * part)
        p_c = _take(params, lo, lo + part, size)
        s_c = _take(stimulus, lo, lo + part, size) if per_neuron else stimulus
        y_c = None if y0 is None else _take(y0, lo, lo + part, size)
        if n_dev > 1:
            out = _run_split(p_c, s_c, y_c, per_neuron, config, devices, part)
        else:
            out = _run_chunk(p_c, s_c, y_c, config, part, devices[0].platform)
        out = jax.device_get(out)
        return jax.tree_util.tree_map(lambda x, n=hi - lo: np.asarray(x)[:n], out)

    try:
        # Each finished part advances the bar by its neurons (the length of its spike counts).
        show = None if bar is None else (lambda out: bar.update(out[0].shape[0]))
        outputs = _map_in_threads(run_part, n_parts, workers, on_result=show)
    finally:
        if bar is not None:
            bar.close()

    cat = lambda *xs: np.concatenate(xs, axis=0)
    count, buf, dropped, state, recorded = jax.tree_util.tree_map(cat, *outputs)
    unflat = lambda x: jnp.asarray(x.reshape(tuple(batch_shape) + x.shape[1:]))
    # A failed neuron is never a result: its state (and record) is non-finite from the step
    # it failed at, since NaN and inf propagate through the update.
    ok = np.all([np.isfinite(x) for x in state], axis=0)
    if record:
        ok = ok & np.all([np.all(np.isfinite(r), axis=-1) for r in recorded], axis=0)
    if not np.all(ok):
        first = np.unravel_index(np.argmax(~ok), tuple(batch_shape))
        warnings.warn(
            f"simulate_batch: {np.sum(~ok)} of {ok.size} neuron(s) ended with a non-finite state "
            f"(first: index {tuple(int(i) for i in first)}); their `rate` is NaN and `ok` "
            "False. Causes: a non-finite parameter or stimulus value given under jit, "
            "parameters with no resting state (all conductances 0: pass `y0`), or overflow "
            "at extreme values.",
            RuntimeWarning,
            stacklevel=2,
        )
    rate = np.where(ok, count.astype(dtype) * (1000.0 / (t1 - t0)), np.nan).astype(dtype)
    count, buf, dropped, rate, ok = map(unflat, (count, buf, dropped, rate, ok))
    state = jax.tree_util.tree_map(unflat, state)
    if record:
        record_ts = t0 + dt * np.concatenate(
            [block * np.arange(n_blocks + 1), [n_steps] if tail else []]
        )
        record_ts = jnp.asarray(record_ts, dtype)
        recorded = {name: unflat(r) for name, r in zip(record, recorded)}
    else:
        record_ts, recorded = None, None
    return BatchFeatures(count, buf, rate, state, dropped, record_ts, recorded, ok)


def _run_split(params, stimulus, y0, per_neuron, config, devices, size):
    """Split a chunk of `size` neurons across `devices`; they run concurrently (async dispatch)."""
    parts = len(devices)
    step = size // parts
    outs = []
    for k, device in enumerate(devices):
        put = lambda tree, k=k, d=device: jax.device_put(
            _take(tree, k * step, (k + 1) * step, size), d
        )
        s = put(stimulus) if per_neuron else jax.device_put(stimulus, device)
        y_k = None if y0 is None else put(y0)
        outs.append(_run_chunk(put(params), s, y_k, config, step, device.platform))
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(jax.device_get(xs), axis=0), *outs)


# ---------------------------------------------------------------------------- adaptive spikes
class AdaptiveSpikes(eqx.Module):
    """Spike times from [`spike_times_adaptive`][].

    **Fields:**

    - `times`: upward threshold-crossing times (ms), NaN-padded to `max_spikes`.
    - `count`: number of crossings in $(t_0, t_1]$ (may exceed `max_spikes`; later ones are not
      stored).
    - `num_steps`: solver steps (accepted and rejected), as `Trajectory.num_steps`.
    - `final_state`: the [`HHState`][] at `t1`.
    - `ok`: whether the solve succeeded.
    """

    times: Array
    count: Array
    num_steps: Array
    final_state: HHState
    ok: Array


def _field_of_first_two(t, y, args):
    """The model's right-hand side from `args[:2] = (params, stimulus)`. For `HHParams` the rates
    come from [`fast_rates`][] (two exponentials instead of six; equal to round-off): the
    1 s adaptive benchmark solve took 24.7 instead of 26.6 ms with identical steps."""
    params, stimulus = args[:2]
    if type(params) is HHParams:
        return _derivative(t, y, params, stimulus, fast_rates(params, y.v))
    return _model_field(t, y, (params, stimulus))


def _signed_voltage(t, y, args, **kwargs):
    """The event function: `sign · (v - threshold)`, with `args = (params, stimulus, sign,
    threshold)`; its upward zero is the upstroke for sign +1, the downstroke for sign -1."""
    # In the default float dtype: Diffrax pairs it with a Python-float 0.0 inside a `cond`,
    # which is float64 whenever x64 is on, even for a float32 model.
    return (args[2] * (y.v - args[3])).astype(jnp.result_type(float))


@eqx.filter_jit
def _adaptive_spikes(params, stimulus, y0, jumps, config):
    t0, t1, solver, rtol, atol, threshold, max_spikes, max_steps = config
    dtype = jnp.result_type(params.dtype, float)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    if y0 is None:
        y0 = rest_state(params)
    y0 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), y0)
    controller = _adaptive_controller(rtol, atol, jumps, dtype)
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
            diffrax.ODETerm(_field_of_first_two),
            solver,
            t0=t,
            t1=t1_,
            dt0=None,
            y0=y,
            args=(params, stimulus, sign, jnp.asarray(threshold, dtype)),
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
    params: HHParams,
    stimulus: AbstractStimulus | ArrayLike | None = None,
    t1: float = 1000.0,
    *,
    t0: float = 0.0,
    y0: HHState | Sequence[ArrayLike] | None = None,
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

    - `params`: an unbatched [`HHParams`][] (use `jax.vmap` over a wrapper for batches).
    - `stimulus`: a stimulus, a constant (µA/cm²), or `None`.
    - `t1`, `t0`: end and start (ms).
    - `y0`: initial [`HHState`][]; default [`hhjax.rest_state`][].
    - `threshold`: detection level (mV), upward crossings; default `params.spike_threshold`.
    - `solver`: an adaptive Diffrax solver; default `diffrax.Tsit5()`.
    - `rtol`, `atol`: tolerances of the PID controller.
    - `max_spikes`: size of the returned buffer.
    - `max_steps`: step budget (default `max(10_000, 50·(t1 - t0))`); check `ok`.

    **Returns:**

    An [`AdaptiveSpikes`][].
    """
    if not isinstance(params, HHParams):
        raise TypeError(f"`params` must be an hhjax.HHParams, got {type(params).__name__}.")
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
    if stimulus is not None and not isinstance(stimulus, AbstractStimulus):
        stimulus = Step(jnp.asarray(stimulus), start=-jnp.inf)
    stimulus = as_stimulus(stimulus)
    dtype = jnp.result_type(params.dtype, float)
    if stimulus is not None:
        stimulus.check_span(t0, t1)
        stimulus = _cast_floats(stimulus, dtype)
    jumps = _jump_times(stimulus, t0, t1)
    if y0 is not None:
        y0 = _as_state(y0, params)  # finite, gates in [0, 1]
    threshold = _spike_threshold("spike_times_adaptive", params, threshold)  # may be traced
    config = (t0, t1, solver, float(rtol), float(atol), threshold, max_spikes, max_steps)
    return _adaptive_spikes(params, stimulus, y0, jumps, config)


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
