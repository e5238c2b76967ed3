"""The cross-entropy population search ([`CrossEntropy`][]) and its gradient polish: the solver
of the spike objectives, where counts leave no useful gradient.

Units: those of the fit's coordinates (log units for positive fields, potentials / 10 mV).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _scale
from ._free import _LINEAR_SCALE

__all__ = ["cross_entropy", "polish"]


def _spreads(spec, scale):
    """Initial spread per coordinate: `scale[field]` (log units, or mV for potentials),
    default 0.5 and 4 mV."""
    scale = scale or {}
    out = []
    for name, t in zip(spec.names, spec.transforms):
        if t == "log":
            out.append(float(scale.get(name, 0.5)))
        else:
            out.append(float(scale.get(name, 4.0)) / _LINEAR_SCALE)
    return np.asarray(out)


def cross_entropy(loss, spec, theta0, solver, callback=None):
    """Minimise `loss` ($\\theta \\mapsto$ scalar, inf where the model cannot be simulated)
    from `theta0` with the cross-entropy method; returns `(theta, loss, history, collapsed)`
    (`history`: the best loss after each generation; `collapsed`: whether the final sampling
    distribution had shrunk to its floor in every coordinate)."""
    batched = eqx.filter_jit(jax.vmap(loss))
    split = _scale.split_processes(bool(getattr(solver, "distribute", False)))

    def score(xs):
        # This process's devices side by side (and its share of the population, with
        # `distribute`); the losses of every member come back to every process.
        if not split:
            return _scale.spread(batched, xs)
        rows = _scale.process_rows(len(xs))
        return _scale.gather_rows(_scale.spread(batched, xs[rows]), len(xs))

    n = len(spec.names)
    std0 = _spreads(spec, solver.scale)
    floor = 0.02 * std0
    lo, hi = (np.asarray(b, dtype=np.float64) for b in spec.theta_bounds())
    n_elite = max(2, int(round(solver.elite * solver.population)))
    mean0 = np.asarray(theta0, dtype=np.float64)
    best_x, best_loss, history, collapsed = mean0.copy(), math.inf, [], False
    total = solver.restarts * solver.generations
    if solver.generations == 0:
        best_loss = float(loss(jnp.asarray(mean0, theta0.dtype)))
    for run in range(solver.restarts):
        rng = np.random.default_rng(solver.seed + run)
        mean, std = mean0.copy(), std0.copy()
        run_x, run_loss = mean0.copy(), math.inf
        for gen in range(solver.generations):
            xs = mean + std * rng.standard_normal((solver.population, n))
            xs[0] = run_x  # the best so far stays in the population
            xs = np.clip(xs, lo, hi)
            losses = np.asarray(score(jnp.asarray(xs, theta0.dtype)), dtype=np.float64)
            losses = np.where(np.isfinite(losses), losses, np.inf)
            order = np.argsort(losses, kind="stable")
            if losses[order[0]] < run_loss:
                run_loss, run_x = float(losses[order[0]]), xs[order[0]].copy()
            top = xs[order[:n_elite]]
            mean = top.mean(axis=0)
            std = np.maximum(top.std(axis=0), floor)
            history.append(run_loss)
            if callback is not None:
                callback(run * solver.generations + gen + 1, total, run_loss)
        if run_loss < best_loss:
            best_loss, best_x, collapsed = run_loss, run_x, bool(np.all(std <= floor))
    return jnp.asarray(best_x, theta0.dtype), best_loss, history, collapsed


def polish(loss, smooth, spec, theta, best_loss, solver):
    """`solver.polish_steps` Adam steps on `smooth` over the coordinates named in
    `solver.polish` (default all), at `solver.learning_rate` per log unit or per mV; the
    result is kept only if `loss` does not get worse. Returns `(theta, loss, steps_taken)`."""
    names = spec.names if solver.polish is None else tuple(solver.polish)
    mask = jnp.asarray([n in names for n in spec.names], theta.dtype)
    if smooth is None or solver.polish_steps == 0 or not bool(jnp.any(mask > 0)):
        return theta, best_loss, 0
    # Adam's step is about `learning_rate` per coordinate whatever the gradient's size; a
    # potential's coordinate is x / 10 mV, so its rate is divided by 10 to move by mV.
    unit = jnp.asarray([1.0 if t == "log" else 1.0 / _LINEAR_SCALE for t in spec.transforms],
                       theta.dtype)
    opt = optax.chain(optax.scale_by_adam(), optax.scale(-solver.learning_rate))

    @eqx.filter_jit
    def step(x, state):
        g = jax.grad(smooth)(x)
        update, new_state = opt.update(g * mask, state)
        return spec.clip(x + update * unit * mask), new_state, jnp.all(jnp.isfinite(g))

    state = opt.init(theta)
    x, taken = theta, 0
    for _ in range(solver.polish_steps):
        new_x, new_state, finite = step(x, state)
        if not bool(finite):
            break  # the step left the simulable region: keep what was reached
        x, state = new_x, new_state
        taken += 1
    new = float(eqx.filter_jit(loss)(x))
    if math.isfinite(new) and new <= best_loss:
        return x, new, taken
    return theta, best_loss, taken
