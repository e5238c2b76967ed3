"""The fused kernel of [`hhjax.simulate_batch`][]: each neuron's state stays in registers for the
whole run.

Units: mV, ms, µA/cm².

On a GPU, XLA runs the batch kernel's `lax.scan` as a few kernel launches per time step, each
reading and writing the whole state through device memory. Here one Pallas program per block
of `_BLOCK` neurons loads the block's parameters and state once, runs every time step in its
own loop (`lax.fori_loop` inside the kernel) and writes the final state and the spike counts
once, at the end; a spike time is written to memory only when a crossing happens (a masked
store, rarer than once per neuron per 100 steps), into its block of the output, filled with
NaN when the program starts. (An input buffer aliased to the output would spare that fill,
but Pallas has no forward-mode derivative for aliased kernels.) On GPUs Pallas lowers it
through Triton; on a CPU it runs in Pallas' interpret mode (slow: for checking it against the
XLA kernel, as `tests/test_fused.py` does).

**Why Pallas and not an XLA FFI custom call.** The loop body is the model's own
exponential-Euler step ([`hhjax.AbstractModel.exp_euler_step`][], through
`_exp_euler_step`) and spike detector (`hhjax._spikes._crossing_fraction`), traced from the
same JAX code every other path runs, so every model of the contract (HH, the cortical family,
user-composed models) gets its kernel without a second implementation of its equations; an FFI
kernel would need each model written again in CUDA. Pallas' Mosaic-GPU lowering failed on a
prototype of this kernel (jax 0.10.2); the Triton lowering is built here in float32 and
float64 for every tested model (`tests/test_fused.py`; compiling it to PTX needs a GPU).

**What the kernel takes.** Any model whose step lowers through Triton (elementwise arithmetic,
`exp`, `where`, `pow`; `jax.lax.optimization_barrier`, which has no Triton lowering and no
purpose there, is dropped: see [`hhjax._kinetics.keep`][]). Stimuli shared by all neurons, of
any kind, are tabulated at the step midpoints outside the kernel (`steps` values, e.g. 160 kB
for 1 s in float32) and read as one broadcast scalar per step; per-neuron [`hhjax.Step`][] and
[`hhjax.Pulses`][] terms (a pulse train is a sum of steps) are evaluated in the kernel from
their per-neuron fields. Per-neuron sampled or noise currents are left to the XLA kernel
([`unsupported`][] says why). A coarse `record` is written from the kernel, a column after
each record block.

**Differences from the XLA kernel.** Every crossing is stored (up to `max_spikes`), so
`dropped` is always 0; the XLA kernel stores one crossing per record block and counts the
rest as dropped (only for trains above ~2 kHz). A current of three or more terms, shared and
per-neuron, is summed in another order (shared first), which can change its last bit.

**Derivatives.** Forward mode (`jax.jvp`, `jax.jacfwd`, [`hhjax.value_and_grad_forward`][])
goes through the kernel: Pallas differentiates the kernel body and runs primal and tangents in
one fused loop. Reverse mode (`jax.grad`) does not (Pallas cannot transpose a kernel with a
loop): [`hhjax.batch_features`][] with `kernel="xla"` runs the XLA kernel, which has both.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _kinetics
from ._spikes import _crossing_fraction
from ._stimulus import Pulses, Step, SumStimulus

__all__ = ["fused_chunk", "unsupported"]

# Neurons per program and warps per program: one neuron per thread (4 warps of 32 threads).
# Chosen without a GPU to measure on: the first lent GPU's benchmark (benchmarks/gpu.py,
# HHJAX_FUSED_BLOCK / HHJAX_FUSED_WARPS) decides.
_BLOCK = 128
_NUM_WARPS = 4

# The treedef of a Step, to rebuild a per-neuron Step from its three leaves without running
# its (eager) checks on traced values.
_STEP_TREE = jax.tree_util.tree_structure(Step(0.0, 0.0, 1.0))


def _terms(stimulus):
    if stimulus is None:
        return ()
    return stimulus.terms if isinstance(stimulus, SumStimulus) else (stimulus,)


def _is_per_neuron(term, size: int, dtype) -> bool:
    return jax.eval_shape(term, jnp.zeros((), dtype)).shape == (size,)


def _split(stimulus, size: int, dtype):
    """`(shared terms, per-neuron steps, reason)`: a per-neuron term the kernel cannot evaluate
    gives a reason (and empty parts)."""
    shared, steps = [], []
    for term in _terms(stimulus):
        if not _is_per_neuron(term, size, dtype):
            shared.append(term)
        elif isinstance(term, Step):
            steps.append((term.amplitude, term.start, term.stop))
        elif isinstance(term, Pulses):
            # One step per pulse: with one pulse on at a time the sum is exact.
            amps, starts, widths = (jnp.broadcast_to(x, (size, term.starts.shape[-1]))
                                    for x in (term.amplitudes, term.starts, term.widths))
            steps += [(amps[:, j], starts[:, j], starts[:, j] + widths[:, j])
                      for j in range(starts.shape[-1])]
        else:
            return (), (), (
                f"a per-neuron {type(term).__name__} stimulus (the fused kernel evaluates "
                "per-neuron Step and Pulses terms; shared stimuli of every kind)"
            )
    return tuple(shared), tuple(steps), None


def unsupported(stimulus, size: int, dtype) -> str | None:
    """Why the fused kernel cannot run this batch, or `None` when it can."""
    return _split(stimulus, size, dtype)[2]


def _pad(x, size: int, n_pad: int):
    """`x` broadcast to `(size,)` and padded to `(n_pad,)` by repeating the last neuron."""
    x = jnp.broadcast_to(jnp.asarray(x), (size,))
    return jnp.pad(x, (0, n_pad - size), mode="edge") if n_pad > size else x


def fused_chunk(params, stimulus, y0, config, size: int, interpret: bool, threshold=None):
    """The fused kernel for `size` neurons; the same outputs as `hhjax._batch._chunk_kernel`:
    `(count, spike_times, dropped, final_state, ())`.

    `params` fields are scalars or `(size,)`; `config` is a `hhjax._batch.KernelConfig`
    (its `record` variables are sampled where the XLA kernel samples them); `threshold` (mV,
    an array, possibly traced) replaces `config.threshold`. Traceable (call it under `jit`);
    `interpret=True` runs Pallas' interpreter (any backend), `False` lowers through Triton
    (GPUs).
    """
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plt

    dtype = jnp.result_type(params.dtype, float)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    if y0 is None:
        y0 = params.rest_state()
    shared, steps, reason = _split(stimulus, size, dtype)
    if reason is not None:
        raise ValueError(f"fused_chunk: the fused kernel cannot take {reason}.")

    block = _BLOCK
    n_pad = -(-size // block) * block
    n_steps = config.n_blocks * config.block + config.tail
    max_spikes = config.max_spikes

    p_leaves, p_tree = jax.tree_util.tree_flatten(params)
    y_leaves, y_tree = jax.tree_util.tree_flatten(y0)
    p_leaves = [_pad(x, size, n_pad) for x in p_leaves]
    y_leaves = [_pad(jnp.asarray(x, dtype), size, n_pad) for x in y_leaves]
    s_leaves = [_pad(x, size, n_pad) for step in steps for x in step]
    table = []
    if shared:
        # The shared current at every step's midpoint, formed as the XLA kernel forms it.
        dt_, t0_ = jnp.asarray(config.dt, dtype), jnp.asarray(config.t0, dtype)
        k = jnp.arange(n_steps, dtype=jnp.int32)
        mid = t0_ + k.astype(dtype) * dt_ + 0.5 * dt_
        # Kept in the stimulus' own dtype until added to the per-neuron terms, as in the XLA
        # kernel (which casts the whole sum once).
        whole = jax.eval_shape(stimulus, jnp.zeros((), dtype)).dtype
        values = jax.vmap(lambda t: jnp.asarray(sum(term(t) for term in shared), whole))(mid)
        table = [jnp.pad(values, (0, pl.next_power_of_2(n_steps) - n_steps))]
    thr = _pad(jnp.asarray(config.threshold if threshold is None else threshold, dtype), size,
               n_pad)
    inputs = [*p_leaves, *y_leaves, *s_leaves, *table, thr]

    def kernel(*refs):
        refs = list(refs)
        take = lambda n: [refs.pop(0) for _ in range(n)]  # noqa: E731
        p = jax.tree_util.tree_unflatten(p_tree, [r[...] for r in take(len(p_leaves))])
        y = jax.tree_util.tree_unflatten(y_tree, [r[...] for r in take(len(y_leaves))])
        terms = [jax.tree_util.tree_unflatten(_STEP_TREE, [r[...] for r in take(3)])
                 for _ in steps]
        table_ref = take(1)[0] if table else None
        thr = take(1)[0][...]
        count_ref, times_ref, *refs = refs
        state_refs, record_refs = refs[: len(y_leaves)], refs[len(y_leaves):]
        # Made here, not closed over: a Pallas kernel takes no captured arrays.
        dt_, t0_ = jnp.asarray(config.dt, dtype), jnp.asarray(config.t0, dtype)
        constants = p._step_constants(dt_)
        rows = jnp.arange(block, dtype=jnp.int32)

        def clear(j, _):
            # One column at a time: a column is `block` values, a power of 2 as Triton needs
            # (a whole `(block, max_spikes)` tile would need `max_spikes` to be one too).
            plt.store(times_ref.at[rows, jnp.full((block,), j)], jnp.full((block,), jnp.nan, dtype))
            return _

        jax.lax.fori_loop(0, max_spikes, clear, 0)

        def current(k, t_mid):
            i = None if table_ref is None else table_ref[k]
            for term in terms:
                i = term(t_mid) if i is None else i + term(t_mid)
            return jnp.zeros((), dtype) if i is None else jnp.asarray(i, dtype)

        def step(k, carry):
            state, count = carry
            t_k = t0_ + k.astype(dtype) * dt_
            new, v_inf = p._exp_euler_step(state, current(k, t_k + 0.5 * dt_), constants, None)
            v0, v1 = state.v, new.v
            up = (v0 < thr) & (v1 >= thr)
            t_cross = t_k + _crossing_fraction(v0, v1, v_inf, thr) * dt_
            slot = jnp.minimum(count, max_spikes - 1)
            plt.store(times_ref.at[rows, slot], t_cross, mask=up & (count < max_spikes))
            return new, count + up.astype(jnp.int32)

        def keep(column, state):
            # One recorded sample of each variable: a column of the record.
            for name, ref in zip(config.record, record_refs, strict=True):
                plt.store(ref.at[rows, jnp.full((block,), column)], getattr(state, name))

        carry = (y, jnp.zeros((block,), jnp.int32))
        if not config.record:
            carry = jax.lax.fori_loop(0, n_steps, step, carry)
        else:
            # Blocks of `config.block` steps, a sample after each (and of the start, and after
            # a last partial block), where the XLA kernel samples.
            keep(0, y)

            def one_block(b, carry):
                carry = jax.lax.fori_loop(b * config.block, (b + 1) * config.block, step, carry)
                keep(b + 1, carry[0])
                return carry

            carry = jax.lax.fori_loop(0, config.n_blocks, one_block, carry)
            if config.tail:
                carry = jax.lax.fori_loop(config.n_blocks * config.block, n_steps, step, carry)
                keep(config.n_blocks + 1, carry[0])
        state, count = carry
        # Written as a float (exact below 2**24): Pallas' forward-mode derivative of a kernel
        # fails on integer outputs (jax 0.10.2).
        count_ref[...] = count.astype(dtype)
        for ref, x in zip(state_refs, jax.tree_util.tree_leaves(state), strict=True):
            ref[...] = x

    per_neuron = pl.BlockSpec((block,), lambda i: (i,))
    whole = pl.BlockSpec((table[0].shape[0],), lambda i: (0,)) if table else None
    times_spec = pl.BlockSpec((block, max_spikes), lambda i: (i, 0))
    in_specs = [per_neuron] * (len(p_leaves) + len(y_leaves) + len(s_leaves))
    in_specs += [whole] * len(table) + [per_neuron]
    out_shape = [
        jax.ShapeDtypeStruct((n_pad,), dtype),
        jax.ShapeDtypeStruct((n_pad, max_spikes), dtype),
        *(jax.ShapeDtypeStruct((n_pad,), x.dtype) for x in y_leaves),
    ]
    out_specs = [per_neuron, times_spec] + [per_neuron] * len(y_leaves)
    samples = config.n_blocks + 1 + (1 if config.tail else 0)
    out_shape += [jax.ShapeDtypeStruct((n_pad, samples), dtype) for _ in config.record]
    out_specs += [pl.BlockSpec((block, samples), lambda i: (i, 0)) for _ in config.record]
    call = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(n_pad // block,),
        in_specs=in_specs,
        out_specs=out_specs,
        interpret=interpret,
        compiler_params=plt.CompilerParams(num_warps=_NUM_WARPS, num_stages=1),
        name="hhjax_fused_batch",
    )
    # No XLA to undo the kernels' hand-fused exponentials here, and no Triton lowering for the
    # barrier that stops it; in interpret mode the barriers stay (XLA compiles the body).
    with _kinetics.barriers(interpret):
        count, times, *rest = _all_tangents(call)(*inputs)
    state = jax.tree_util.tree_unflatten(y_tree, [x[:size] for x in rest[: len(y_leaves)]])
    recorded = tuple(x[:size] for x in rest[len(y_leaves):])
    count = jax.lax.stop_gradient(count[:size]).astype(jnp.int32)
    return count, times[:size], jnp.zeros((size,), jnp.int32), state, recorded


def _make_forward_only():
    """The identity on tangents, whose transpose (reached only by reverse mode) raises an
    error that says what to do; without it `jax.grad` fails inside Pallas' transpose rule
    with a bare `AssertionError`."""
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    prim = Primitive("hhjax_fused_forward_only")
    prim.def_impl(lambda x: x)
    prim.def_abstract_eval(lambda x: x)
    mlir.register_lowering(prim, lambda ctx, x: [x])
    batching.defvectorized(prim)

    def transpose(cotangent, x):
        raise TypeError(
            "Reverse-mode differentiation (jax.grad, jax.vjp) does not go through hhjax's "
            "fused Pallas kernel (Pallas cannot transpose its time loop). Pass kernel='xla' "
            "(batch_features, simulate_batch) for reverse mode, or use forward mode "
            "(jax.jacfwd, hhjax.value_and_grad_forward), which the fused kernel supports."
        )

    ad.deflinear2(prim, transpose)
    return prim.bind


_forward_only = _make_forward_only()


def _all_tangents(call):
    """`call` with every input given a tangent in forward mode: Pallas' JVP of a kernel fails
    when some inputs carry none (symbolic zeros; jax 0.10.2), so zeros are made concrete.
    The primal outputs come from their own call: under `jax.jacfwd` the tangents are vmapped,
    and the primal half of Pallas' joint kernel would be computed (and batched) once per
    tangent."""
    wrapped = jax.custom_jvp(call)

    @wrapped.defjvp
    def _(primals, tangents):
        tangents_out = jax.jvp(call, primals, tangents)[1]
        return call(*primals), type(tangents_out)(_forward_only(t) for t in tangents_out)

    return wrapped


fused_chunk_jit = eqx.filter_jit(fused_chunk)
