"""What a fit minimises: the objective objects of [`fit`][] and the spike features they use.

Units: ms, mV, µA/cm² (pA for recordings read in absolute units, see [`Recording`][]).

- [`LeastSquares`][] (the default): the whole trace, $\\sum_t (v_{sim} - v_{obs})^2/\\sigma^2$,
  simulated on the sample grid, Levenberg–Marquardt or Optax, Gauss–Newton intervals.
- [`SpikeFeatures`][]: spike count, first-spike latency, mean inter-spike interval, resting
  potential, and optionally the steady-state voltage, spike height and after-hyperpolarisation,
  of each recording's response to its stimulus epoch; the subthreshold recordings by their
  whole trace. Counts are integers, so this loss has no useful gradient in the parameters that
  move spikes: it is searched with [`CrossEntropy`][] (a vmapped population), whose final
  polish descends the gradient of the smooth part (the subthreshold traces).
- [`SpikeTiming`][]: the squared differences between the model's and the recording's spike
  times (each crossing time interpolated between samples, hence differentiable while the
  counts agree), plus a penalty per missing or extra spike.

The spike-based objectives simulate each recording with exponential Euler at their own `dt`
([`hhjax.AbstractModel.exp_euler_step`][]), from rest under the recording's first current
sample. A recording read in absolute current units (pA, nA) is simulated with the model's own
`area` where the model has one (so `area` can be fitted: the density is $I/\\text{area}$).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._features import _crossings
from ..models._stepper import integrate
from ._recording import current_steps

__all__ = [
    "AbstractObjective", "LeastSquares", "SpikeFeatures", "SpikeTiming", "SweepFeatures",
    "data_features", "crossing_times", "stimulus_epoch", "adaptive_threshold",
]


class AbstractObjective(eqx.Module):
    """What a fit minimises. `name` is the objective's string alias (`hhjax fit --objective`)."""

    name = "abstract"


class LeastSquares(AbstractObjective):
    """The whole-trace least squares (the default): residuals $(v_{sim} - v_{obs})/\\sigma$ at
    every sample, solved by [`LevenbergMarquardt`][] or [`Optax`][], with Gauss–Newton
    intervals."""

    name = "trace"


class SpikeFeatures(AbstractObjective):
    """Spike features of each recording's response to its stimulus epoch (see
    [`stimulus_epoch`][]); solved by [`CrossEntropy`][].

    Per recording that spikes: `count_weight` × (model count − data count)², ((latency
    difference) / `latency_scale` ms)², ((log ratio of the mean ISIs) / `isi_scale`)² when the
    data fire twice or more, ((resting potential difference) / `rest_scale` mV)², and, when
    their scales are given (default `None`: off), the steady-state voltage over the last
    `steady_window` ms of the epoch, the spike height (peak voltage) and the
    after-hyperpolarisation (lowest voltage between the first and last spike). Per recording
    that does not spike: (RMS trace difference / `trace_scale` mV)² + `count_weight` × (model
    count)². Spikes are upward crossings of `threshold` mV; in the data a crossing counts only
    after the voltage fell below `rearm` mV since the last one (noise on a plateau is not a
    spike). `threshold="auto"` reads both off each recording ([`adaptive_threshold`][]) and
    uses that threshold for the model on that recording too. The defaults weigh 5 ms of
    latency, 10 % of ISI, 0.5 mV of rest and 0.5 mV RMS of subthreshold trace alike, and one
    spike too many or too few ten times that.

    - `dt`: the exponential-Euler step (ms) of the simulations.
    """

    name = "features"
    dt: float = 0.1
    threshold: float | str = 0.0
    rearm: float = -3.0
    count_weight: float = 10.0
    latency_scale: float = 5.0
    isi_scale: float = 0.1
    rest_scale: float = 0.5
    trace_scale: float = 0.5
    steady_scale: float | None = None
    height_scale: float | None = None
    ahp_scale: float | None = None
    steady_window: float = 100.0


class SpikeTiming(AbstractObjective):
    """Spike times: $\\sum_k ((t^{model}_k - t^{data}_k)/\\tau)^2$ over the recording's spikes
    in order (a model spike that is missing counts at the recording's end) plus
    `count_weight` × (count difference)²; a recording without spikes adds its whole trace,
    (RMS difference / `trace_scale` mV)² (`None`: off), which is what pins the passive
    parameters. Crossing times are interpolated between steps, so the loss is differentiable
    in every parameter while the counts agree; solved by [`CrossEntropy`][], whose polish
    follows that gradient.

    - `dt`: exponential-Euler step (ms); `None` (default): each recording's sampling interval.
    - `threshold`, `rearm`: spike detection (mV), as in [`SpikeFeatures`][].
    - `tau`: the timing scale (ms).
    """

    name = "spike-timing"
    dt: float | None = None
    threshold: float | str = 0.0
    rearm: float = -3.0
    tau: float = 1.0
    count_weight: float = 10.0
    trace_scale: float | None = 0.5


OBJECTIVES = {c.name: c for c in (LeastSquares, SpikeFeatures, SpikeTiming)}


def resolve_objective(objective) -> AbstractObjective:
    """An objective object from an object, its string alias or `None` (least squares)."""
    if objective is None:
        return LeastSquares()
    if isinstance(objective, str) and objective in OBJECTIVES:
        return OBJECTIVES[objective]()
    if isinstance(objective, AbstractObjective) and type(objective) is not AbstractObjective:
        for f in ("dt", "tau", "latency_scale", "isi_scale", "rest_scale", "trace_scale",
                  "steady_scale", "height_scale", "ahp_scale", "steady_window"):
            x = getattr(objective, f, None)
            if x is not None and not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0):
                raise ValueError(f"`objective.{f}` must be a positive number, got {x!r}.")
        w = getattr(objective, "count_weight", 0.0)
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ValueError(f"`objective.count_weight` must be a number >= 0, got {w!r}.")
        threshold = getattr(objective, "threshold", 0.0)
        if isinstance(threshold, str) and threshold != "auto":
            raise ValueError(f"`objective.threshold` must be a number of mV or 'auto', got "
                             f"{threshold!r}.")
        if not isinstance(threshold, str) and getattr(objective, "rearm", -math.inf) > threshold:
            raise ValueError(
                f"`objective.rearm` ({objective.rearm} mV) must lie below "
                f"`objective.threshold` ({objective.threshold} mV).")
        return objective
    raise ValueError(
        "`objective` must be LeastSquares(), SpikeFeatures(...), SpikeTiming(...) or one of "
        f"{tuple(OBJECTIVES)}, got {objective!r}.")


# ---------------------------------------------------------------------------- data side
@dataclasses.dataclass(frozen=True)
class SweepFeatures:
    """Features of one response: `rest` (mV, mean before the epoch), `steady` (mV, mean of
    the epoch's last 100 ms), `count` (spikes from the epoch onset to the end), `latency` (ms
    from onset to the first spike, nan if none), `isi` (mean ISI in ms, nan if fewer than two
    spikes), `height` (mV, the highest voltage after onset, nan if no spike), `ahp` (mV, the
    lowest voltage between the first and last spike, nan if fewer than two)."""

    rest: float
    steady: float
    count: int
    latency: float
    isi: float
    height: float = math.nan
    ahp: float = math.nan


SPIKE_SPAN = 20.0
"""mV: the least rise of a spike above the lowest voltage of the 5 ms before it
([`adaptive_threshold`][])."""

SPIKE_WIDTH = 10.0
"""ms: with `threshold="auto"`, a crossing is a spike only if the voltage falls back below the
threshold within this time. A threshold read off a trace can lie between two sustained levels
(a hyperpolarising step and the rest after it); a return to rest is not a spike."""


def _running_min(x, w):
    """`out[k] = min(x[k - w + 1 .. k])` (fewer at the start), in O(n log w)."""
    out, span = x.copy(), 1
    while span < w:
        step = min(span, w - span)
        out = np.minimum(out, np.concatenate([np.full(step, np.inf), out[:-step]]))
        span += step
    return out


def adaptive_threshold(t, v) -> tuple[float, float]:
    """`(threshold, rearm)` (mV) read off a recording's spikes.

    Spikes are local maxima that rise at least `SPIKE_SPAN` mV above the lowest voltage of the
    5 ms before them and fall back by half that within the 5 ms after (a slow return to rest
    after a hyperpolarising step is not one). The threshold lies halfway, the re-arm level a
    quarter of the way, from their typical foot (median of those minima) to their typical
    peak: spikes that peak below 0 mV (small spikes, a coarsely sampled upstroke at 4–10 kHz,
    an offset) are counted. With no spike, the threshold is `SPIKE_SPAN / 2` above the
    highest sample: a model spike still crosses it, a model sitting a little above the data
    does not."""
    t, v = np.asarray(t, dtype=np.float64), np.asarray(v, dtype=np.float64)
    dt = float(t[1] - t[0]) if t.size > 1 else 1.0
    w = max(1, int(round(5.0 / dt)))
    before = _running_min(v, w)
    after = _running_min(v[::-1], w)[::-1]
    peak = np.zeros(v.size, bool)
    peak[1:-1] = (v[1:-1] >= v[:-2]) & (v[1:-1] > v[2:])
    spikes = (peak & (v - before >= SPIKE_SPAN) & (v - after >= 0.5 * SPIKE_SPAN))
    if not spikes.any():
        top = float(np.max(v)) + 0.5 * SPIKE_SPAN
        return top, top - 0.25 * SPIKE_SPAN
    top, foot = float(np.median(v[spikes])), float(np.median(before[spikes]))
    return foot + 0.5 * (top - foot), foot + 0.25 * (top - foot)


def _detection(threshold, rearm, t, v, max_width=None):
    """`(threshold, rearm, max_width)` for a trace: as given, or read off it for "auto"."""
    if isinstance(threshold, str):
        if threshold != "auto":
            raise ValueError(f"`threshold` must be a number of mV or 'auto', got {threshold!r}.")
        return (*adaptive_threshold(t, v), SPIKE_WIDTH if max_width is None else max_width)
    return float(threshold), float(rearm), max_width


def _brief(t, v, k, threshold, max_width):
    """Of the crossings `k`, those after which `v` is back below `threshold` within
    `max_width` ms (all of them for `None`)."""
    if max_width is None or not len(k):
        return k
    below = np.flatnonzero(v < threshold)
    nxt = np.searchsorted(below, k + 1)
    ok = nxt < below.size
    ok[ok] = t[below[nxt[ok]]] - t[k[ok]] <= max_width
    return k[ok]


def crossing_times(t, v, threshold: float | str = 0.0, rearm: float = -3.0, *,
                   max_width: float | None = None) -> np.ndarray:
    """Upward crossings of `threshold` (mV) in a *recording* (the crossing of
    [`hhjax.spike_times`][], which serves simulated traces: noise-free, no re-arming, cubic
    refinement), linearly interpolated, each counted only after
    `v` fell below `rearm` mV since the previous one (recording noise on a plateau near the
    threshold, e.g. in depolarisation block, is not a train of spikes), and with `max_width`
    (ms) only if `v` is back below the threshold that soon. `threshold="auto"`: threshold and
    re-arm level from the trace ([`adaptive_threshold`][]; `rearm` is then ignored) and
    `max_width` `SPIKE_WIDTH` unless given."""
    t, v = np.asarray(t, dtype=np.float64), np.asarray(v, dtype=np.float64)
    threshold, rearm, max_width = _detection(threshold, rearm, t, v, max_width)
    k = _brief(t, v, np.flatnonzero(_crossings(v, threshold)), threshold, max_width)
    below = np.flatnonzero(v < rearm)
    keep, last = [], -1
    for j in k:
        if not keep or (below.size and np.any((below > last) & (below <= j))):
            keep.append(j)
            last = j
    k = np.asarray(keep, dtype=int)
    return t[k] + (threshold - v[k]) * (t[k + 1] - t[k]) / (v[k + 1] - v[k])


def data_features(t, v, t_on, t_off, *, threshold: float | str = 0.0, rearm: float = -3.0,
                  steady_window: float = 100.0, max_width: float | None = None
                  ) -> SweepFeatures:
    """[`SweepFeatures`][] of a trace `v` (mV) at times `t` (ms), stimulus epoch
    `[t_on, t_off)`; spikes as in [`crossing_times`][] (`threshold="auto"` adapts to the
    trace)."""
    t, v = np.asarray(t, dtype=np.float64), np.asarray(v, dtype=np.float64)
    threshold, rearm, max_width = _detection(threshold, rearm, t, v, max_width)
    spikes = crossing_times(t, v, threshold, rearm, max_width=max_width)
    spikes = spikes[spikes >= t_on]
    before = t < t_on
    rest = float(np.mean(v[before])) if before.any() else float(v[0])
    sel = (t >= t_off - steady_window) & (t < t_off)
    steady = float(np.mean(v[sel])) if sel.any() else math.nan
    latency = float(spikes[0] - t_on) if spikes.size else math.nan
    isi = float(np.mean(np.diff(spikes))) if spikes.size > 1 else math.nan
    height = float(np.max(v[t >= t_on])) if spikes.size else math.nan
    between = (t > spikes[0]) & (t < spikes[-1]) if spikes.size > 1 else None
    ahp = float(np.min(v[between])) if between is not None and between.any() else math.nan
    return SweepFeatures(rest, steady, int(spikes.size), latency, isi, height, ahp)


def stimulus_epoch(i_inj, t) -> tuple[float, float]:
    """`(t_on, t_off)` (ms, from the recording's start) of the stimulus: from the first sample
    whose current departs from the holding level by over 10 % of the largest departure (and
    8 times the current's noise; [`current_steps`][]), to the sample after the last such one.
    Raises `ValueError` for a current that never steps."""
    t = np.asarray(t, dtype=np.float64)
    on = current_steps(i_inj, fraction=0.1).away
    if not on.size:
        raise ValueError(
            "the injected current never changes, so there is no stimulus epoch to measure "
            "spike features against; fit such a recording with objective=LeastSquares().")
    k0, k1 = int(on[0]), min(int(on[-1]) + 1, len(t) - 1)
    return float(t[k0] - t[0]), float(t[k1] - t[0])


# ---------------------------------------------------------------------------- model side
class _Prepared(eqx.Module):
    """One recording as a spike objective sees it (all static but the arrays)."""

    i_rec: jnp.ndarray          # the recorded current density (µA/cm²) at the samples
    index: np.ndarray    # sample held at each simulation step
    v_grid: np.ndarray   # data voltage on the simulation grid
    spikes: tuple = eqx.field(static=True)       # data spike times (ms)
    feats: SweepFeatures = eqx.field(static=True)
    t_on: float = eqx.field(static=True)
    t_off: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    area: float | None = eqx.field(static=True)
    threshold: float = eqx.field(static=True)  # mV, for the data and the model alike
    max_width: float | None = eqx.field(static=True)  # ms (see SPIKE_WIDTH), or None


def prepare(objective, recs) -> list[_Prepared]:
    """The static data of each recording for a spike objective (`ValueError` naming the
    recording where one cannot be used)."""
    out = []
    for j, rec in enumerate(recs):
        t = np.asarray(rec.t, dtype=np.float64) - float(rec.t[0])
        v = np.asarray(rec.v, dtype=np.float64)
        dt = float(objective.dt) if objective.dt is not None else float(rec.dt)
        steps = int(round(t[-1] / dt))
        if steps < 2:
            raise ValueError(f"`recordings[{j}]` spans {t[-1]:g} ms, under two steps of "
                             f"objective.dt = {dt:g} ms.")
        t_mid = (np.arange(steps) + 0.5) * dt
        index = np.minimum(np.floor(t_mid / rec.dt + 1e-9).astype(int), len(t) - 1)
        try:
            t_on, t_off = stimulus_epoch(rec.i_inj, t)
        except ValueError as e:
            if objective.name == "features":
                raise ValueError(f"`recordings[{j}]`: {e}") from None
            t_on, t_off = 0.0, float(t[-1])
        window = getattr(objective, "steady_window", 100.0)
        threshold, rearm, width = _detection(objective.threshold, objective.rearm, t, v)
        feats = data_features(t, v, t_on, t_off, threshold=threshold, rearm=rearm,
                              steady_window=window, max_width=width)
        spikes = crossing_times(t, v, threshold, rearm, max_width=width)
        grid = np.arange(steps + 1) * dt
        out.append(_Prepared(
            i_rec=rec.i_inj, index=index, v_grid=np.interp(grid, t, v),
            spikes=tuple(float(s) for s in spikes), feats=feats, t_on=t_on, t_off=t_off,
            dt=dt, area=rec.area, threshold=threshold, max_width=width))
    return out


def simulate_on(params, prep: _Prepared):
    """The model's voltage (mV) on the objective's grid for one prepared recording, from rest
    under the first current sample."""
    return _simulate(params, prep.i_rec[jnp.asarray(prep.index)], prep.dt, prep.area)


def _simulate(params, i, dt, area):
    if area is not None and "area" in params.field_names:
        i = i * (area / params.area)  # the current in pA over the model's own area
    return integrate(params, i, dt, params.rest_state(i[0]))


_simulate_jit = eqx.filter_jit(_simulate)


def _model_spikes(v, dt, threshold, max_width=None):
    t = jnp.arange(v.shape[-1]) * dt
    cross = _crossings(v, threshold)
    if max_width is not None:
        # Back below the threshold within `max_width`: a count of the samples below it over
        # the following window (cumulative sums: linear in the trace's length).
        w = max(1, int(round(max_width / dt)))
        below = jnp.concatenate([jnp.zeros(1), jnp.cumsum(v < threshold)])
        k = jnp.arange(v.shape[-1] - 1)
        ahead = below[jnp.minimum(k + 1 + w, v.shape[-1])] - below[k + 1]
        cross = cross & (ahead > 0)
    frac = jnp.clip((threshold - v[:-1]) / (v[1:] - v[:-1] + 1e-12), 0.0, 1.0)
    return t, cross, t[:-1] + frac * dt


def _features_term(obj: SpikeFeatures, v, p: _Prepared):
    f = p.feats
    t, cross, tc = _model_spikes(v, p.dt, p.threshold, p.max_width)
    cross = cross & (t[:-1] >= p.t_on)
    count = jnp.sum(cross)
    big = 10.0 * (p.t_off - p.t_on)
    first = jnp.min(jnp.where(cross, tc, big))
    last = jnp.max(jnp.where(cross, tc, -big))
    if f.count == 0:
        rms = jnp.sqrt(jnp.mean((v - p.v_grid) ** 2))
        # A model that spikes on a subthreshold recording pays per spike on top of the trace.
        return (rms / obj.trace_scale) ** 2 + obj.count_weight * count**2
    loss = obj.count_weight * (count - f.count) ** 2
    lat = jnp.where(count > 0, first - p.t_on, p.t_off - p.t_on)
    loss = loss + ((lat - f.latency) / obj.latency_scale) ** 2
    if f.count > 1:
        isi = (last - first) / jnp.maximum(count - 1, 1)
        ratio = jnp.log(jnp.maximum(isi, 1e-3) / f.isi)
        loss = loss + jnp.where(count > 1, (ratio / obj.isi_scale) ** 2, 25.0)
    loss = loss + ((v[0] - f.rest) / obj.rest_scale) ** 2
    if obj.steady_scale is not None and np.isfinite(f.steady):
        sel = (t >= p.t_off - obj.steady_window) & (t < p.t_off)
        steady = jnp.sum(jnp.where(sel, v, 0.0)) / jnp.maximum(jnp.sum(sel), 1)
        loss = loss + ((steady - f.steady) / obj.steady_scale) ** 2
    if obj.height_scale is not None:
        height = jnp.max(jnp.where(t >= p.t_on, v, -jnp.inf))
        loss = loss + ((height - f.height) / obj.height_scale) ** 2
    if obj.ahp_scale is not None and f.count > 1:
        between = (t > first) & (t < last)
        ahp = jnp.min(jnp.where(between, v, jnp.inf))
        loss = loss + jnp.where(count > 1, ((ahp - f.ahp) / obj.ahp_scale) ** 2, 25.0)
    return loss


def _timing_term(obj: SpikeTiming, v, p: _Prepared):
    _, cross, tc = _model_spikes(v, p.dt, p.threshold, p.max_width)
    count = jnp.sum(cross)
    loss = obj.count_weight * (count - len(p.spikes)) ** 2
    if p.spikes:
        rank = jnp.cumsum(cross) - 1
        which = cross[None, :] & (rank[None, :] == jnp.arange(len(p.spikes))[:, None])
        t_model = jnp.sum(jnp.where(which, tc[None, :], 0.0), axis=-1)
        t_end = (v.shape[-1] - 1) * p.dt
        t_model = jnp.where(jnp.any(which, axis=-1), t_model, t_end)
        loss = loss + jnp.sum(((t_model - jnp.asarray(p.spikes)) / obj.tau) ** 2)
    elif obj.trace_scale is not None:
        loss = loss + jnp.mean((v - p.v_grid) ** 2) / obj.trace_scale**2
    return loss


def make_loss(objective, preps, spec, base):
    """`(loss, smooth)`: $\\theta \\mapsto$ the objective's value, and the part of it whose
    gradient the final polish follows (`None` when there is none: a features fit with no
    subthreshold recording). An unsimulable model has an infinite loss, never a number a
    search could take for a poor fit."""
    term = _features_term if objective.name == "features" else _timing_term

    def total(theta, which=None):
        p = spec.apply(theta, base)
        loss, finite = 0.0, True
        for k, prep in enumerate(preps):
            if which is not None and k not in which:
                continue
            v = simulate_on(p, prep)
            finite = finite & jnp.all(jnp.isfinite(v))
            loss = loss + term(objective, v, prep)
        return jnp.where(finite, loss, jnp.inf)

    if objective.name == "features":
        quiet = {k for k, p in enumerate(preps) if p.feats.count == 0}
        smooth = (lambda th: total(th, quiet)) if quiet else None
    else:
        smooth = total
    return total, smooth


def model_trace(params, prep: _Prepared, t):
    """The model's voltage (mV) at the recording's sample times `t` (ms from its start):
    the objective's own simulation, interpolated."""
    v = np.asarray(_simulate_jit(params, prep.i_rec[jnp.asarray(prep.index)], prep.dt,
                                 prep.area))
    grid = np.arange(v.shape[0]) * prep.dt
    return np.interp(np.asarray(t), grid, v)
