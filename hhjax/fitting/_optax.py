"""The Optax-driven first-order fitting loop: progress, clipping, early stopping, checkpoints.

Units: ms, mV, µA/cm².

A checkpoint file is a format line, a JSON line with the fingerprint of the fit that wrote it
(SHA-256 digests of the recordings, the free parameters with their bounds and transforms,
`params0`, the optimiser, the start settings and the dtype) and the payload's length and
SHA-256, then the payload (optimiser state, best point so far, loss history). A resumed fit
checks all of it before it uses any of it, so it never continues another fit's parameters.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pathlib
import re
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._core import _core_jit, _make_residual, _schedule
from ._lm import residuals_and_jacobian

__all__ = ["optax_loop", "default_optimizer", "CheckpointError", "check_checkpoint_path"]


class CheckpointError(ValueError):
    """A `checkpoint` file cannot be resumed from: unreadable, truncated or corrupted, or
    written by a fit of other data or another configuration."""


def default_optimizer(learning_rate: float = 0.02) -> optax.GradientTransformation:
    """Adam on the transformed coordinates (log-conductances, potentials in 10 mV)."""
    return optax.adam(learning_rate)


_DEFAULT = default_optimizer()
_CLIPPED: dict = {}


def _with_clip(optimizer, clip):
    """The optimiser chained after gradient clipping, built once per (optimiser, clip) so the
    compiled step is reused by later fits."""
    optimizer = _DEFAULT if optimizer is None else optimizer
    if clip is None:
        return optimizer
    key = (id(optimizer), float(clip))
    if key not in _CLIPPED:
        _CLIPPED[key] = (optimizer, optax.chain(optax.clip_by_global_norm(float(clip)), optimizer))
    return _CLIPPED[key][1]


@eqx.filter_jit
def _step(theta, opt_state, base, data, *, spec, dts, y0_mode, optimizer):
    """One optimiser update; a non-finite loss or gradient leaves everything unchanged."""
    residual = _make_residual(spec, base, data, dts, y0_mode)
    loss, grad = jax.value_and_grad(lambda th: jnp.mean(residual(th) ** 2))(theta)
    ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(grad))
    grad = jnp.where(ok, grad, 0.0)
    updates, new_state = optimizer.update(grad, opt_state, theta)
    new_theta = spec.clip(optax.apply_updates(theta, updates))
    theta = jnp.where(ok, new_theta, theta)
    opt_state = jax.tree_util.tree_map(
        lambda a, b: jnp.where(ok, a, b) if eqx.is_array(a) else a, new_state, opt_state
    )
    return theta, opt_state, jnp.where(ok, loss, jnp.inf)


@eqx.filter_jit
def _loss_at(theta, base, data, *, spec, dts, y0_mode):
    r = _make_residual(spec, base, data, dts, y0_mode)(theta)
    return jnp.mean(r * r)


@eqx.filter_jit
def _residuals_and_jacobian_at(theta, base, data, *, spec, dts, y0_mode):
    return residuals_and_jacobian(_make_residual(spec, base, data, dts, y0_mode), theta)


# ---------------------------------------------------------------------------- checkpoints
_MAGIC = b"hhjax-checkpoint 1\n"


def check_checkpoint_path(checkpoint) -> pathlib.Path | None:
    """`checkpoint` as a path, checked before any fitting: a file path (not a directory) in an
    existing, writable directory."""
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"`checkpoint` must be a file path (str or os.PathLike) or None, got "
            f"{type(checkpoint).__name__}."
        )
    path = pathlib.Path(checkpoint)
    if path.is_dir():
        raise ValueError(
            f"`checkpoint` ({path}) is a directory; pass a file path such as {path / 'fit.ckpt'}."
        )
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(
            f"`checkpoint` ({path}): the directory {parent} does not exist. Create it first, or "
            "pass a path in an existing directory."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"`checkpoint` ({path}): the directory {parent} is not writable. Pass a path in a "
            "directory you can write to."
        )
    return path


def _feed(h, obj):
    """Feed a nest of numbers, strings, arrays and containers into the hash `h`, with type
    tags and lengths so that different nests never give the same byte stream."""
    if isinstance(obj, (tuple, list)):
        h.update(b"(%d" % len(obj))
        for x in obj:
            _feed(h, x)
        h.update(b")")
    elif isinstance(obj, dict):
        _feed(h, sorted((str(k), v) for k, v in obj.items()))
    elif isinstance(obj, (np.ndarray, jax.Array, np.generic)):
        a = np.ascontiguousarray(np.asarray(obj))
        _feed(h, ("array", str(a.dtype), a.shape))
        h.update(a.tobytes())
    else:
        text = f"{type(obj).__name__}:{obj!r}".encode()
        h.update(b"%d:" % len(text) + text)


def _digest(obj) -> str:
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _describe(obj, depth=0, seen=None):
    """A hashable description of an optimiser: the functions it is built from and the values
    they close over (Optax keeps a transform's hyperparameters, the learning rate among them,
    in closures). Best effort for other callables: their qualified names."""
    seen = set() if seen is None else seen
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return obj
    if isinstance(obj, (np.ndarray, jax.Array, np.generic)):
        return np.asarray(obj)
    if depth > 20 or id(obj) in seen:
        return f"<{type(obj).__qualname__}>"
    seen.add(id(obj))
    if isinstance(obj, (tuple, list)):
        return tuple(_describe(x, depth + 1, seen) for x in obj)
    if isinstance(obj, dict):
        return {str(k): _describe(v, depth + 1, seen) for k, v in obj.items()}
    if isinstance(obj, functools.partial):
        return ("partial", _describe((obj.func, obj.args, obj.keywords), depth + 1, seen))
    if callable(obj) and hasattr(obj, "__code__"):
        cells = []
        for cell in obj.__closure__ or ():
            try:
                cells.append(_describe(cell.cell_contents, depth + 1, seen))
            except ValueError:  # an empty cell
                cells.append(None)
        defaults = _describe(obj.__defaults__, depth + 1, seen)
        return (obj.__module__, obj.__qualname__, tuple(cells), defaults)
    return f"<{type(obj).__module__}.{type(obj).__qualname__}>"


def fingerprint(*, data, dts, spec, base, theta_guess, key, init, y0_mode, nudges, n_starts,
                spread, with_linear, optimizer, clip, min_delta) -> dict:
    """SHA-256 digests (hex) of what a fit depends on, one per part, so that a mismatch can be
    named. Excluded: `steps`, `patience`, `checkpoint_every`, `progress`, `callback` (a
    resumed fit may run longer or report differently)."""
    leaves, treedef = jax.tree_util.tree_flatten(base)
    return {
        "recordings": _digest(([tuple(d) for d in data], tuple(dts))),
        "free fields, bounds or transforms": _digest(
            (spec.names, spec.transforms, spec.lower, spec.upper)),
        # Without memory addresses, which differ between the run that saved and the resume.
        "params0 (start or fixed fields)": _digest(
            (re.sub(r" at 0x[0-9a-fA-F]+", "", str(treedef)), leaves, theta_guess)),
        "optimiser, clip or min_delta": _digest((_describe(optimizer), clip, min_delta)),
        "init, y0, nudges, n_starts, spread or seed": _digest(
            (init, y0_mode, tuple(nudges), n_starts, spread, with_linear, key)),
        "dtype": str(jnp.asarray(theta_guess).dtype),
    }


def _fsync_dir(directory):
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save(path, tree, history, prints):
    """Write a checkpoint atomically: a temporary file beside `path`, flushed to disk, then
    renamed over it; an interruption leaves the previous checkpoint whole."""
    path = pathlib.Path(path)
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    # The loss history follows as a plain .npy block (its length is not fixed in advance).
    np.save(buf, np.asarray(history, dtype=np.float64))
    payload = buf.getvalue()
    header = dict(fingerprint=prints, step=int(tree["step"]), payload_bytes=len(payload),
                  payload_sha256=hashlib.sha256(payload).hexdigest())
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_MAGIC)
            f.write(json.dumps(header, sort_keys=True).encode() + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fix(path):
    return f"Delete {path} to start the fit afresh, or pass another `checkpoint` path."


def _load(path, like, prints):
    """The saved state and loss history of the checkpoint at `path`, after checking that it is
    whole and that the fit that wrote it had the fingerprint `prints`."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(
            f"Cannot read the checkpoint {path} ({err.strerror or err}). {_fix(path)}") from None
    if not raw.startswith(_MAGIC):
        raise CheckpointError(
            f"{path} is not an hhjax checkpoint (or one from an older hhjax, or a damaged "
            f"one): it does not start with the checkpoint header. {_fix(path)}")
    head_end = raw.find(b"\n", len(_MAGIC))
    try:
        header = json.loads(raw[len(_MAGIC):head_end]) if head_end > 0 else None
        payload = raw[head_end + 1:]
        whole = (isinstance(header, dict)
                 and len(payload) == header["payload_bytes"]
                 and hashlib.sha256(payload).hexdigest() == header["payload_sha256"])
    except (ValueError, KeyError, TypeError):
        whole = False
    if not whole:
        raise CheckpointError(
            f"The checkpoint {path} is truncated or corrupted (its contents do not match the "
            f"length and checksum it was written with). {_fix(path)}")
    saved = header.get("fingerprint", {})
    differ = [k for k in prints if saved.get(k) != prints[k]]
    if differ:
        raise CheckpointError(
            f"The checkpoint {path} was written by another fit (different "
            f"{'; '.join(differ)}): resuming from it would continue that fit, not this one. "
            f"{_fix(path)}")
    try:
        buf = io.BytesIO(payload)
        tree = eqx.tree_deserialise_leaves(buf, like)
        history = np.load(buf)
    except Exception as err:  # a whole file of the right fit that still does not fit `like`
        raise CheckpointError(
            f"The checkpoint {path} does not hold this fit's optimiser state "
            f"({type(err).__name__}). {_fix(path)}") from None
    return tree, history


def optax_loop(base, data, theta_guess, key, *, spec, dts, init, y0_mode, nudges, n_starts,
               spread, with_linear, optimizer, steps, clip, patience, min_delta, progress,
               callback, checkpoint, checkpoint_every):
    """Minimise the mean squared weighted residual with an Optax optimiser.

    A step whose loss or gradient is not finite (the update moved to parameters the model
    cannot simulate on the sample grid) ends the loop with a warning: the optimiser would
    repeat it forever. Returns `(out, history, n_steps, converged)` with `out` shaped as the
    LM core's output (final residuals, Jacobian and states, for the uncertainty and the
    trace), at the best parameters seen; `converged` is whether early stopping (`patience`)
    ended the loop. When no step had a finite loss, `out["r"]` is not finite and the caller
    reports the failure.
    """
    optimizer = _with_clip(optimizer, clip)
    opt_state = optimizer.init(jnp.asarray(theta_guess))
    like = dict(theta=theta_guess, opt_state=opt_state, step=jnp.asarray(0),
                best_loss=jnp.asarray(np.inf), best_theta=theta_guess,
                best_step=jnp.asarray(0), start=theta_guess)
    path = None if checkpoint is None else pathlib.Path(checkpoint)
    prints = saved = None
    if path is not None:
        prints = fingerprint(
            data=data, dts=dts, spec=spec, base=base, theta_guess=theta_guess, key=key,
            init=init, y0_mode=y0_mode, nudges=nudges, n_starts=n_starts, spread=spread,
            with_linear=with_linear, optimizer=optimizer, clip=clip, min_delta=min_delta)
        if path.exists():  # checked before anything is compiled or solved
            saved = _load(path, like, prints)

    history = np.full(steps, np.nan)
    first = 0
    if saved is not None:
        tree, old = saved
        start, theta, opt_state = tree["start"], tree["theta"], tree["opt_state"]
        first = min(int(tree["step"]), steps)
        history[:first] = old[:first]
        best = (float(tree["best_loss"]), tree["best_theta"], int(tree["best_step"]))
    else:
        if init == "guess":
            start = theta_guess
        else:
            # Reuse the LM core's starting strategies with no LM polish (max_iter=0); for
            # "nudge" that is the point the nudging stages reach.
            iters, no_refit = _schedule(nudges, False, 0.0, theta_guess.dtype)
            start = _core_jit(
                base, data, theta_guess, key, iters, no_refit, spec=spec, dts=dts, init=init,
                max_iter=0, y0_mode=y0_mode, nudges=nudges, n_starts=n_starts, spread=spread,
                with_linear=with_linear)["theta"]
        theta = jnp.asarray(start)
        opt_state = optimizer.init(theta)
        best = (np.inf, theta, 0)

    def step_fn(theta, opt_state):
        return _step(theta, opt_state, base, data, spec=spec, dts=dts, y0_mode=y0_mode,
                     optimizer=optimizer)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=first, desc="fit (optax)", unit="step")
    stopped = False
    failed_at = None
    k = first
    for k in range(first, steps):
        before = theta
        theta, opt_state, loss = step_fn(theta, opt_state)
        loss = float(loss)  # the loss at `before`, the parameters this update started from
        history[k] = loss
        if not np.isfinite(loss):
            # `_step` left everything unchanged: every further step would repeat this one.
            failed_at = k
            break
        if loss < best[0] * (1.0 - min_delta):
            best = (loss, before, k)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
        if callback is not None:
            callback(k, loss, spec.apply(theta, base))
        if path is not None and ((k + 1) % checkpoint_every == 0 or k + 1 == steps):
            _save(path, dict(theta=theta, opt_state=opt_state, step=jnp.asarray(k + 1),
                             best_loss=jnp.asarray(best[0]), best_theta=best[1],
                             best_step=jnp.asarray(best[2]), start=jnp.asarray(start)),
                  history[: k + 1], prints)
        if patience is not None and k - best[2] >= patience:
            stopped = True
            break
    if bar is not None:
        bar.close()
    n_steps = k + 1 if steps > first else first
    if failed_at is None:
        # The returned parameters: the best seen (the loss of the final update is unknown).
        # Module-level jitted functions: a later fit with the same shapes reuses their programs.
        final_loss = float(_loss_at(theta, base, data, spec=spec, dts=dts, y0_mode=y0_mode))
        if final_loss < best[0]:
            best = (final_loss, theta, n_steps)
    elif np.isfinite(best[0]):
        warnings.warn(
            f"fit (optax): step {failed_at} reached parameters at which the model cannot be "
            "simulated on the recording's sample grid (non-finite loss or gradient); the loop "
            f"stopped there and returns the best parameters seen (step {best[2]}, not "
            "converged). Lower the learning rate (`optimizer`), tighten `clip`, or bound the "
            "parameters (`bounds`).",
            stacklevel=3,
        )
    theta = best[1]

    if np.isfinite(best[0]):
        r, jac = _residuals_and_jacobian_at(theta, base, data, spec=spec, dts=dts,
                                            y0_mode=y0_mode)
    else:  # no step could be simulated: nothing to differentiate (the caller reports it)
        n_res = sum(int(v.shape[0]) for v, _, _ in data)
        r = jnp.full((n_res,), jnp.nan, theta.dtype)
        jac = jnp.full((n_res, theta.shape[0]), jnp.nan, theta.dtype)
    out = dict(theta=theta, start=start, r=r, jac=jac)
    return out, history[:n_steps], n_steps, stopped
