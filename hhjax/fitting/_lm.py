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
    - `max_iter`: iteration cap (each iteration: one forward solve; plus one Jacobian when the
      step is accepted).
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

    # The loop body holds the only copy of the Jacobian computation (compilation dominates the
    # cost of a short fit): it is recomputed at the top of an iteration after an accepted step,
    # and the iteration after convergence (or after the cap) only refreshes it, so the returned
    # Jacobian always belongs to the returned parameters.
    def cond(state):
        return ~state["done"]

    def body(s):
        r, jac = jax.lax.cond(
            s["need_jac"],
            lambda th: residuals_and_jacobian(residual_fn, th),
            lambda th: (s["r"], s["jac"]),
            s["theta"],
        )
        cost = jnp.where(s["it"] == 0, _cost(r), s["cost"])
        finishing = s["pending"] | (s["it"] >= max_iter)
        theta, lam = s["theta"], s["lam"]
        jac_ok = jnp.where(jnp.isfinite(jac), jac, 0.0)
        r_safe = jnp.where(jnp.isfinite(r), r, 0.0)
        g = jac_ok.T @ r_safe
        h = jac_ok.T @ jac_ok
        d = jnp.diag(h)
        d = jnp.maximum(d, 1e-12 * jnp.max(d) + 1e-300)
        step = jnp.linalg.solve(h + lam * jnp.diag(d), -g)
        step = jnp.where(jnp.isfinite(step), step, 0.0)
        new = clip(theta + step)
        c_new = jax.lax.cond(finishing, lambda th: jnp.inf, lambda th: _cost(residual_fn(th)), new)
        accept = (c_new < cost) & ~finishing
        small_f = (cost - c_new) <= ftol * cost
        small_x = jnp.max(jnp.abs(new - theta)) <= xtol
        converged = s["converged"] | (accept & (small_f | small_x))
        hist = jnp.where(jnp.arange(max_iter + 1) > s["it"], jnp.where(accept, c_new, cost),
                         s["hist"])
        hist = jnp.where(s["it"] == 0, hist.at[0].set(cost), hist)
        return dict(
            theta=jnp.where(accept, new, theta),
            r=r,
            jac=jac,
            cost=jnp.where(accept, c_new, cost),
            lam=jnp.where(accept, lam * 0.3, lam * 10.0),
            it=jnp.where(finishing, s["it"], s["it"] + 1),
            need_jac=accept,
            pending=(accept & (small_f | small_x)) | (lam * 10.0 > 1e12) & ~accept,
            converged=converged,
            done=finishing,
            hist=hist,
        )

    state = dict(
        theta=theta0,
        r=jnp.zeros((n_res,), dtype),
        jac=jnp.zeros((n_res, theta0.shape[0]), dtype),
        cost=jnp.asarray(jnp.inf, dtype),
        lam=jnp.asarray(lam0, dtype),
        it=jnp.asarray(0),
        need_jac=jnp.asarray(True),
        pending=jnp.asarray(False),
        converged=jnp.asarray(False),
        done=jnp.asarray(False),
        hist=jnp.zeros((max_iter + 1,), dtype),
    )
    s = jax.lax.while_loop(cond, body, state)
    return s["theta"], s["hist"], s["it"], s["converged"], s["r"], s["jac"]
