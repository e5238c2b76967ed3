"""Rate functions of the Hodgkin–Huxley (1952) gating kinetics.

Units: voltages in mV, rates in 1/ms, temperature in °C.

All rates are written in terms of the depolarisation $u = v - v_{\\mathrm{ref}}$, where
$v_{\\mathrm{ref}}$ is the voltage the kinetics were measured from: 0 mV in Hodgkin and Huxley's
own (1952) convention, -65 mV in the modern convention used by NEURON's ``hh.mod``. With that
single shift the two conventions share one set of formulas.

Every exponential goes through [`exp_safe`][]: exact up to an exponent of
[`EXP_CAP`][] (50, far outside any membrane potential a cell can reach) and continued linearly
beyond it, so the rates and their derivatives stay finite for every finite voltage. Adaptive
solvers evaluate the vector field at wild trial states inside steps they later reject (a Tsit5
stage at -125,000 mV was seen during a spike at 50 µA/cm²); an overflowing exponential there
is harmless to the forward solve but turns the whole reverse-mode gradient into NaN, because
the rejected branch receives a zero cotangent and 0 · inf = NaN.

Two rates, $\\alpha_n$ and $\\alpha_m$, have the form $a (c - u) / (\\exp((c - u)/k) - 1)$, which is
0/0 at $u = c$. They are evaluated through [`xexpm1`][], whose double-`where` guard keeps both the
value and its gradient finite and exact at that point.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

__all__ = [
    "Q10",
    "T_REF",
    "EXP_CAP",
    "exp_safe",
    "xexpm1",
    "alpha_m",
    "beta_m",
    "alpha_h",
    "beta_h",
    "alpha_n",
    "beta_n",
    "temperature_factor",
    "gate_inf_tau",
]

Q10 = 3.0
"""Temperature coefficient of all gating rates (as in NEURON's hh.mod)."""
T_REF = 6.3
"""Temperature (°C) at which the 1952 rates were measured."""

# Below this |x| the Taylor series of x/(e^x-1) is used; its first neglected term is x^6/30240,
# far below float64 round-off here, and the branch is never taken for ordinary inputs.
_TAYLOR_EPS = 1e-4


EXP_CAP = 50.0
"""Largest exponent [`exp_safe`][] evaluates exactly; $e^{50} \\approx 5 \\times 10^{21}$ leaves
headroom even in float32. For the 1952 rates it is reached only below -475 mV (from the
reference potential)."""


_BARRIERS = contextvars.ContextVar("hhjax_barriers", default=True)


def keep(x):
    """`jax.lax.optimization_barrier(x)`: stops XLA from rewriting a hand-fused power of one
    exponential (`e * e`) back into a second exponential. Inside [`barriers`][]`(False)` it is
    `x` itself: the fused Pallas kernel (`hhjax._fused`), lowered through Triton, has neither
    that rewrite nor a lowering for the barrier."""
    return jax.lax.optimization_barrier(x) if _BARRIERS.get() else x


@contextlib.contextmanager
def barriers(on: bool):
    """While tracing inside this context, [`keep`][] is a barrier (`on`) or the identity.
    A context variable: other threads tracing at the same time are unaffected."""
    token = _BARRIERS.set(bool(on))
    try:
        yield
    finally:
        _BARRIERS.reset(token)


def exp_safe(x: ArrayLike) -> Array:
    r"""$e^x$ for $x \le$ [`EXP_CAP`][], continued by its tangent line beyond: never overflows.

    **Arguments:**

    - `x`: any real array.

    **Returns:**

    $e^{\min(x, c)}\,(1 + \max(x - c, 0))$ with $c$ = `EXP_CAP`: exactly `exp(x)` wherever a
    membrane can be, continuous with a continuous, non-zero derivative everywhere (no clipping
    that would silently zero a gradient).
    """
    x = jnp.asarray(x)
    capped = jnp.minimum(x, EXP_CAP)
    return jnp.exp(capped) * (1.0 + (x - capped))


def xexpm1(x: ArrayLike) -> Array:
    r"""$x / (e^x - 1)$, finite with a finite gradient everywhere, including $x = 0$.

    **Arguments:**

    - `x`: any real array.

    **Returns:**

    An array of the same shape. At $x = 0$ the value is 1 and the derivative $-1/2$, exactly.
    The double `where` keeps the unselected branch free of 0/0 so that reverse-mode gradients do
    not pick up NaN from it.
    """
    x = jnp.asarray(x)
    safe_x = jnp.where(jnp.abs(x) < _TAYLOR_EPS, jnp.ones_like(x), x)
    capped = jnp.minimum(safe_x, EXP_CAP)
    # expm1 up to the cap, exp_safe(x) - 1 beyond it: no overflow, so no inf in the gradient.
    return _xexpm1_from(x, jnp.expm1(capped) + jnp.exp(capped) * (safe_x - capped), _TAYLOR_EPS)


def _xexpm1_from(x, em1, cutoff):
    """$x/(e^x - 1)$ given `em1` $= e^x - 1$ from the caller (who may have it cheaper, as the
    fused HH rates do), with the series $1 - x/2 + x^2/12 - x^4/720$ where $|x| <$ `cutoff`.
    Both `where`s guard: the unselected branch never divides 0 by 0."""
    small = jnp.abs(x) < cutoff
    denominator = jnp.where(small, 1.0, em1)
    x2 = x * x
    series = 1.0 - 0.5 * x + x2 * (1.0 / 12.0 - x2 * (1.0 / 720.0))
    return jnp.where(small, series, jnp.where(small, 1.0, x) / denominator)


def series_cutoff(dtype) -> float:
    """Below this |x|, [`xexpm1_from_exp`][] takes $x/(e^x - 1)$ from its series
    $1 - x/2 + x^2/12 - x^4/720$, whose first neglected term $x^6/30240$ is below the dtype's
    round-off there; above it, $e^x - 1$ formed from a product of exponentials loses at most
    ~eps/|x|."""
    return 0.3 if jnp.finfo(dtype).bits <= 32 else 0.01


def xexpm1_from_exp(x, ex, cutoff):
    """$x/(e^x - 1)$ given `ex` $= e^x$ (fused rates form it from shared exponentials), with
    the series where $|x| <$ `cutoff` (see [`series_cutoff`][])."""
    return _xexpm1_from(x, ex - 1.0, cutoff)


def alpha_m(u: ArrayLike) -> Array:
    """Na activation opening rate (1/ms) at depolarisation `u` (mV) from the reference."""
    return 1.0 * xexpm1((25.0 - u) / 10.0)


def beta_m(u: ArrayLike) -> Array:
    """Na activation closing rate (1/ms)."""
    return 4.0 * exp_safe(-jnp.asarray(u) / 18.0)


def alpha_h(u: ArrayLike) -> Array:
    """Na inactivation recovery rate (1/ms)."""
    return 0.07 * exp_safe(-jnp.asarray(u) / 20.0)


def beta_h(u: ArrayLike) -> Array:
    """Na inactivation rate (1/ms): $1/(e^{(30-u)/10} + 1)$ written as a sigmoid (no overflow)."""
    return jax.nn.sigmoid((jnp.asarray(u) - 30.0) / 10.0)


def alpha_n(u: ArrayLike) -> Array:
    """K activation opening rate (1/ms)."""
    return 0.1 * xexpm1((10.0 - u) / 10.0)


def beta_n(u: ArrayLike) -> Array:
    """K activation closing rate (1/ms)."""
    return 0.125 * exp_safe(-jnp.asarray(u) / 80.0)


def temperature_factor(temperature: ArrayLike) -> Array:
    r"""Rate multiplier $Q_{10}^{(T - 6.3)/10}$ with $Q_{10} = 3$, as NEURON's hh.mod."""
    return Q10 ** ((jnp.asarray(temperature) - T_REF) / 10.0)


def gate_inf_tau(alpha: Array, beta: Array, phi: ArrayLike = 1.0) -> tuple[Array, Array]:
    r"""Steady state $x_\infty = \alpha/(\alpha+\beta)$ and time constant $\tau$ (ms).

    **Arguments:**

    - `alpha`, `beta`: opening and closing rates (1/ms).
    - `phi`: temperature factor.

    **Returns:**

    `(x_inf, tau)`; `tau` in ms.
    """
    total = alpha + beta
    return alpha / total, 1.0 / (phi * total)
