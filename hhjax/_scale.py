"""Scale-out: a batch spread over this process's devices and over `jax.distributed` processes.

Two levels, both with no communication while the neurons (or fits) are being solved:

- **Local devices** ([`on_devices`][]): one compiled program, `jax.shard_map` over a
  one-axis mesh of the process's devices, with every per-member array split along its
  leading (batch) axis and everything else replicated. Each device solves its own members;
  nothing crosses devices until the result is read back. (Auto-sharded adaptive solves
  compile and run slowly, diffrax #718 / jax #20968; a plain `NamedSharding` on the CPU kernel
  also copied its held-rate buffers between devices every step, twice the CPU time. A
  `shard_map` keeps each device's loop local.)
- **Processes** ([`process_rows`][], [`gather_rows`][]): when `jax.distributed` has been
  initialised with several processes, every process is given the same global batch, takes
  its own contiguous share of the members, solves it on its local devices, and the shares are
  gathered once at the end (`multihost_utils.process_allgather`; gloo on CPUs, NCCL on GPUs).
  Every process must make the same call with the same arguments (SPMD style).

The mesh is built with `AxisType.Auto` axes: with jax 0.10's `Explicit` default, results drifted
from one device by an ulp per step (7.5 mV after 200 ms on HH, measured when this was built).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

__all__ = [
    "gather_rows", "local_mesh", "on_devices", "process_rows", "split_processes", "spread",
    "unshard",
]

_AXIS = "batch"


def split_processes(distribute: bool | None) -> bool:
    """Whether a batch is split across `jax.distributed` processes (`None`: when there are
    several)."""
    if distribute is None:
        return jax.process_count() > 1
    if not isinstance(distribute, bool):
        raise ValueError(f"`distribute` must be True, False or None, got {distribute!r}.")
    return distribute and jax.process_count() > 1


def process_rows(size: int) -> np.ndarray:
    """This process's members of a global batch of `size`: `ceil(size / processes)` indices,
    contiguous, the last process's share padded by repeating the final member (so every
    process compiles the same shapes)."""
    n, k = jax.process_count(), jax.process_index()
    per = -(-size // n)
    return np.minimum(np.arange(k * per, (k + 1) * per), size - 1)


def gather_rows(tree, size: int):
    """Concatenate every process's share (host arrays with a leading member axis) in process
    order and drop the padding: each process gets the global result."""
    from jax.experimental import multihost_utils

    tree = jax.tree_util.tree_map(np.asarray, tree)
    out = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[:size], out)


def unshard(tree):
    """Array leaves laid out over several devices (e.g. by a user's `NamedSharding` on an
    `Explicit` mesh, which makes reshapes and gathers raise `ShardingTypeError`) as host
    arrays; a global array spanning processes is gathered first. Other leaves unchanged."""

    def host(x):
        if not isinstance(x, jax.Array) or len(x.sharding.device_set) <= 1:
            return x
        if not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(host, tree)


def local_mesh(devices=None) -> Mesh:
    """A one-axis mesh (`"batch"`, `AxisType.Auto`) over `devices` (default: this process's)."""
    devices = jax.local_devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (_AXIS,))


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


def spread(fn, x, devices=None):
    """`fn(x)` for a batch `x` (leading axis), its parts run side by side on `devices`
    (default this process's), each from its own thread with the same compiled `fn`: results
    are those of one device, bit for bit. One device: `fn(x)` itself."""
    devices = jax.local_devices() if devices is None else list(devices)
    if len(devices) == 1:
        return fn(x)
    size = x.shape[0]
    per = -(-size // len(devices))
    idx = np.minimum(np.arange(len(devices) * per), size - 1).reshape(len(devices), per)
    run = lambda k: jax.device_get(fn(jax.device_put(x[idx[k]], devices[k])))
    parts = _map_in_threads(run, len(devices), len(devices))
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:size], *parts)


_programs: dict = {}


def on_devices(fn, key, args: tuple, batched: tuple[bool, ...], size: int, devices,
               compiler_options=None):
    """`fn(*args)` for a batch of `size` members, split over `devices` with `shard_map`.

    **Arguments:**

    - `fn`: computes the result for `size // len(devices)` members from the same arguments
      cut to that many members; every output leaf has a leading member axis.
    - `key`: hashable; identifies `fn` (with its closed-over configuration) in the program
      cache, so that equal keys reuse one compiled program.
    - `args`: pytrees; `batched[j]` says whether the array leaves of `args[j]` whose leading
      axis is `size` are split (others, and every leaf of an unbatched argument, are copied
      to every device).
    - `size`: the members; a multiple of `len(devices)`.

    **Returns:**

    `fn`'s outputs for all `size` members, as arrays laid out across the devices.
    """
    devices = list(devices)
    if size % len(devices):
        raise ValueError(f"on_devices: {size} members do not split over {len(devices)} devices.")
    cache_key = (key, size, tuple(d.id for d in devices), tuple(batched))
    program = _programs.get(cache_key)
    if program is None:
        mesh = local_mesh(devices)

        def spec(x, split):
            return PartitionSpec(_AXIS) if split and x.ndim and x.shape[0] == size else \
                PartitionSpec()

        def outer(*args):
            # Under `eqx.filter_jit` the arrays are traced and everything else is static.
            dynamic, static = eqx.partition(args, eqx.is_array)
            specs = tuple(
                jax.tree_util.tree_map(lambda x, b=b: spec(x, b), d)
                for d, b in zip(dynamic, batched, strict=True)
            )

            def inner(*parts):
                return fn(*eqx.combine(parts, static))

            run = jax.shard_map(inner, mesh=mesh, in_specs=specs,
                                out_specs=PartitionSpec(_AXIS), check_vma=False)
            return run(*dynamic)

        program = _programs[cache_key] = eqx.filter_jit(outer,
                                                        compiler_options=compiler_options)
    return program(*args)
