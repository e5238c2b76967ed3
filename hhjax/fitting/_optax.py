"""The Optax-driven first-order fitting loop: progress, clipping, early stopping, checkpoints.

Units: ms, mV, µA/cm².
"""

from __future__ import annotations

import os
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._fit import _core_jit, _make_residual, _schedule
from ._lm import residuals_and_jacobian

__all__ = ["optax_loop", "default_optimizer"]


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


def _save(path, tree, history):
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        eqx.tree_serialise_leaves(f, tree)
        # The loss history follows as a plain .npy block (its length is not fixed in advance).
        np.save(f, np.asarray(history))
    os.replace(tmp, path)  # atomic: an interruption never leaves a half-written checkpoint


def _load(path, like):
    with open(path, "rb") as f:
        tree = eqx.tree_deserialise_leaves(f, like)
        history = np.load(f)
    return tree, history


def optax_loop(base, data, theta_guess, key, *, spec, dts, init, y0_mode, nudges, n_starts,
               spread, with_linear, optimizer, steps, clip, patience, min_delta, progress,
               callback, checkpoint, checkpoint_every):
    """Minimise the mean squared weighted residual with an Optax optimiser.

    Non-finite losses (a failed simulation) skip the update. Returns `(out, history, n_steps,
    stopped_early)` with `out` shaped as the LM core's output (final residuals, Jacobian and
    states, for the uncertainty and the trace).
    """
    optimizer = _with_clip(optimizer, clip)

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

    def step_fn(theta, opt_state):
        return _step(theta, opt_state, base, data, spec=spec, dts=dts, y0_mode=y0_mode,
                     optimizer=optimizer)

    theta = jnp.asarray(start)
    opt_state = optimizer.init(theta)
    history = np.full(steps, np.nan)
    best = (np.inf, theta, 0)
    first = 0
    state_like = dict(theta=theta, opt_state=opt_state, step=jnp.asarray(0),
                      best_loss=jnp.asarray(np.inf), best_theta=theta, best_step=jnp.asarray(0))
    if checkpoint is not None and pathlib.Path(checkpoint).exists():
        saved, old = _load(checkpoint, state_like)
        theta, opt_state = saved["theta"], saved["opt_state"]
        first = min(int(saved["step"]), steps)
        history[:first] = old[:first]
        best = (float(saved["best_loss"]), saved["best_theta"], int(saved["best_step"]))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=first, desc="fit (optax)", unit="step")
    stopped = False
    k = first
    for k in range(first, steps):
        before = theta
        theta, opt_state, loss = step_fn(theta, opt_state)
        loss = float(loss)  # the loss at `before`, the parameters this update started from
        history[k] = loss
        if loss < best[0] * (1.0 - min_delta):
            best = (loss, before, k)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
        if callback is not None:
            callback(k, loss, spec.apply(theta, base))
        if checkpoint is not None and ((k + 1) % checkpoint_every == 0 or k + 1 == steps):
            _save(checkpoint, dict(theta=theta, opt_state=opt_state, step=jnp.asarray(k + 1),
                                   best_loss=jnp.asarray(best[0]), best_theta=best[1],
                                   best_step=jnp.asarray(best[2])), history[: k + 1])
        if patience is not None and k - best[2] >= patience:
            stopped = True
            break
    if bar is not None:
        bar.close()
    n_steps = k + 1 if steps > first else first
    # The returned parameters: the best seen (the loss of the final update is unknown).
    # Module-level jitted functions: a later fit with the same shapes reuses their programs.
    final_loss = float(_loss_at(theta, base, data, spec=spec, dts=dts, y0_mode=y0_mode))
    if final_loss < best[0]:
        best = (final_loss, theta, n_steps)
    theta = best[1]

    r, jac = _residuals_and_jacobian_at(theta, base, data, spec=spec, dts=dts, y0_mode=y0_mode)
    out = dict(theta=theta, start=start, r=r, jac=jac)
    return out, history[:n_steps], n_steps, stopped
