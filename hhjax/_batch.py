"""`simulate_batch`: many neurons of any model, exponential Euler, features only.

Units: mV, ms, µA/cm², Hz.

A plain `lax.scan` over time whose body is the model's fused exponential-Euler step
([`hhjax.AbstractModel.exp_euler_step`][]; HH's fused override, `hhjax.models._hh`) and the
in-step spike detector ([`hhjax._spikes._crossing_fraction`][]): no trace is stored, so memory
does not grow with the simulated time, and any number of neurons runs in chunks, on threads
(one XLA:CPU loop runs on one core) or devices. The stimulus is sampled at each step's
midpoint, as in [`hhjax.ExponentialEuler`][].
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from . import _fused, _scale
from ._checks import check_count
from ._model import AbstractModel, _spike_threshold
from ._scale import _available_cores, _map_in_threads
from ._simulate import _as_state, _model
from ._spikes import _crossing_fraction
from ._stimulus import AbstractStimulus, as_stimulus

__all__ = ["BatchFeatures", "KernelConfig", "batch_features", "simulate_batch"]


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
    - `final_state`: the model's state at `t1` (continue a run with it as `y0`).
    - `dropped`: spikes counted but not stored because two crossings fell inside one block
      (`block` ms; only for spike trains above ~1/block kHz); normally all zero.
    - `record_ts`: times (ms) of the coarse record, shape `(samples,)`, or `None`.
    - `record`: dict of recorded variables (`"v"` and gate names), each of shape
      `(*batch, samples)`, or `None`.
    - `ok`: per neuron, `True` where the state stayed finite to `t1` (bool). A neuron that is
      not `ok` has `rate` NaN and its counts and times are not to be used; `simulate_batch`
      warns when there is one. Always set by `simulate_batch` (`None` only by hand).
    """

    spike_count: Int[Array, "*batch"]
    spike_times: Float[Array, "*batch max_spikes"]
    rate: Float[Array, "*batch"]
    final_state: Any
    dropped: Int[Array, "*batch"]
    record_ts: Float[Array, " samples"] | None
    record: dict | None
    ok: Bool[Array, "*batch"] | None = None


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


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """The static configuration of one compiled batch kernel (hashable: a `jit` static).

    - `t0`, `dt`: start and step (ms).
    - `n_blocks`, `block`, `tail`: the run is `n_blocks` blocks of `block` steps plus `tail`
      steps; within a block at most one crossing per neuron is stored.
    - `threshold` (mV), `max_spikes`: the spike detector and its buffer.
    - `record`: names of state variables recorded once per block.
    - `unroll`: time steps unrolled per scan iteration.
    """

    t0: float
    dt: float
    n_blocks: int
    block: int
    tail: int = 0
    threshold: float = 0.0
    max_spikes: int = 64
    record: tuple[str, ...] = ()
    unroll: int = 1


# Blocks whose crossings are stored together. XLA:CPU splits the scatter across threads (its
# cost model sees the whole spike buffer); once per 32 blocks that hand-off costs nothing.
_STORE_GROUP = 32


def _chunk_kernel(params, stimulus, y0, zero, config: KernelConfig, threshold=None):
    """Simulate one chunk of neurons; `zero` is a run-time int32 0 or 1 (or `None`: no held
    rates, for accelerators); `threshold` (an array, possibly traced) replaces
    `config.threshold`."""
    t0, dt, n_blocks, block, tail = config.t0, config.dt, config.n_blocks, config.block, config.tail
    max_spikes, record, unroll = config.max_spikes, config.record, config.unroll
    dtype = y0.v.dtype
    size = y0.v.shape[0]
    dt_ = jnp.asarray(dt, dtype)
    thr = jnp.asarray(config.threshold if threshold is None else threshold, dtype)
    t0_ = jnp.asarray(t0, dtype)
    # Per-neuron constants (HH: the Q10 pow, 1/C_m) leave the loop.
    constants = params._step_constants(dt_)

    def current(t):
        if stimulus is None:
            return jnp.zeros((), dtype)
        return jnp.asarray(stimulus(t), dtype)

    def run_block(state, start_step, length):
        # Within a block at most one crossing per neuron is stored (spikes are ms apart). Its
        # time is formed in the step itself (one division, see `_crossing_fraction`), so the
        # loop carries one extra array for it instead of the step's data.
        held = () if zero is None else (jnp.zeros((size + 1,), dtype),) * params._n_held
        init = (state, jnp.zeros((size,), jnp.int32), jnp.full((size,), jnp.nan, dtype), held)

        def step(carry, j):
            state, crossed, t_c, held = carry
            t_k = t0_ + (start_step + j).astype(dtype) * dt_
            i_stim = current(t_k + 0.5 * dt_)
            v0 = state.v

            def hold(*xs):
                nonlocal held
                held = tuple(_keep_whole(b, x, zero) for b, x in zip(held, xs, strict=True))
                return tuple(_read_whole(b, size, zero) for b in held)

            new, v_inf = params._exp_euler_step(
                state, i_stim, constants, None if zero is None else hold
            )
            v1 = new.v
            up = (v0 < thr) & (v1 >= thr)
            # "First in this block" from t_c itself: the count is then read only by its own
            # update and XLA updates it in place (no copy each step).
            first = up & jnp.isnan(t_c)
            t_c = jnp.where(first, t_k + _crossing_fraction(v0, v1, v_inf, thr) * dt_, t_c)
            crossed = crossed + up.astype(jnp.int32)
            return (new, crossed, t_c, held), None

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


def _run_chunk_impl(params, stimulus, y0, config: KernelConfig, size: int, hold_rates=True,
                    threshold=None):
    dtype = jnp.result_type(params.dtype, float)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    if y0 is None:
        y0 = params.rest_state()
    y0 = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(jnp.asarray(x, dtype), (size,)), y0)
    # Any index in [0, 1] serves `_keep_whole`; this one is 0 but comes from a run-time value.
    # The held rates are an XLA:CPU workaround; other backends skip the extra copies.
    zero = jnp.isnan(jnp.ravel(params.c_m)[0]).astype(jnp.int32) if hold_rates else None
    return _chunk_kernel(params, stimulus, y0, zero, config, threshold)


# XLA:CPU emits 256-bit vectors by default. The step is arithmetic-bound (exponentials and
# divisions on arrays that stay in cache), so on CPUs with AVX-512 asking LLVM for 512-bit
# vectors ran it ~1.3-1.4x faster on one core here (benchmarks/README.md, "What changed");
# elsewhere LLVM narrows the vectors again. Results are bit-identical (tests/test_fast.py).
_CPU_COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": 512}
_run_chunk_cpu = eqx.filter_jit(_run_chunk_impl, compiler_options=_CPU_COMPILER_OPTIONS)
_run_chunk_other = eqx.filter_jit(functools.partial(_run_chunk_impl, hold_rates=False))


def _run_chunk(params, stimulus, y0, config: KernelConfig, size: int, platform="cpu",
               fused=False):
    """One compiled call for `size` neurons; parameter fields are scalars or `(size,)`.
    `fused`: the fused Pallas kernel (`hhjax._fused`; interpreted off GPUs)."""
    if fused:
        return _fused.fused_chunk_jit(params, stimulus, y0, config, size, not _is_gpu(platform))
    run = _run_chunk_cpu if platform == "cpu" else _run_chunk_other
    return run(params, stimulus, y0, config, size)


def _is_gpu(platform: str) -> bool:
    return platform in ("gpu", "cuda", "rocm")


_KERNELS = ("auto", "xla", "fused")


def _choose_kernel(owner: str, kernel: str, platform: str, stimulus, size: int, dtype) -> bool:
    """Whether `owner` runs the fused kernel: `"auto"` on GPUs where it can, `"fused"` always
    (or an error saying why not), `"xla"` never."""
    if kernel not in _KERNELS:
        raise ValueError(f"{owner}: `kernel` must be one of {_KERNELS}, got {kernel!r}.")
    if kernel == "xla" or (kernel == "auto" and not _is_gpu(platform)):
        return False
    reason = _fused.unsupported(stimulus, size, dtype)
    if reason is None:
        return True
    if kernel == "fused":
        raise ValueError(
            f"{owner}: kernel='fused' cannot take {reason}; use kernel='xla' (or 'auto')."
        )
    return False


# ---------------------------------------------------------------------------- public entry
_DEFAULT_BLOCK = 0.5
_CHUNK_BYTES = 512 * 2**20
# Neurons per core's part on a CPU. A part's per-step arrays (state, held rates, crossing
# times: ~10 arrays) then fit the core's L2 (1 MB here); at 2**15 they spill to the shared
# L3. Measured here (HH float32, 8 × 62,500 neurons × 200 ms, one thread per process): one
# process 22.8 s at 2**15 vs 17.6 s at 2**14 (8192: 17.2-18.4 s); two processes at once
# 28.3 s each at 2**15 (80 % parallel efficiency) vs 18.3 s at 2**14 (96 %).
# Two threads in one process: 2**14 per part runs as fast as before (2.48 vs 2.42 s median,
# 131,072 neurons × 200 ms), 2**12 slower (2.65 s).
_PART_PER_CORE = 2**14
_CHUNK_PER_ACCELERATOR = 2**22  # a GPU needs millions of neurons per kernel to fill up
_MIN_PART = 1024  # neurons per thread below which splitting a chunk across cores is not worth it


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
    params: AbstractModel,
    stimulus: AbstractStimulus | ArrayLike | None = None,
    t1: float = 1000.0,
    *,
    t0: float = 0.0,
    dt: float = 0.025,
    y0: Any | Sequence[ArrayLike] | None = None,
    threshold: float | None = None,
    max_spikes: int = 64,
    record: Sequence[str] = (),
    record_dt: float | None = None,
    chunk_size: int | None = None,
    unroll: int = 1,
    progress: bool | None = None,
    workers: int | None = None,
    distribute: bool | None = None,
    kernel: str = "auto",
) -> BatchFeatures:
    """Simulate many neurons with [`ExponentialEuler`][] and return only their spike features.

    A plain `lax.scan` over time with the exponential-Euler step fused into one loop body:
    no trace is stored, so memory is `O(neurons × max_spikes)` whatever `t1` is. Large batches
    run in chunks of `chunk_size` neurons (with a progress bar); every chunk has the same shape,
    so one compilation serves all of them. On CPU the step is compiled for 512-bit vectors
    (AVX-512 where the CPU has it; results are bit-identical to the default width), and
    parameter fields shared by all neurons stay scalars.

    **Arguments:**

    - `params`: any model ([`hhjax.HHParams`][], a cortical or composed model); fields with a
      leading batch axis give one neuron each.
    - `stimulus`: a stimulus shared by all neurons (e.g. [`hhjax.Step`][]), one whose fields
      have a leading axis of the batch size (e.g. `Step(amplitudes, 5.0)` with `amplitudes` of
      shape `(batch,)`), a constant current (µA/cm², scalar or `(batch,)` array), or `None`.
      It is sampled at each step's midpoint.
    - `t1`, `t0`: end and start (ms); `t1 - t0` must be a whole number of steps `dt`.
    - `dt`: the fixed step (ms).
    - `y0`: initial state (broadcast to the batch); default [`hhjax.rest_state`][].
    - `threshold`: spike detection level (mV), upward crossings; default the model's own,
      `params.spike_threshold` (for HH 65 mV above `v_ref`: 0 mV in the modern convention).
    - `max_spikes`: size of the spike-time buffer per neuron (later spikes are counted only).
    - `record`: names among `"v"`, `"m"`, `"h"`, `"n"` to record coarsely, every `record_dt`.
    - `record_dt`: spacing (ms) of the record, a multiple of `dt`; it is also the block length
      inside which at most one spike per neuron is stored (default 0.5 ms).
    - `chunk_size`: neurons per compiled call; default 16384 per CPU core in use (worker
      thread or device), about 4 million per GPU (fewer when a record would exceed ~512 MB /
      4 GB).
    - `unroll`: time steps unrolled per scan iteration (a speed knob; results are identical).
    - `progress`: show a tqdm bar over chunks; default when there is more than one chunk.
    - `workers`: on a single CPU device, how many chunks run at once, each on its own thread
      (XLA:CPU runs one compiled scan on one core). Default: the cores available to this
      process, with parts of at least 1,024 neurons; each chunk is then split into `workers`
      equal parts. Ignored on accelerators and with several devices.
    - `distribute`: split the batch across the processes of `jax.distributed` (each process
      simulates its contiguous share on its own devices, with no communication until one
      gather at the end; every process must make the same call). Default: when
      `jax.process_count() > 1`. `False` keeps the call local to this process.
    - `kernel`: `"xla"`, a `lax.scan` over time (every platform); `"fused"`, one Pallas
      program per block of neurons holding their state in registers for the whole run
      (`hhjax._fused`: Triton on GPUs, Pallas' slow interpreter elsewhere; per-neuron
      stimuli of `Step` and `Pulses` terms, shared stimuli of any kind; every crossing is
      stored, so `dropped` stays 0); `"auto"` (default), the fused kernel on
      GPUs where it can run the batch, else the XLA one. Both give the same counts and,
      in one dtype, the same spike times to rounding (`tests/test_fused.py`).

    **Returns:**

    A [`BatchFeatures`][] for the whole batch (on every process). Runs in the dtype of `params`
    (`params.astype(jnp.float32)` for speed). Several local devices (GPUs, or CPU devices from
    `XLA_FLAGS=--xla_force_host_platform_device_count=2`) share each chunk through one
    `shard_map`ped program, each device solving its own neurons; results are bit-identical
    to one device.
    """
    params = _model("simulate_batch", params)
    params, stimulus, y0 = _scale.unshard((params, stimulus, y0))
    t0, t1, dt, n_steps = _time_grid(t0, t1, dt)
    record = tuple(record)
    for name in record:
        if name not in ("v",) + params.gate_names:
            raise ValueError(
                f"`record` entries must be among {('v',) + params.gate_names}, got {name!r}."
            )
    block, n_blocks, tail = _blocks(dt, n_steps, record_dt)
    max_spikes = check_count("max_spikes", max_spikes)
    if not (isinstance(unroll, int) and unroll >= 1):
        raise ValueError(f"`unroll` must be a positive int, got {unroll!r}.")

    dtype = jnp.result_type(params.dtype, float)
    params, stimulus, y0, batch_shape, per_neuron = _flat_batch(params, stimulus, y0, t0, t1)
    size = int(np.prod(batch_shape, dtype=np.int64))
    threshold = float(_spike_threshold("simulate_batch", params, threshold))
    devices = jax.local_devices()
    n_dev = len(devices)
    platform = devices[0].platform
    fused = _choose_kernel("simulate_batch", kernel, platform, stimulus, size, dtype)
    global_size = size
    split = _scale.split_processes(distribute)
    if split:
        # This process's share of the global batch; every process compiles the same shapes.
        rows = _scale.process_rows(size)
        params, y0 = (None if t is None else _rows(t, rows, size) for t in (params, y0))
        if per_neuron:
            stimulus = _rows(stimulus, rows, size)
        size = len(rows)

    samples = n_blocks + (1 if tail else 0) + 1 if record else 0
    per_neuron_bytes = jnp.finfo(dtype).bits // 8 * (max_spikes + 8 + samples * len(record))
    if workers is None:
        workers = _available_cores() if platform == "cpu" and n_dev == 1 else 1
        workers = max(1, min(workers, size // _MIN_PART))
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"`workers` must be a positive int, got {workers!r}.")
    if n_dev > 1 or platform != "cpu":
        workers = 1
    if chunk_size is None:
        # On a CPU, each core's part small enough that a step's arrays stay in its own L2
        # cache, large enough to amortise the per-step dispatch; bounded by memory when
        # recording. An accelerator takes millions at once.
        cpu = platform == "cpu"
        cap = _PART_PER_CORE * workers if cpu else _CHUNK_PER_ACCELERATOR
        budget = _CHUNK_BYTES if cpu else 8 * _CHUNK_BYTES
        per_device = min(cap, budget // (n_dev * per_neuron_bytes))
        chunk_size = max(n_dev, min(size, n_dev * max(1, per_device)))
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
    chunk_size = min(chunk_size, size)
    if n_dev > 1:
        chunk_size = -(-chunk_size // n_dev) * n_dev
    n_chunks = -(-size // chunk_size)
    config = KernelConfig(t0, dt, n_blocks, block, tail, threshold, max_spikes, record, unroll)

    # Threads share one compiled program: every part has the same size (the last is padded).
    part = -(-chunk_size // workers)
    n_parts = -(-size // part)

    if progress is None:
        progress = n_chunks > 1
    bar = None
    if progress:  # each process shows its own share
        from tqdm.auto import tqdm

        bar = tqdm(total=size, unit="neuron", desc="simulate_batch")

    def run_on_devices(p_c, s_c, y_c, fused):
        if n_dev > 1:
            return _scale.on_devices(
                _local_kernel(config, part // n_dev, platform, fused),
                ("simulate_batch", config, platform, fused),
                (p_c, s_c, y_c), (True, per_neuron, True), part, devices,
                _CPU_COMPILER_OPTIONS if platform == "cpu" and not fused else None,
            )
        return _run_chunk(p_c, s_c, y_c, config, part, platform, fused)

    def run_part(c):
        lo, hi = c * part, min(size, (c + 1) * part)
        p_c = _take(params, lo, lo + part, size)
        s_c = _take(stimulus, lo, lo + part, size) if per_neuron else stimulus
        y_c = None if y0 is None else _take(y0, lo, lo + part, size)
        nonlocal fused
        try:
            out = run_on_devices(p_c, s_c, y_c, fused)
        except Exception as error:  # a model the fused kernel cannot lower: fall back
            if not (fused and kernel == "auto"):
                raise
            warnings.warn(
                f"simulate_batch: the fused kernel failed for this model ({type(error).__name__}:"
                f" {str(error)[:300]}); running the XLA kernel (pass kernel='xla' to skip "
                "the attempt).",
                RuntimeWarning,
                stacklevel=3,
            )
            fused = False
            out = run_on_devices(p_c, s_c, y_c, fused)
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
    outputs = jax.tree_util.tree_map(cat, *outputs)
    if split:
        outputs = _scale.gather_rows(outputs, global_size)
        size = global_size
    count, buf, dropped, state, recorded = outputs
    unflat = lambda x: jnp.asarray(x.reshape(tuple(batch_shape) + x.shape[1:]))
    # A failed neuron is never a result: its state (and record) is non-finite from the step
    # it failed at, since NaN and inf propagate through the update.
    ok = np.all([np.isfinite(x) for x in jax.tree_util.tree_leaves(state)], axis=0)
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


def _time_grid(t0, t1, dt) -> tuple[float, float, float, int]:
    """`(t0, t1, dt, steps)` as numbers, checked: a span of a whole number of steps."""
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
    return t0, t1, dt, n_steps


def _blocks(dt: float, n_steps: int, record_dt: float | None = None) -> tuple[int, int, int]:
    """`(block, n_blocks, tail)`: the run as blocks of `record_dt` (default 0.5 ms) in steps,
    at most the whole run, and a last partial block of `tail` steps."""
    block_dt = _DEFAULT_BLOCK if record_dt is None else float(record_dt)
    block = max(1, round(block_dt / dt))
    if record_dt is not None and abs(block * dt - block_dt) > 1e-9 * block_dt:
        raise ValueError(f"`record_dt` ({record_dt} ms) must be a multiple of `dt` ({dt} ms).")
    block = min(block, n_steps)
    return (block, *divmod(n_steps, block))


def _flat_batch(params, stimulus, y0, t0: float, t1: float):
    """The batch flattened to one axis: `(params, stimulus, y0, batch_shape, per_neuron)`.

    The batch shape is params' batch shape widened by a per-neuron stimulus or `y0`; fields
    shared by all neurons stay scalars (a per-neuron copy would be read every step: about
    12 % of the step's time when all of them are copies); `y0` is checked (finite, gates in
    [0, 1]) and flattened; `per_neuron` says whether the stimulus gives one value per neuron.
    """
    dtype = jnp.result_type(params.dtype, float)
    stimulus = as_stimulus(stimulus, per_neuron=True)
    if stimulus is not None:
        stimulus.check_span(t0, t1)
    shapes = [params.batch_shape]
    if stimulus is not None:
        shapes.append(jax.eval_shape(stimulus, jnp.zeros((), dtype)).shape)
    if y0 is not None:
        y0 = _as_state(y0, params)
        shapes.append(jnp.broadcast_shapes(*(jnp.shape(x) for x in jax.tree_util.tree_leaves(y0))))
    batch_shape = tuple(jnp.broadcast_shapes(*shapes))
    size = int(np.prod(batch_shape, dtype=np.int64))
    flat = lambda x: jnp.broadcast_to(jnp.asarray(x), batch_shape).reshape(size)  # noqa: E731
    params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(x) if jnp.ndim(x) == 0 else flat(x), params
    )
    if y0 is not None:
        y0 = jax.tree_util.tree_map(lambda x: flat(x).astype(dtype), y0)
    per_neuron = stimulus is not None and _per_neuron_stimulus(stimulus, size, dtype)
    if per_neuron and len(batch_shape) > 1:
        raise ValueError("Per-neuron stimuli need a 1-D batch; flatten `params` first.")
    return params, stimulus, y0, batch_shape, per_neuron


def batch_features(
    params: AbstractModel,
    stimulus: AbstractStimulus | ArrayLike | None = None,
    t1: float = 1000.0,
    *,
    t0: float = 0.0,
    dt: float = 0.025,
    y0: Any | Sequence[ArrayLike] | None = None,
    threshold: ArrayLike | None = None,
    max_spikes: int = 64,
    kernel: str = "auto",
) -> BatchFeatures:
    """[`simulate_batch`][]'s kernel as one traceable call: spike features of a batch under
    `jax.jit`, `jax.jvp`/`jax.jacfwd`/[`hhjax.value_and_grad_forward`][] and `jax.grad`.

    One compiled program for the whole batch on the default device (no chunks, threads,
    devices, processes or progress bar; use `simulate_batch` for millions of neurons). Spike
    times are differentiable with respect to the parameters, the stimulus' values and `y0`
    (a crossing time moves smoothly with them; the counts are integers).

    **Arguments:** as [`simulate_batch`][]; `t0`, `t1`, `dt`, `max_spikes` and `kernel` are
    plain Python values, `threshold` may be traced (default the model's own, which follows
    a traced `v_ref`). The spike-time buffer is filled as in `simulate_batch` (blocks of
    0.5 ms for the XLA kernel).

    - `kernel`: `"xla"`, `"fused"` or `"auto"` (fused on GPUs where it can run the batch).
      **Reverse mode (`jax.grad`) needs `kernel="xla"`**: Pallas cannot transpose the fused
      kernel's loop, and `jax.grad` through it raises a `TypeError` saying so. Forward
      mode goes through both; with few parameters it is also the cheaper mode (see
      `value_and_grad_forward`).

    **Returns:**

    A [`BatchFeatures`][] with `record_ts` and `record` `None`; `rate` is NaN and `ok` False
    for a neuron whose state did not stay finite (no warning: the values may be traced).
    """
    params = _model("batch_features", params)
    t0, t1, dt, n_steps = _time_grid(t0, t1, dt)
    max_spikes = check_count("max_spikes", max_spikes)
    dtype = jnp.result_type(params.dtype, float)
    params, stimulus, y0, batch_shape, _ = _flat_batch(params, stimulus, y0, t0, t1)
    size = int(np.prod(batch_shape, dtype=np.int64))
    threshold = _spike_threshold("batch_features", params, threshold)
    platform = jax.devices()[0].platform
    fused = _choose_kernel("batch_features", kernel, platform, stimulus, size, dtype)
    block, n_blocks, tail = _blocks(dt, n_steps)
    config = KernelConfig(t0, dt, n_blocks, block, tail, 0.0, max_spikes)
    if fused:
        out = _fused.fused_chunk(params, stimulus, y0, config, size, not _is_gpu(platform),
                                 threshold=threshold)
    else:
        out = _run_chunk_impl(params, stimulus, y0, config, size, hold_rates=False,
                              threshold=threshold)
    count, times, dropped, state, _ = out
    leaves = jax.tree_util.tree_leaves(state)
    ok = jnp.all(jnp.stack([jnp.isfinite(x) for x in leaves]), axis=0)
    rate = jnp.where(ok, count.astype(dtype) * (1000.0 / (t1 - t0)), jnp.nan)
    unflat = lambda x: x.reshape(batch_shape + x.shape[1:])  # noqa: E731
    count, times, dropped, rate, ok = map(unflat, (count, times, dropped, rate, ok))
    state = jax.tree_util.tree_map(unflat, state)
    return BatchFeatures(count, times, rate, state, dropped, None, None, ok)


def _local_kernel(config: KernelConfig, size: int, platform: str, fused=False):
    """The per-device body of a `shard_map`ped chunk: `size` neurons on one device."""
    if fused:
        interpret = not _is_gpu(platform)
        return lambda p, s, y: _fused.fused_chunk(p, s, y, config, size, interpret)
    hold = platform == "cpu"
    return lambda p, s, y: _run_chunk_impl(p, s, y, config, size, hold_rates=hold)


def _rows(tree, rows: np.ndarray, size: int):
    """`x[rows]` for every leaf with a leading axis of `size` (others unchanged)."""
    idx = jnp.asarray(rows)

    def take(x):
        if hasattr(x, "shape") and x.ndim >= 1 and x.shape[0] == size:
            return jnp.asarray(x)[idx]
        return x

    return jax.tree_util.tree_map(take, tree)
