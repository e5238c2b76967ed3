"""The linear initialiser of Huys, Ahrens & Paninski (2006, J Neurophysiol 96:872).

Units: ms, mV, µA/cm², mS/cm², µF/cm².

With the voltage observed, the HH gates obey linear ODEs driven by the known $v(t)$ and can be
integrated from the data alone. The current balance is then linear in
$u = (\\bar g_{Na}/C,\\ \\bar g_K/C,\\ g_L/C,\\ g_L E_L/C,\\ 1/C)$:

$$v(t + w) - v(t) = \\int_t^{t+w} \\big[-u_1 m^3 h (v - E_{Na}) - u_2 n^4 (v - E_K) - u_3 v
    + u_4 + u_5 I_{inj}\\big]\\, ds,$$

one equation per window. Windows of ~1 ms (not a finite-difference $dv/dt$) average the noise;
exponential-Euler gate updates with step-averaged rates and trapezoidal integrals keep the
regressors second-order accurate on the sample grid. Fixed fields enter as linear equality
constraints on $u$, so any subset of $(\\bar g_{Na}, \\bar g_K, g_L, E_L, C)$ can be free.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from ..models._hh import HHParams, gate_rates, gates_inf
from ._free import check_count, check_real

__all__ = ["LINEAR_FIELDS", "linear_estimate", "linear_system"]

LINEAR_FIELDS = ("g_na", "g_k", "g_l", "e_l", "c_m")
"""The HH fields the linear initialiser estimates; the others are taken from `params0`."""


def _gates_from_voltage(params: HHParams, v, dt):
    """m, h, n integrated along the observed voltage (exponential Euler, step-averaged rates)."""
    rates = gate_rates(params, v)  # ((a_m, b_m), (a_h, b_h), (a_n, b_n)), each (samples,)
    gates = []
    for a, b in rates:
        x0 = a[0] / (a[0] + b[0])
        a_avg = 0.5 * (a[1:] + a[:-1])
        b_avg = 0.5 * (b[1:] + b[:-1])
        total = a_avg + b_avg
        x_inf = a_avg / total
        decay = jnp.exp(-dt * total)

        def step(x, inputs):
            xi, d = inputs
            x = xi + (x - xi) * d
            return x, x

        _, xs = jax.lax.scan(step, x0, (x_inf, decay))
        gates.append(jnp.concatenate([x0[None], xs]))
    return gates


def linear_system(params: HHParams, v, i_inj, dt: float, window: float = 1.0, stride: int = 4):
    """The windowed-integral regression $\\Delta v = A u$ for one recording.

    **Arguments:**

    - `params`: supplies the fixed kinetics and reversals ($E_{Na}$, $E_K$, temperature, $v_{ref}$).
    - `v`, `i_inj`: observed voltage (mV) and injected current (µA/cm²) on a uniform grid.
    - `dt`: grid spacing (ms), a Python float.
    - `window`: window length (ms).
    - `stride`: samples between window starts.

    **Returns:**

    `(A, dv)`: the regressors, shape `(windows, 5)`, and the voltage changes, shape `(windows,)`.
    """
    dt = check_real("dt", dt, above=0.0)
    window = check_real("window", window, above=0.0)
    stride = check_count("stride", stride)
    v = jnp.asarray(v)
    i_inj = jnp.asarray(i_inj, v.dtype)
    # Starting gates at steady state of the first ~1 ms (the cell is assumed at rest there).
    head = max(1, min(v.shape[0], int(round(1.0 / dt))))
    v_gates = v.at[0].set(jnp.mean(v[:head]))
    m, h, n = _gates_from_voltage(params, v_gates, dt)
    cols = [
        -(m**3) * h * (v - params.e_na),
        -(n**4) * (v - params.e_k),
        -v,
    ]
    trap = [0.5 * dt * (c[1:] + c[:-1]) for c in cols]
    trap.append(jnp.full(v.shape[0] - 1, dt, v.dtype))
    trap.append(dt * i_inj[:-1])  # the current is held over each sample interval
    cum = jnp.stack([jnp.concatenate([jnp.zeros(1, v.dtype), jnp.cumsum(c)]) for c in trap], -1)
    w = max(1, int(round(window / dt)))
    if w >= v.shape[0]:
        raise ValueError(f"`window` ({window} ms) must be shorter than the recording.")
    starts = jnp.arange(0, v.shape[0] - w, max(1, int(stride)))
    a = cum[starts + w] - cum[starts]
    dv = v[starts + w] - v[starts]
    return a, dv


def _constraints(free: Sequence[str], params: HHParams):
    """Rows $c\\cdot u = d$ fixing the non-free fields at their `params` values."""
    dtype = jnp.result_type(params.dtype, float)
    rows, rhs = [], []

    def row(**coef):
        r = jnp.zeros(5, dtype)
        for k, c in coef.items():
            r = r.at["u1 u2 u3 u4 u5".split().index(k)].set(c)
        return r

    if "g_na" not in free:
        rows.append(row(u1=1.0, u5=-params.g_na))
        rhs.append(0.0)
    if "g_k" not in free:
        rows.append(row(u2=1.0, u5=-params.g_k))
        rhs.append(0.0)
    if "g_l" not in free:
        rows.append(row(u3=1.0, u5=-params.g_l))
        rhs.append(0.0)
    if "e_l" not in free:
        rows.append(row(u4=1.0, u3=-params.e_l))
        rhs.append(0.0)
    if "c_m" not in free:
        rows.append(row(u5=1.0))
        rhs.append(1.0 / params.c_m)
    if not rows:
        return None, None
    return jnp.stack(rows), jnp.asarray(jnp.stack([jnp.asarray(x, dtype) for x in rhs]))


def linear_estimate(
    recordings,
    params0: HHParams | None = None,
    free: Sequence[str] = LINEAR_FIELDS,
    *,
    window: float = 1.0,
    stride: int = 4,
    rest_window: float = 2.0,
    rest_weight: float = 1.0,
) -> HHParams:
    """Estimate HH conductances, leak reversal and capacitance from voltage alone; no guess needed.

    **Arguments:**

    - `recordings`: a [`Recording`][] or a list of them (fitted jointly).
    - `params0`: an [`HHParams`][] giving the fixed fields (kinetics, $E_{Na}$, $E_K$, and any of
      the five not in `free`); default [`hhjax.HHParams`][]`()`.
    - `free`: which of `("g_na", "g_k", "g_l", "e_l", "c_m")` to estimate. Other names are
      ignored here (they keep their `params0` values).
    - `window`: window length (ms) of the integral equations.
    - `stride`: samples between window starts (overlapping windows use every sample's data).
    - `rest_window`, `rest_weight`: each recording is taken to start at rest: the steady-state
      current balance at its mean voltage over the first `rest_window` ms enters as an extra
      equation, weighted `rest_weight` times the largest regressor norm (0 disables it).

    **Returns:**

    `params0` with the estimated fields replaced (an [`HHParams`][]). Works under `jax.jit` and
    `jax.vmap` (over recordings' arrays via [`linear_estimate_arrays`][]).
    """
    from ._recording import Recording

    if isinstance(recordings, Recording):
        recordings = [recordings]
    if not isinstance(recordings, (list, tuple)) or not recordings:
        raise TypeError("`recordings` must be a Recording or a non-empty list of them.")
    for k, r in enumerate(recordings):
        if not isinstance(r, Recording):
            raise TypeError(f"`recordings[{k}]` must be a Recording, got {type(r).__name__}.")
    params0 = HHParams() if params0 is None else params0
    if not isinstance(params0, HHParams):
        raise TypeError(
            f"`params0` must be an HHParams (the linear estimate is HH's), got "
            f"{type(params0).__name__}."
        )
    window = check_real("window", window, above=0.0)
    stride = check_count("stride", stride)
    rest_window = check_real("rest_window", rest_window, above=0.0)
    rest_weight = check_real("rest_weight", rest_weight, at_least=0.0)
    arrays = [(r.v, r.i_inj, r.dt) for r in recordings]
    return linear_estimate_arrays(params0, arrays, free, window=window, stride=stride,
                                  rest_window=rest_window, rest_weight=rest_weight)


def _rest_row(params, v, i_inj, dt, rest_window):
    """Coefficients of $u$ in $dv/dt = 0$ at rest (steady-state gates, first current sample)."""
    head = max(1, min(v.shape[0], int(round(rest_window / dt))))
    v_r = jnp.mean(v[:head])
    m, h, n = gates_inf(params, v_r)
    return jnp.stack([
        -(m**3) * h * (v_r - params.e_na),
        -(n**4) * (v_r - params.e_k),
        -v_r,
        jnp.ones_like(v_r),
        i_inj[0] * jnp.ones_like(v_r),
    ])


@eqx.filter_jit
def linear_estimate_arrays(params0, arrays, free, *, window=1.0, stride=4, rest_window=2.0,
                           rest_weight=1.0):
    """[`linear_estimate`][] on `[(v, i_inj, dt), ...]` (traceable in `v` and `i_inj`)."""
    free = tuple(n for n in free if n in LINEAR_FIELDS)
    systems = [linear_system(params0, v, i, dt, window, stride) for v, i, dt in arrays]
    a = jnp.concatenate([s[0] for s in systems])
    b = jnp.concatenate([s[1] for s in systems])
    if rest_weight > 0:
        # Each recording starts at rest (the fit's initial state assumes it too): the current
        # balance at the mean voltage of the first `rest_window` ms, gates at steady state, is
        # zero. Under noise this pins the poorly determined leak (g_L, E_L) far better than the
        # windows do; it enters as heavily weighted rows.
        rows = [_rest_row(params0, v, i, dt, rest_window) for v, i, dt in arrays]
        weight = rest_weight * jnp.sqrt(jnp.sum(a * a, axis=0)).max() / jnp.max(
            jnp.abs(jnp.stack(rows)))
        a = jnp.concatenate([a, weight * jnp.stack(rows)])
        b = jnp.concatenate([b, jnp.zeros(len(rows), b.dtype)])
    # Column scaling: the regressors differ by orders of magnitude.
    scale = jnp.sqrt(jnp.mean(a * a, axis=0)) + 1e-30
    a_s = a / scale
    c, d = _constraints(free, params0)
    ata = a_s.T @ a_s
    atb = a_s.T @ b
    if c is None:
        u_s = jnp.linalg.solve(ata, atb)
    else:
        c_s = c / scale
        k = c.shape[0]
        kkt = jnp.block([[ata, c_s.T], [c_s, jnp.zeros((k, k), a.dtype)]])
        sol = jnp.linalg.solve(kkt, jnp.concatenate([atb, d]))
        u_s = sol[:5]
    u = u_s / scale
    c_m = 1.0 / u[4]
    values = dict(g_na=u[0] * c_m, g_k=u[1] * c_m, g_l=u[2] * c_m, e_l=u[3] / u[2], c_m=c_m)
    names = [n for n in LINEAR_FIELDS if n in free]
    dtype = jnp.result_type(params0.dtype, float)
    return eqx.tree_at(
        lambda p: [getattr(p, n) for n in names],
        params0,
        [jnp.asarray(values[n], dtype) for n in names],
    )
