"""Spike features: interpolated spike times, counts, firing rates and f–I curves.

Units: ms, mV, Hz (spikes per second), µA/cm².
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ._checks import (
    _check_finite,
    _check_numbers,
    _check_real,
    _concrete,
    _describe_bad,
    padded_length,
)
from ._model import AbstractModel, _spike_threshold

__all__ = [
    "spike_times", "spike_count", "firing_rate", "FICurve", "fi_curve", "coincidence_factor",
]


def _crossings(v, threshold):
    """Boolean mask, shape `(..., times-1)`: an upward crossing between samples k and k+1."""
    return (v[..., :-1] < threshold) & (v[..., 1:] >= threshold)


# ---------------------------------------------------------------------- input checks
# Eager, on concrete values only (tracers pass through jit/vmap/grad untouched): a NaN trace or
# threshold would otherwise count as "no spikes", a silent wrong result.


def _check_trace(owner: str, ts, v) -> None:
    """`ts` (or None) and `v` real and finite, `ts` strictly increasing along its last axis."""
    for name, x in (("ts", ts), ("v", v)):
        if x is None:
            continue
        _check_real(owner, name, x)
        value = _concrete(x)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError(
                f"{owner}: `{name}` must be finite, got "
                f"{_describe_bad(value, ~np.isfinite(value))}. A trace from a failed solve holds "
                "NaN/inf (check `traj.ok`); remove or interpolate gaps in a recording."
            )
    t = None if ts is None else _concrete(ts)
    if t is not None and t.ndim >= 1 and t.shape[-1] >= 2:
        steps = np.diff(t, axis=-1)
        if not np.all(steps > 0):
            k = tuple(int(i) for i in np.argwhere(steps <= 0)[0])
            *batch, i = k
            where = tuple(batch)
            raise ValueError(
                f"{owner}: `ts` must be strictly increasing (sample times in ms), but "
                f"ts{list(where) if where else ''}[{i}] = {t[k].item()!r} is followed by "
                f"{t[(*where, i + 1)].item()!r}. Pass the time axis that belongs to `v`, in "
                "increasing order."
            )


def _refine(ts, v, k, threshold, n):
    """Crossing time inside [ts[k], ts[k+1]] from the cubic through samples k-1..k+2.

    The cubic interpolant makes the error O(dt^4) instead of linear interpolation's O(dt^2),
    so a 0.025 ms save grid gives spike times good to well below a microsecond. `n` is the
    number of real samples (the arrays may be padded beyond it).
    """
    lo = jnp.clip(k - 1, 0, n - 4)
    idx = lo + jnp.arange(4)
    tt, vv = ts[idx], v[idx] - threshold
    t_a, t_b = ts[k], ts[k + 1]
    v_a, v_b = v[k] - threshold, v[k + 1] - threshold
    t_lin = t_a - v_a * (t_b - t_a) / (v_b - v_a)

    def lagrange(t):
        total = 0.0
        for i in range(4):
            w = 1.0
            for j in range(4):
                if j != i:
                    w = w * (t - tt[j]) / (tt[i] - tt[j])
            total = total + w * vv[i]
        return total

    dlagrange = jax.grad(lagrange)

    def newton(_, t):
        return t - lagrange(t) / dlagrange(t)

    t_cub = jax.lax.fori_loop(0, 6, newton, t_lin)
    # A cubic can wander when the samples are not smooth (noise); keep the linear estimate then.
    good = jnp.isfinite(t_cub) & (t_cub >= t_a) & (t_cub <= t_b)
    return jnp.where(good, t_cub, t_lin)


def _pad_last(x, extra: int):
    """`x` with its last entry repeated `extra` more times along the last axis."""
    widths = [(0, 0)] * (x.ndim - 1) + [(0, extra)]
    if isinstance(x, jax.core.Tracer):
        return jnp.pad(x, widths, mode="edge")
    return np.pad(np.asarray(x), widths, mode="edge")  # no per-shape compilation


@eqx.filter_jit
def _spike_times_fixed(ts, v, threshold, n, max_spikes: int):
    # `ts` and `v` may be padded along the last axis beyond the `n` real samples (a traced
    # count, so that one compilation serves every length in a bucket); crossings in the padding
    # are masked out and the refinement never reads past sample n - 1.
    def one(ts, v):
        mask = _crossings(v, threshold) & (jnp.arange(v.shape[-1] - 1) < n - 1)
        (k,) = jnp.nonzero(mask, size=max_spikes, fill_value=0)
        valid = jnp.arange(max_spikes) < jnp.sum(mask)
        if ts.shape[-1] < 4:
            t_a, t_b = ts[k], ts[k + 1]
            v_a, v_b = v[k] - threshold, v[k + 1] - threshold
            times = t_a - v_a * (t_b - t_a) / (v_b - v_a)
        else:
            times = jax.vmap(lambda kk: _refine(ts, v, kk, threshold, n))(k)
        return jnp.where(valid, times, jnp.nan)

    batch = v.shape[:-1]
    ts = jnp.broadcast_to(ts, v.shape).reshape(-1, v.shape[-1])
    out = jax.vmap(one)(ts, v.reshape(-1, v.shape[-1]))
    return out.reshape(*batch, max_spikes)


def spike_times(
    ts: ArrayLike, v: ArrayLike, threshold: float = 0.0, *, max_spikes: int | None = None
) -> Array:
    """Times (ms) of upward crossings of `threshold` by `v`, interpolated between samples.

    The crossing is located on the cubic through the four samples around it (linear if fewer
    than four samples), so times are accurate far below the sample spacing and differentiable
    with respect to `v`.

    **Arguments:**

    - `ts`: sample times (ms), shape `(times,)` or broadcastable to `v`.
    - `v`: voltage (mV), shape `(*batch, times)`.
    - `threshold`: crossing level (mV); default 0.
    - `max_spikes`: return a fixed-size array padded with NaN (needed under `jit`/`vmap`/`grad`).
      Default `None`: the exact number of spikes (the largest count over a batch, NaN-padded).

    **Returns:**

    Shape `(*batch, spikes)`.

    Concrete inputs are checked: `ts` must be finite and strictly increasing, `v` finite (a
    failed solve's NaN trace would otherwise read as "no spikes") and `threshold` finite;
    each failure raises `ValueError`. Traces of different lengths share compilations (lengths
    are rounded up to one of four sizes per octave and the padding masked out).
    """
    ts, v = jnp.asarray(ts), jnp.asarray(v)
    if v.ndim == 0 or v.shape[-1] < 2:
        raise ValueError(
            f"spike_times: `v` must have at least two samples along its last axis, got shape "
            f"{v.shape}."
        )
    if ts.ndim == 0 or ts.shape[-1] != v.shape[-1]:
        raise ValueError(
            "spike_times: `ts` and `v` must have the same number of samples along the last "
            f"axis, got shapes {ts.shape} and {v.shape}."
        )
    _check_trace("spike_times", ts, v)
    _check_numbers("spike_times", ("threshold", threshold, "mV"))
    count = None
    if max_spikes is None:
        v_np, threshold_np = _concrete(v), _concrete(threshold)
        if v_np is None or threshold_np is None:
            raise ValueError("spike_times: under jit/vmap/grad pass `max_spikes`.")
        # NumPy, not jnp: eager jnp ops would compile afresh for every new trace length.
        count = int(np.max(np.sum(_crossings(v_np, threshold_np), axis=-1), initial=0))
        # A power-of-two size (sliced back to `count`) so new spike counts rarely recompile.
        max_spikes = 1 if count == 0 else 2 ** (count - 1).bit_length()
    if isinstance(max_spikes, bool) or not isinstance(max_spikes, (int, np.integer)):
        raise TypeError(f"spike_times: `max_spikes` must be an int, got {max_spikes!r}.")
    if max_spikes < 0:
        raise ValueError(f"spike_times: `max_spikes` must be >= 0, got {max_spikes}.")
    n = v.shape[-1]
    # Four lengths per octave (at most 25 % more), so traces of many lengths share a few
    # compilations.
    size = padded_length(n, 4) if n >= 16 else n
    if size > n:
        ts, v = _pad_last(ts, size - n), _pad_last(v, size - n)
    threshold = jnp.asarray(threshold, v.dtype)
    times = _spike_times_fixed(ts, v, threshold, jnp.asarray(n), int(max_spikes))
    return times if count is None else times[..., :count]


def spike_count(v: ArrayLike, threshold: float = 0.0) -> Array:
    """Number of upward crossings of `threshold` (mV) along the last axis of `v`.

    Concrete `v` and `threshold` must be finite (`ValueError` otherwise: a NaN trace is a
    failed solve, not a silent cell).
    """
    v = jnp.asarray(v)
    _check_trace("spike_count", None, v)
    _check_numbers("spike_count", ("threshold", threshold, "mV"))
    return jnp.sum(_crossings(v, threshold), axis=-1)


def firing_rate(
    ts: ArrayLike,
    v: ArrayLike,
    threshold: float = 0.0,
    *,
    t_start: float | None = None,
    t_stop: float | None = None,
) -> Array:
    """Mean firing rate (Hz) in the window `[t_start, t_stop]` ms (default: the whole trace).

    The window must be non-empty (`t_stop > t_start`) and lie within the trace (up to one
    sample spacing beyond either end), else `ValueError`: a rate over time the trace does not
    cover would be silently low. `ts`, `v` and `threshold` are checked as in [`spike_times`][].
    """
    ts, v = jnp.asarray(ts), jnp.asarray(v)
    if ts.ndim == 0 or v.ndim == 0 or ts.shape[-1] != v.shape[-1] or ts.shape[-1] < 2:
        raise ValueError(
            "firing_rate: `ts` and `v` need the same number (>= 2) of samples along the last "
            f"axis, got shapes {ts.shape} and {v.shape}."
        )
    _check_trace("firing_rate", ts, v)
    _check_numbers("firing_rate", ("threshold", threshold, "mV"))
    t_start = ts[..., 0] if t_start is None else jnp.asarray(t_start)
    t_stop = ts[..., -1] if t_stop is None else jnp.asarray(t_stop)
    _check_window(ts, t_start, t_stop)
    # Window edges get a trailing axis so that batched `ts` (shape `(*batch, times)`) broadcast.
    inside = (ts[..., 1:] >= t_start[..., None]) & (ts[..., 1:] <= t_stop[..., None])
    count = jnp.sum(_crossings(v, threshold) & inside, axis=-1)
    return 1000.0 * count / (t_stop - t_start)


def _check_window(ts, t_start, t_stop) -> None:
    _check_numbers("firing_rate", ("t_start", t_start, "ms"), ("t_stop", t_stop, "ms"))
    start, stop, t = _concrete(t_start), _concrete(t_stop), _concrete(ts)
    if start is None or stop is None:
        return
    if np.any(stop <= start):
        raise ValueError(
            f"firing_rate: the window is empty: `t_stop` ({stop}) must be after `t_start` "
            f"({start}) ms."
        )
    if t is None:
        return
    slack = np.max(np.diff(t, axis=-1))
    first, last = np.min(t[..., 0]), np.max(t[..., -1])
    if np.any(start < first - slack) or np.any(stop > last + slack):
        raise ValueError(
            f"firing_rate: the window [{start}, {stop}] ms reaches outside the trace "
            f"[{first}, {last}] ms, where no spikes can be seen; pass `t_start`/`t_stop` "
            "within the recorded times."
        )


class FICurve(eqx.Module):
    """An f–I curve: `rates` (Hz) and spike `counts` for each step `amplitudes` (µA/cm²);
    `ok` is `False` where the solve failed (its rate is then NaN); `None` only for curves built
    by hand without it."""

    amplitudes: Array
    rates: Array
    counts: Array
    ok: Array | None = None


def fi_curve(
    params: AbstractModel,
    amplitudes: ArrayLike,
    *,
    duration: float = 1000.0,
    delay: float = 0.0,
    discard: float = 0.0,
    threshold: float | None = None,
    dt_save: float = 0.05,
    **simulate_kwargs,
) -> FICurve:
    """Firing rate against step amplitude, one vmapped compiled solve for the whole sweep.

    **Arguments:**

    - `params`: any model (scalar fields).
    - `amplitudes`: step currents (µA/cm²), shape `(currents,)`.
    - `duration`: step length (ms). `delay`: rest before the step (ms).
    - `discard`: initial transient excluded from the rate (ms after onset); default 0.
    - `threshold`: spike threshold (mV); default the model's own, `params.spike_threshold`
      (for HH 65 mV above `v_ref`: 0 mV in the modern convention, 65 mV in the 1952 one).
    - `dt_save`: save grid used for counting (ms).
    - `**simulate_kwargs`: passed to [`hhjax.simulate`][] (e.g. `solver`, `dt0`, `rtol`).

    **Returns:**

    An [`FICurve`][]. Rates count spikes in `[delay + discard, delay + duration]`. A solve
    that fails (see [`hhjax.simulate`][]) raises [`hhjax.SimulationError`][] naming the
    amplitudes; under `jit`/`vmap` its rate is NaN and `ok` False instead.

    Inputs are checked before any solve: `amplitudes` non-empty, real and finite; `duration`,
    `dt_save` > 0; `delay`, `discard` >= 0 with `discard < duration`; `threshold` finite.
    """
    raw = jnp.asarray(amplitudes)
    _check_real("fi_curve", "amplitudes", raw)
    amplitudes = jnp.atleast_1d(raw.astype(jnp.result_type(params.dtype, float)))
    if amplitudes.ndim != 1:
        raise ValueError(f"fi_curve: `amplitudes` must be 1-D, got shape {amplitudes.shape}.")
    if amplitudes.size == 0:
        raise ValueError(
            "fi_curve: `amplitudes` is empty; pass at least one step current (µA/cm²), e.g. "
            "jnp.linspace(0.0, 20.0, 11)."
        )
    _check_finite("fi_curve", "amplitudes", amplitudes, "µA/cm²")
    _check_numbers(
        "fi_curve",
        ("duration", duration, "ms"),
        ("delay", delay, "ms"),
        ("discard", discard, "ms"),
        ("dt_save", dt_save, "ms"),
        ("threshold", 0.0 if threshold is None else threshold, "mV"),
    )
    if not duration > 0 or not dt_save > 0:
        raise ValueError(
            f"fi_curve: `duration` and `dt_save` must be > 0 ms, got {duration} and {dt_save}."
        )
    if not delay >= 0 or not discard >= 0:
        raise ValueError(
            f"fi_curve: `delay` and `discard` must be >= 0 ms, got {delay} and {discard}."
        )
    if not discard < duration:
        raise ValueError(
            f"fi_curve: `discard` ({discard} ms) must be shorter than `duration` ({duration} ms), "
            "or no time is left to count spikes in."
        )
    if params.batch_shape:
        raise ValueError("fi_curve takes a single neuron's model; vmap over fi_curve for more.")
    t1 = delay + duration
    threshold = _spike_threshold("fi_curve", params, threshold)
    counts, ok = _fi_counts(
        params,
        amplitudes,
        float(delay),
        float(t1),
        float(delay + discard),
        jnp.asarray(threshold, amplitudes.dtype),
        float(dt_save),
        simulate_kwargs,
    )
    ok_np = _concrete(ok)
    if ok_np is not None and not np.all(ok_np):
        from ._simulate import SimulationError

        raise SimulationError(
            f"fi_curve: the solve failed at {np.sum(~ok_np)} of {ok_np.size} amplitude(s) "
            f"(first: {float(amplitudes[np.argmin(ok_np)])} µA/cm²); see hhjax.simulate with "
            "that step for the reason. Fixes: a smaller `dt0` for fixed-step solvers, a larger "
            "`max_steps`, or check the parameters."
        )
    rates = jnp.where(ok, 1000.0 * counts / (t1 - delay - discard), jnp.nan)
    return FICurve(amplitudes, rates, counts, ok)


@eqx.filter_jit
def _fi_counts(params, amplitudes, delay, t1, t_start, threshold, dt_save, simulate_kwargs):
    from ._simulate import simulate
    from ._stimulus import Step

    simulate_kwargs = {"throw": False, **simulate_kwargs}  # failures come back as `ok`

    def counts_for(amplitude):
        stim = Step(amplitude, start=delay, stop=jnp.inf)
        traj = simulate(params, stim, t1, dt_save=dt_save, **simulate_kwargs)
        inside = traj.ts[1:] >= t_start
        return jnp.sum(_crossings(traj.v, threshold) & inside), traj.ok

    return jax.vmap(counts_for)(amplitudes)


# ---------------------------------------------------------------------------- spike coincidence
def coincidence_factor(data, model, duration: float, window: float = 4.0) -> float:
    r"""The spike-time coincidence factor $\Gamma$ of a predicted spike train against a
    recorded one (Kistler, Gerstner & van Hemmen 1997; Jolivet et al. 2008, with
    $\Delta$ = `window`):

    $$\Gamma = \frac{N_{coinc} - 2\nu\Delta N_{data}}
                    {\tfrac12 (N_{data} + N_{model})(1 - 2\nu\Delta)},
      \qquad \nu = N_{model} / T,$$

    where $N_{coinc}$ counts pairs of a data spike and a model spike at most $\Delta$ apart,
    each spike in at most one pair (closest pairs first), so that $\Gamma \le 1$. 1 is a
    perfect prediction, about 0 what a Poisson train of the model's rate achieves by chance
    (slightly below: pairing each spike once finds a little fewer than the $2\nu\Delta
    N_{data}$ pairs the correction expects, -0.03 for two 20-Hz trains and 4 ms); negative
    values are worse than chance.

    **Arguments:**

    - `data`, `model`: spike times (ms), 1-D, in any order; NaNs (padding) are dropped.
    - `duration`: the span $T$ (ms) the trains were compared over, > 0.
    - `window`: $\Delta$ (ms), > 0; 4 ms is the usual choice for cortical neurons.

    **Returns:**

    $\Gamma$ (a float); NaN where it is undefined: neither train has a spike, or the model
    fires at or above $1/(2\Delta)$ (125 Hz for 4 ms), where the chance level reaches 1.
    """
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"coincidence_factor: `duration` must be > 0 ms, got {duration}.")
    if not (math.isfinite(window) and window > 0):
        raise ValueError(f"coincidence_factor: `window` must be > 0 ms, got {window}.")
    trains = []
    for name, x in (("data", data), ("model", model)):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if np.any(np.isinf(x)):
            raise ValueError(f"coincidence_factor: `{name}` has an infinite spike time.")
        trains.append(np.sort(x[~np.isnan(x)]))
    d, m = trains
    n_data, n_model = d.size, m.size
    rate = n_model / duration
    norm = 1.0 - 2.0 * rate * window
    if n_data + n_model == 0 or norm <= 0:
        return math.nan
    # One-to-one pairs within the window, closest first.
    gaps = np.abs(d[:, None] - m[None, :])
    rows, cols = np.nonzero(gaps <= window)
    used_d, used_m, coinc = set(), set(), 0
    for k in np.argsort(gaps[rows, cols], kind="stable"):
        a, b = int(rows[k]), int(cols[k])
        if a not in used_d and b not in used_m:
            used_d.add(a)
            used_m.add(b)
            coinc += 1
    chance = 2.0 * rate * window * n_data
    return float((coinc - chance) / (0.5 * (n_data + n_model) * norm))
