"""A Levenberg–Marquardt least-squares solver that runs inside `jit` and under `vmap`.

The Jacobian comes from forward-mode differentiation (`jax.jacfwd`) of the residuals: with a
handful of free parameters and thousands of residuals, forward mode through the simulation is the
cheap direction, and Gauss–Newton steps converge in a few iterations from a good start.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["levenberg_marquardt", "residuals_and_jacobian"]


def residuals_and_jacobian(residual_fn, theta):
    """`(r, J)` of `residual_fn` at `theta` in one forward-mode pass."""
    jac, r = jax.jacfwd(lambda th: (residual_fn(th), residual_fn(th)), has_aux=True)(theta)
    return r, jac


def _cost(r):
    c = 0.5 * jnp.sum(r * r)
    return jnp.where(jnp.isfinite(c), c, jnp.inf)


def levenberg_marquardt(
    residual_fn,
    theta0,
    *,
    max_iter: int = 30,
    lower=None,
    upper=None,
    lam0: float = 1e-3,
    ftol: float = 1e-9,
    xtol: float = 1e-8,
):
    """Minimise $\\tfrac12\\|r(\\theta)\\|^2$ by Levenberg–Marquardt with Marquardt scaling.

    **Arguments:**

    - `residual_fn`: $\\theta \\mapsto r$, shape `(p,) -> (n,)`; traceable.
    - `theta0`: start, shape `(p,)`.
    - `max_iter`: iteration cap (each iteration: one forward-mode solve giving the trial
      point's residuals and Jacobian together).
    - `lower`, `upper`: optional bounds on $\\theta$ (arrays or `None`); steps are clipped.
    - `lam0`: initial damping relative to the diagonal of $J^T J$.
    - `ftol`, `xtol`: stop when an accepted step lowers the cost by less than `ftol` relative,
      or moves every coordinate by less than `xtol`.

    **Returns:**

    `(theta, cost_history, n_iter, converged, r, jac)`: the solution, $\\tfrac12\\|r\\|^2$
    after every iteration (shape `(max_iter + 1,)`, padded with the final value), iterations
    used, whether a tolerance (rather than the cap) ended it, and the residuals and Jacobian at
    the solution. Non-finite residuals count as an
    infinite cost, so steps into regions where the simulation fails are rejected.
    """
    theta0 = jnp.asarray(theta0)
    n_res = jax.eval_shape(residual_fn, theta0).shape[0]
    dtype = theta0.dtype

    def clip(th):
        if lower is not None:
            th = jnp.maximum(th, jnp.asarray(lower, th.dtype))
        if upper is not None:
            th = jnp.minimum(th, jnp.asarray(upper, th.dtype))
        return th

    # Every trial point is evaluated with its residuals and Jacobian in one forward-mode pass
    # (the tangents carry the primal along), so the traced program holds a single copy of the
    # simulation: compiling it dominates a short fit. Iteration 0 evaluates the start itself.
    # A rejected trial wastes its Jacobian, but near a solution almost every step is accepted,
    # and the returned Jacobian always belongs to the returned parameters.
    def cond(s):
        return ~s["done"]

    def body(s):
        first = s["it"] == 0
        theta, lam = s["theta"], s["lam"]
        jac_ok = jnp.where(jnp.isfinite(s["jac"]), s["jac"], 0.0)
        r_safe = jnp.where(jnp.isfinite(s["r"]), s["r"], 0.0)
        g = jac_ok.T @ r_safe
        h = jac_ok.T @ jac_ok
        d = jnp.diag(h)
        d = jnp.maximum(d, 1e-12 * jnp.max(d) + 1e-300)
        step = jnp.linalg.solve(h + lam * jnp.diag(d), -g)
        step = jnp.where(jnp.isfinite(step) & ~first, step, 0.0)
        trial = clip(theta + step)
        r, jac = residuals_and_jacobian(residual_fn, trial)
        c_new = _cost(r)
        accept = first | (c_new < s["cost"])
        cost = jnp.where(accept, c_new, s["cost"])
        small_f = (s["cost"] - c_new) <= ftol * s["cost"]
        small_x = jnp.max(jnp.abs(trial - theta)) <= xtol
        converged = accept & ~first & (small_f | small_x)
        it = s["it"] + 1
        lam = jnp.where(first, lam, jnp.where(accept, lam * 0.3, lam * 10.0))
        hist = jnp.where(jnp.arange(max_iter + 1) >= s["it"], cost, s["hist"])
        stuck = lam > 1e12
        return dict(
            theta=jnp.where(accept, trial, theta),
            r=jnp.where(accept, r, s["r"]),
            jac=jnp.where(accept, jac, s["jac"]),
            cost=cost,
            lam=lam,
            it=it,
            converged=converged,
            done=converged | stuck | (it > max_iter) | (first & ~jnp.isfinite(c_new)),
            hist=hist,
        )

    state = dict(
        theta=clip(theta0),
        r=jnp.zeros((n_res,), dtype),
        jac=jnp.zeros((n_res, theta0.shape[0]), dtype),
        cost=jnp.asarray(jnp.inf, dtype),
        lam=jnp.asarray(lam0, dtype),
        it=jnp.asarray(0),
        converged=jnp.asarray(False),
        done=jnp.asarray(False),
        hist=jnp.zeros((max_iter + 1,), dtype),
    )
    s = jax.lax.while_loop(cond, body, state)
    return s["theta"], s["hist"], s["it"] - 1, s["converged"], s["r"], s["jac"]
