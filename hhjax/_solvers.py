"""Diffrax pieces for membrane models: the term that carries a model, and exponential Euler.

Units: mV, ms, µA/cm².

[`MembraneTerm`][] is the Diffrax term [`hhjax.simulate`][] and [`hhjax.spike_times_adaptive`][]
solve: it holds the model and its stimulus, so a solver that needs the model's structure (not
just $f$) reads it from the term. [`ExponentialEuler`][] is such a solver: one Rush–Larsen step
of the model's contract ([`hhjax.AbstractModel.exp_euler_step`][]) per Diffrax step, the
stimulus taken at the step's midpoint (so a step edge on the grid is never ambiguous):

1. Gates, exactly for the voltage frozen at $v_k$ (NEURON's `cnexp`, Rush–Larsen):
   $x_{k+1} = x_\\infty(v_k) + (x_k - x_\\infty(v_k))\\,e^{-\\Delta t/\\tau_x(v_k)}$.
   A convex combination of $x_k$ and $x_\\infty \\in [0, 1]$: gates never leave $[0, 1]$.
2. Voltage, exactly for the conductances frozen at the new gates: with $G = \\sum_c g_c$ and
   $v_\\infty = (\\sum_c g_c E_c + I)/G$, $v_{k+1} = v_\\infty + (v_k - v_\\infty)\\,
   e^{-G \\Delta t / C_m}$. Unconditionally stable (the membrane is linear in $v$ once the
   gates are fixed), like NEURON's implicit voltage step, and exact for a passive membrane.

Each half-update is exact for what it freezes and the two are staggered, as in NEURON's fixed
step; measured spike-time errors fall as $\\Delta t^2$ (1.08 / 0.27 / 0.043 ms for the 60th
spike at 0.05 / 0.025 / 0.01 ms, `benchmarks/accuracy.py`).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from diffrax._term import WrapTerm  # not exported; diffeqsolve wraps every term in one

from ._model import AbstractModel

__all__ = ["MembraneTerm", "ExponentialEuler", "exp_euler_step"]


def _model_field(t, y, args):
    model, stimulus = args
    return model.vector_field(t, y, stimulus)


# Reverse mode differentiates through every trial step, rejected ones included. Those get an
# exactly-zero cotangent (diffrax keeps the old state with a `where`), but a rejected step can be
# wild enough (e.g. the first step after a stimulus edge, sized for the dynamics before it) that
# a stage overflows: the field's Jacobian there holds inf/NaN and its transpose turns the zero
# cotangent into 0 * inf = NaN, poisoning the whole gradient. Where the field's value is not
# finite (such a stage is always rejected) its derivative is taken as 0, masked on both sides of
# the linear map, so that neither the forward tangent nor the transposed cotangent ever
# multiplies by the inf. Elsewhere: unchanged.
@jax.custom_jvp
def _masked_field(t, y, args):
    return _model_field(t, y, args)


@_masked_field.defjvp
def _masked_field_jvp(primals, tangents):
    out, linear = jax.linearize(_model_field, *primals)
    leaves = jtu.tree_leaves(out)
    ok = functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in leaves])
    mask = lambda x: x if x.dtype == jax.dtypes.float0 else jnp.where(ok, x, 0)
    tangent = linear(*jtu.tree_map(mask, tangents))
    return out, jtu.tree_map(mask, tangent)


class MembraneTerm(diffrax.AbstractTerm):
    """The ODE term of a membrane model under a stimulus: $dy/dt$ = `model.vector_field(t, y,
    stimulus)`. `args` of the solve is not used.

    **Arguments:**

    - `model`: any [`hhjax.AbstractModel`][] (unbatched inside a solve; vmap for batches).
    - `stimulus`: a callable `t -> µA/cm²` (e.g. [`hhjax.Step`][]) or `None`.
    - `fast`: use the model's fused vector field (HH: rates from two exponentials) without the
      derivative mask of non-finite stages; for forward-only solves.
    """

    model: AbstractModel
    stimulus: Any = None
    fast: bool = eqx.field(static=True, default=False)

    def vf(self, t, y, args):
        if self.fast:  # the model's fused field, unmasked: forward solves only
            return self.model._fast_vector_field(t, y, self.stimulus)
        return _masked_field(t, y, (self.model, self.stimulus))

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return jtu.tree_map(lambda v: control * v, vf)


def exp_euler_step(model: AbstractModel, y, i_stim, dt):
    """One exponential-Euler (Rush–Larsen) step of `model` from state `y` under constant
    `i_stim` (µA/cm²) for `dt` ms: [`hhjax.AbstractModel.exp_euler_step`][] as a function."""
    return model.exp_euler_step(y, i_stim, dt)


class ExponentialEuler(diffrax.AbstractSolver):
    """Exponential Euler (Rush–Larsen) for any membrane model: NEURON's fixed-step scheme.

    Gates advance exactly for the voltage frozen over the step (`cnexp`), the voltage exactly
    for the conductances frozen at the new gates; the stimulus is taken at the step midpoint.
    Stable at any step, gates stay in $[0, 1]$. Fixed step only: use with
    `hhjax.simulate(model, stim, t1, solver=hhjax.ExponentialEuler(), dt0=0.025)`.

    It reads the model and stimulus from its term, a [`MembraneTerm`][] (as
    [`hhjax.simulate`][] builds it); a plain `diffrax.ODETerm` carries only $f$, which is not
    enough for the scheme.

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
        _membrane_term(terms)
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        term = _membrane_term(terms)
        dt = t1 - t0
        stimulus = term.stimulus
        i_stim = 0.0 if stimulus is None else stimulus(t0 + 0.5 * dt)
        y1 = term.model.exp_euler_step(y0, i_stim, dt)
        dense_info = dict(y0=y0, y1=y1)
        return y1, None, dense_info, None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


ExponentialEuler.__init__.__doc__ = """**Arguments:** None"""


def _membrane_term(terms) -> MembraneTerm:
    term = terms
    while isinstance(term, WrapTerm):  # diffeqsolve wraps terms for the direction
        term = term.term
    if not isinstance(term, MembraneTerm):
        raise TypeError(
            "ExponentialEuler needs a hhjax.MembraneTerm(model, stimulus) as its term (as "
            f"hhjax.simulate builds it), got {type(term).__name__}: the scheme needs the "
            "model's gates and conductances, not only its vector field."
        )
    return term
