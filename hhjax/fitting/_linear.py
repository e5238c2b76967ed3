"""The linear initialiser of Huys, Ahrens & Paninski (2006, J Neurophysiol 96:872), for any
model of the [`hhjax.AbstractModel`][] contract.

Units: ms, mV, µA/cm², mS/cm², µF/cm².

With the voltage observed, every gate obeys a linear ODE driven by the known $v(t)$ and can be
integrated from the data alone. Each channel's current is its maximal conductance (the first
`g_*` field it reads) times a gating factor $G_c(t)$ times $(v - E_c)$, so the current balance is
linear in $u = (\\bar g_1/C, \\dots, \\bar g_k/C,\\ g_L/C,\\ g_L E_L/C,\\ 1/C)$:

$$v(t + w) - v(t) = \\int_t^{t+w} \\big[-\\textstyle\\sum_c u_c G_c (v - E_c) - u_L v + u_{LE}
    + u_I I_{inj}\\big]\\, ds,$$

one equation per window. Windows of ~1 ms (not a finite-difference $dv/dt$) average the noise;
exponential-Euler gate updates with step-averaged rates and trapezoidal integrals keep the
regressors second-order accurate on the sample grid. Fixed fields enter as linear equality
constraints on $u$, so any subset of the conductances, $g_L$, $E_L$ and $C$ can be free; other
free fields (kinetics, reversals, thresholds) keep their values from `params0`. For
[`hhjax.HHParams`][] the columns are $(\\bar g_{Na}, \\bar g_K, g_L, g_L E_L, 1/C)$.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from .._model import AbstractModel
from ..models._channels import Leak
from ..models._hh import HHParams
from ._free import check_count, check_real

__all__ = ["LINEAR_FIELDS", "linear_estimate", "linear_system", "linear_fields"]

LINEAR_FIELDS = ("g_na", "g_k", "g_l", "e_l", "c_m")
"""The fields the linear initialiser estimates on [`hhjax.HHParams`][]; for any model see
[`linear_fields`][]."""


def _channel_conductances(model):
    """`[(channel, field)]`: every non-leak channel with the field holding its maximal
    conductance (the first `g_*` field it reads)."""
    out = []
    for ch in model.mechanisms:
        if isinstance(ch, Leak):
            continue
        field = next((p for p in ch.params if p.startswith("g_")), None)
        if field is None:
            raise ValueError(
                f"linear estimate: channel {type(ch).__name__} names no `g_*` field in its "
                "`params`; the linear initialiser needs each channel's maximal conductance.")
        out.append((ch, field))
    return out


def linear_fields(model) -> tuple[str, ...]:
    """The fields of `model` the linear initialiser can estimate: its channels' maximal
    conductances, `g_l`, `e_l` and `c_m`."""
    if not isinstance(model, AbstractModel):
        return ()
    try:
        gs = [f for _, f in _channel_conductances(model)]
    except ValueError:
        return ()
    return (*gs, "g_l", "e_l", "c_m")


def _set(model, field, value):
    return eqx.tree_at(lambda m: getattr(m, field), model, jnp.asarray(value, jnp.result_type(
        getattr(model, field), float)))


def _gates_from_voltage(model, v, dt, v_start):
    """Every gate integrated along the observed voltage (exponential Euler, step-averaged
    rates), starting at steady state of `v_start`: `{gate: (samples,)}`."""
    rates = model.inf_rate(v)
    start = model.inf_rate(v_start)
    gates = {}
    for g, (x_inf, rate) in rates.items():
        alpha = x_inf * rate  # averaging α and the total rate, as for α/β kinetics
        a_avg = 0.5 * (alpha[1:] + alpha[:-1])
        r_avg = 0.5 * (rate[1:] + rate[:-1])
        xi = a_avg / r_avg
        decay = jnp.exp(-dt * r_avg)
        x0 = jnp.asarray(start[g][0], v.dtype)

        def step(x, inputs):
            xi_k, d = inputs
            x = xi_k + (x - xi_k) * d
            return x, x

        _, xs = jax.lax.scan(step, x0, (xi, decay))
        gates[g] = jnp.concatenate([x0[None], xs])
    return gates


def _columns(model, v, gates):
    """Instantaneous regressors at voltages `v` with gates `gates`: one per channel
    conductance, then $-v$, $1$ (the leak's two)."""
    state = model.make_state(v, gates)
    cols = []
    for ch, field in _channel_conductances(model):
        g, e = ch.conductance(_set(model, field, 1.0), v, state)
        cols.append(-g * (v - e))
    return cols + [-v, jnp.ones_like(v)]


def _head_line(v, dt, span):
    """`(mean, slope, head)`: least-squares line through the first `span` ms of `v` (at least
    two samples): its mean voltage, slope (mV/ms) and number of samples."""
    head = max(2, min(v.shape[0], int(round(span / dt))))
    t = jnp.arange(head, dtype=v.dtype) * dt
    y = v[:head]
    tm, ym = jnp.mean(t), jnp.mean(y)
    slope = jnp.sum((t - tm) * (y - ym)) / jnp.sum((t - tm) ** 2)
    return ym, slope, head


def _start_voltage(v, dt, span=0.25):
    """The voltage at the first sample, from a least-squares line through the first `span` ms."""
    mean, slope, head = _head_line(v, dt, span)
    return mean - slope * 0.5 * (head - 1) * dt


def linear_system(params, v, i_inj, dt: float, window: float = 1.0, stride: int = 4):
    """The windowed-integral regression $\\Delta v = A u$ for one recording.

    **Arguments:**

    - `params`: any model of the contract; supplies the kinetics and reversals.
    - `v`, `i_inj`: observed voltage (mV) and injected current (µA/cm²) on a uniform grid.
    - `dt`: grid spacing (ms), a Python float.
    - `window`: window length (ms).
    - `stride`: samples between window starts.

    **Returns:**

    `(A, dv)`: the regressors, shape `(windows, k + 3)` for `k` channel conductances (columns:
    the conductances in `params.mechanisms` order, $g_L$, $g_L E_L$, $1/C$), and the voltage
    changes, shape `(windows,)`.
    """
    dt = check_real("dt", dt, above=0.0)
    window = check_real("window", window, above=0.0)
    stride = check_count("stride", stride)
    v = jnp.asarray(v)
    i_inj = jnp.asarray(i_inj, v.dtype)
    # Gates start at steady state of the voltage at t = 0, read off a straight line through the
    # first 0.25 ms (noise averaged, no bias from a voltage already climbing). Exact for a cell
    # at rest when the recording starts, whatever the current does next; otherwise the error
    # decays with the gates' own time constants along the observed voltage. A 1-ms mean was
    # measured to bias the first spike's sodium column enough to make g_L negative (−1.8 for a
    # true 0.24) on a recording whose current jumps at its first sample.
    gates = _gates_from_voltage(params, v, dt, _start_voltage(v, dt))
    cols = _columns(params, v, gates)
    trap = [0.5 * dt * (c[1:] + c[:-1]) for c in cols[:-1]]
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


def _constraints(free: Sequence[str], params):
    """Rows $c\\cdot u = d$ fixing the non-free fields at their `params` values."""
    dtype = jnp.result_type(params.dtype, float)
    fields = [f for _, f in _channel_conductances(params)]
    k = len(fields)
    n = k + 3
    i_gl, i_le, i_c = k, k + 1, k + 2
    rows, rhs = [], []

    def row(coef):
        r = jnp.zeros(n, dtype)
        for j, c in coef.items():
            r = r.at[j].set(c)
        return r

    for j, f in enumerate(fields):
        if f not in free:
            rows.append(row({j: 1.0, i_c: -getattr(params, f)}))
            rhs.append(0.0)
    if "g_l" not in free:
        rows.append(row({i_gl: 1.0, i_c: -params.g_l}))
        rhs.append(0.0)
    if "e_l" not in free:
        rows.append(row({i_le: 1.0, i_gl: -params.e_l}))
        rhs.append(0.0)
    if "c_m" not in free:
        rows.append(row({i_c: 1.0}))
        rhs.append(1.0 / params.c_m)
    if not rows:
        return None, None
    return jnp.stack(rows), jnp.asarray(jnp.stack([jnp.asarray(x, dtype) for x in rhs]))


def linear_estimate(
    recordings,
    params0=None,
    free: Sequence[str] | None = None,
    *,
    window: float = 1.0,
    stride: int = 4,
    rest_window: float = 2.0,
    rest_weight: float = 1.0,
):
    """Estimate a model's conductances, leak reversal and capacitance from voltage alone; no
    guess needed.

    **Arguments:**

    - `recordings`: a [`Recording`][] or a list of them (fitted jointly).
    - `params0`: any model of the contract giving the fixed fields (kinetics, reversals, and
      any estimable field not in `free`); default [`hhjax.HHParams`][]`()`.
    - `free`: which of [`linear_fields`][]`(params0)` to estimate (default all of them).
      Other names are ignored here (they keep their `params0` values).
    - `window`: window length (ms) of the integral equations.
    - `stride`: samples between window starts (overlapping windows use every sample's data).
    - `rest_window`, `rest_weight`: where a recording starts at rest (the current constant and
      the voltage flat, within 1 mV/ms, over its first `rest_window` ms), the steady-state
      current balance at its mean voltage there enters as an extra equation, weighted
      `rest_weight` times the largest regressor norm (0 disables it). A recording that does
      not start at rest gets no such equation.

    **Returns:**

    `params0` with the estimated fields replaced. Works under `jax.jit` and `jax.vmap` (over
    recordings' arrays via `linear_estimate_arrays`).
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
    fields = linear_fields(params0)
    if not fields:
        raise TypeError(
            f"`params0` must be a model of the hhjax.AbstractModel contract whose channels name "
            f"their conductances, got {type(params0).__name__}."
        )
    free = fields if free is None else tuple(free)
    window = check_real("window", window, above=0.0)
    stride = check_count("stride", stride)
    rest_window = check_real("rest_window", rest_window, above=0.0)
    rest_weight = check_real("rest_weight", rest_weight, at_least=0.0)
    arrays = [(r.v, r.i_inj, r.dt) for r in recordings]
    return linear_estimate_arrays(params0, arrays, free, window=window, stride=stride,
                                  rest_window=rest_window, rest_weight=rest_weight)


_REST_SLOPE = 1.0
"""mV/ms: a recording whose mean voltage slope over its first `rest_window` ms is steeper than
this (or whose current changes there) is not taken to start at rest."""


def _rest_row(params, v, i_inj, dt, rest_window):
    """Coefficients of $u$ in $dv/dt = 0$ at rest (steady-state gates at the mean voltage of
    the first `rest_window` ms), and whether the recording starts at rest at all."""
    v_r, slope, head = _head_line(v, dt, rest_window)
    at_rest = (jnp.abs(slope) < _REST_SLOPE) & jnp.all(i_inj[:head] == i_inj[0])
    state = params.steady_state(v_r)
    gates = {g: getattr(state, g) for g in params.gate_names}
    cols = _columns(params, v_r, gates)
    return jnp.stack([*cols, i_inj[0] * jnp.ones_like(v_r)]), at_rest


@eqx.filter_jit
def linear_estimate_arrays(params0, arrays, free, *, window=1.0, stride=4, rest_window=2.0,
                           rest_weight=1.0):
    """[`linear_estimate`][] on `[(v, i_inj, dt), ...]` (traceable in `v` and `i_inj`)."""
    return _linear_solve(params0, arrays, free, window, stride, rest_window, rest_weight)[0]


def linear_misfit_arrays(params0, arrays, free, *, window=1.0, stride=4, rest_window=2.0,
                         rest_weight=1.0):
    """`(estimate, misfit)`: [`linear_estimate_arrays`][] and the mean squared residual (mV²)
    of its window equations. With the kinetics right, the misfit is the noise's; with them
    wrong (e.g. a threshold V_T off by 5 mV), no conductances explain the observed voltage's
    changes and it grows. It is computed along the *observed* voltage, so unlike a simulated
    loss it has no misplaced-spike minima: a smooth criterion for the kinetics."""
    return _linear_solve(params0, arrays, free, window, stride, rest_window, rest_weight)


def _linear_solve(params0, arrays, free, window, stride, rest_window, rest_weight):
    fields = linear_fields(params0)
    free = tuple(n for n in free if n in fields)
    systems = [linear_system(params0, v, i, dt, window, stride) for v, i, dt in arrays]
    a = jnp.concatenate([s[0] for s in systems])
    b = jnp.concatenate([s[1] for s in systems])
    if rest_weight > 0:
        # A recording that starts at rest: the current balance at the mean voltage of its
        # first `rest_window` ms, gates at steady state, is zero. Under noise this pins the
        # poorly determined leak (g_L, E_L) far better than the windows do; it enters as
        # heavily weighted rows (zero weight where the recording does not start at rest).
        rows, at_rest = zip(*[_rest_row(params0, v, i, dt, rest_window) for v, i, dt in arrays])
        rows = jnp.stack(rows)
        weight = rest_weight * jnp.sqrt(jnp.sum(a * a, axis=0)).max() / jnp.max(jnp.abs(rows))
        weight = weight * jnp.asarray(at_rest, a.dtype)[:, None]
        a = jnp.concatenate([a, weight * rows])
        b = jnp.concatenate([b, jnp.zeros(rows.shape[0], b.dtype)])
    # Column scaling: the regressors differ by orders of magnitude.
    scale = jnp.sqrt(jnp.mean(a * a, axis=0)) + 1e-30
    a_s = a / scale
    c, d = _constraints(free, params0)
    ata = a_s.T @ a_s
    atb = a_s.T @ b
    n = a.shape[1]
    if c is None:
        u_s = jnp.linalg.solve(ata, atb)
    else:
        c_s = c / scale
        k = c.shape[0]
        kkt = jnp.block([[ata, c_s.T], [c_s, jnp.zeros((k, k), a.dtype)]])
        sol = jnp.linalg.solve(kkt, jnp.concatenate([atb, d]))
        u_s = sol[:n]
    u = u_s / scale
    n_win = sum(s_[1].shape[0] for s_ in systems)
    misfit = jnp.mean((a[:n_win] @ u - b[:n_win]) ** 2)
    c_m = 1.0 / u[-1]
    gs = [f for _, f in _channel_conductances(params0)]
    values = {f: u[j] * c_m for j, f in enumerate(gs)}
    values.update(g_l=u[-3] * c_m, e_l=u[-2] / u[-3], c_m=c_m)
    names = [n_ for n_ in fields if n_ in free]
    dtype = jnp.result_type(params0.dtype, float)
    est = eqx.tree_at(
        lambda p: [getattr(p, n_) for n_ in names],
        params0,
        [jnp.asarray(values[n_], dtype) for n_ in names],
    )
    return est, misfit
