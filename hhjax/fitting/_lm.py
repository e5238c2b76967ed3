"""A Levenberg–Marquardt least-squares solver that runs inside `jit` and under `vmap`.

The Jacobian comes from forward-mode differentiation (`jax.jacfwd`) of the residuals: with a
handful of free parameters and thousands of residuals, forward mode through the simulation is the
cheap direction, and Gauss–Newton steps converge in a few iterations from a good start.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._free import check_count, check_real

__all__ = ["levenberg_marquardt", "residuals_and_jacobian", "staged_levenberg_marquardt"]


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
    max_iter = check_count("max_iter", max_iter)
    lam0 = check_real("lam0", lam0, above=0.0)
    ftol = check_real("ftol", ftol, at_least=0.0)
    xtol = check_real("xtol", xtol, at_least=0.0)
    out = staged_levenberg_marquardt(
        lambda th, k: residual_fn(th), theta0, max_iter=max_iter, lower=lower, upper=upper,
        lam0=lam0, ftol=ftol, xtol=xtol,
    )
    return out["theta"], out["hist"], out["n_iter"], out["converged"], out["r"], out["jac"]


def staged_levenberg_marquardt(
    residual_fn,
    theta0,
    *,
    max_iter: int = 30,
    nudges=(),
    nudge_iters=None,
    nudge_first: bool = False,
    redo_above=None,
    lower=None,
    upper=None,
    lam0: float = 1e-3,
    ftol: float = 1e-9,
    xtol: float = 1e-8,
) -> dict:
    """Levenberg–Marquardt with continuation stages, and an automatic refit, in one loop.

    `residual_fn(theta, k)` gives the residuals with nudging strength `k` (1/ms); `k = 0` must
    be the plain residuals being minimised. Stages, each an LM run started afresh (damping
    reset, the start re-evaluated):

    - `nudge_first=False`: the plain LM from `theta0`. If `redo_above` is given and the final
      mean squared residual $\\|r\\|^2/n$ is above it (or not finite), the nudging stages run
      from `theta0` again, then the plain LM, and the better of the two plain results is kept.
    - `nudge_first=True`: the nudging stages from `theta0`, then the plain LM.

    Nudging stage `s` runs at most `nudge_iters[s]` iterations at strength `nudges[s]` (0 skips
    it). `nudge_iters` and `redo_above` may be traced, so one compiled program serves a plain
    fit, a nudged one and the refit: only `nudges`' length is fixed by the trace.

    **Returns:** a dict with `theta`, `hist` (costs of the kept plain run, `(max_iter + 1,)`),
    `n_iter`, `converged`, `r`, `jac` as in [`levenberg_marquardt`][], and `redone` (the refit
    ran), `used` (its result was kept), `hist_first`, `n_iter_first` (the first plain run).
    """
    theta0 = jnp.asarray(theta0)
    dtype = theta0.dtype
    n_res = jax.eval_shape(lambda th: residual_fn(th, 0.0), theta0).shape[0]
    ks = jnp.asarray(nudges, dtype).reshape(-1)
    if ks.shape[0] == 0:
        ks = jnp.zeros((1,), dtype)
        iters = jnp.zeros((1,), jnp.int32)
    else:
        iters = jnp.asarray(nudge_iters, jnp.int32).reshape(ks.shape)
    n_stages = ks.shape[0]
    final = n_stages + 1  # stage 0: first plain run; 1..S: nudging; S + 1: plain after them
    redo = redo_above is not None
    redo_above = jnp.asarray(jnp.inf if redo_above is None else redo_above, dtype)

    def clip(th):
        if lower is not None:
            th = jnp.maximum(th, jnp.asarray(lower, th.dtype))
        if upper is not None:
            th = jnp.minimum(th, jnp.asarray(upper, th.dtype))
        return th

    def next_stage(stage):
        cand = jnp.arange(1, final + 1)
        valid = (cand > stage) & jnp.concatenate([iters > 0, jnp.ones((1,), bool)])
        return jnp.min(jnp.where(valid, cand, final))

    def strength(stage):
        return jnp.where((stage >= 1) & (stage <= n_stages), ks[jnp.clip(stage - 1, 0)], 0.0)

    def limit(stage):
        inner = (stage >= 1) & (stage <= n_stages)
        return jnp.where(inner, iters[jnp.clip(stage - 1, 0, n_stages - 1)], max_iter)

    # Every trial point is evaluated with its residuals and Jacobian in one forward-mode pass
    # (the tangents carry the primal along), so the traced program holds a single copy of the
    # simulation: compiling it dominates a short fit. A stage's first iteration evaluates its
    # start. A rejected trial wastes its Jacobian, but near a solution almost every step is
    # accepted, and the returned Jacobian always belongs to the returned parameters.
    def body(s):
        stage, it = s["stage"], s["it"]
        first = it == 0
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
        k = strength(stage)
        r, jac = residuals_and_jacobian(lambda th: residual_fn(th, k), trial)
        c_new = _cost(r)
        accept = first | (c_new < s["cost"])
        cost = jnp.where(accept, c_new, s["cost"])
        small_f = (s["cost"] - c_new) <= ftol * s["cost"]
        small_x = jnp.max(jnp.abs(trial - theta)) <= xtol
        converged = accept & ~first & (small_f | small_x)
        lam = jnp.where(first, lam0, jnp.where(accept, lam * 0.3, lam * 10.0))
        plain = (stage == 0) | (stage == final)
        hist = jnp.where(plain & (jnp.arange(max_iter + 1) >= it), cost, s["hist"])
        theta = jnp.where(accept, trial, theta)
        r = jnp.where(accept, r, s["r"])
        jac = jnp.where(accept, jac, s["jac"])
        it = it + 1
        stage_end = (converged | (lam > 1e12) | (it > limit(stage))
                     | (first & ~jnp.isfinite(c_new)))
        # The end of the first plain run: done, or keep it and refit from the start.
        msr = 2.0 * cost / n_res
        end_first = stage_end & (stage == 0)
        refit = end_first & jnp.asarray(redo) & ~(msr <= redo_above)
        keep = lambda new, old: jnp.where(refit, new, old)
        saved = dict(
            theta_a=keep(theta, s["theta_a"]), r_a=keep(r, s["r_a"]), jac_a=keep(jac, s["jac_a"]),
            cost_a=keep(cost, s["cost_a"]), hist_a=keep(hist, s["hist_a"]),
            n_iter_a=keep(it - 1, s["n_iter_a"]), conv_a=keep(converged, s["conv_a"]),
        )
        done = stage_end & ((stage == final) | (end_first & ~refit))
        advance = stage_end & ~done
        theta = jnp.where(refit, clip(theta0), theta)
        return dict(
            theta=theta,
            r=r,
            jac=jac,
            cost=jnp.where(advance, jnp.inf, cost),
            lam=lam,
            stage=jnp.where(advance, next_stage(stage), stage),
            it=jnp.where(advance, 0, it),
            n_iter=jnp.where(stage_end, it - 1, s["n_iter"]),
            converged=jnp.where(stage_end, converged, s["converged"]),
            done=done,
            hist=jnp.where(refit, jnp.zeros_like(hist), hist),
            redone=s["redone"] | refit,
            **saved,
        )

    zeros_r = jnp.zeros((n_res,), dtype)
    zeros_j = jnp.zeros((n_res, theta0.shape[0]), dtype)
    zeros_h = jnp.zeros((max_iter + 1,), dtype)
    state = dict(
        theta=clip(theta0), r=zeros_r, jac=zeros_j, cost=jnp.asarray(jnp.inf, dtype),
        lam=jnp.asarray(lam0, dtype),
        stage=next_stage(0) if nudge_first else jnp.asarray(0),
        it=jnp.asarray(0), n_iter=jnp.asarray(0), converged=jnp.asarray(False),
        done=jnp.asarray(False), hist=zeros_h, redone=jnp.asarray(False),
        theta_a=clip(theta0), r_a=zeros_r, jac_a=zeros_j, cost_a=jnp.asarray(jnp.inf, dtype),
        hist_a=zeros_h, n_iter_a=jnp.asarray(0), conv_a=jnp.asarray(False),
    )
    s = jax.lax.while_loop(lambda s: ~s["done"], body, state)
    # After a refit, keep whichever plain run ended lower.
    used = s["redone"] & (s["cost"] < s["cost_a"])
    pick = lambda new, old: jnp.where(used | ~s["redone"], new, old)
    return dict(
        theta=pick(s["theta"], s["theta_a"]),
        hist=pick(s["hist"], s["hist_a"]),
        n_iter=pick(s["n_iter"], s["n_iter_a"]),
        converged=pick(s["converged"], s["conv_a"]),
        r=pick(s["r"], s["r_a"]),
        jac=pick(s["jac"], s["jac_a"]),
        redone=s["redone"],
        used=used,
        hist_first=jnp.where(s["redone"], s["hist_a"], s["hist"]),
        n_iter_first=jnp.where(s["redone"], s["n_iter_a"], s["n_iter"]),
    )
