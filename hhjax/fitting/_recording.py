"""The [`Recording`][] type: one current-clamp sweep in hhjax's units.

Units: time ms, voltage mV, injected current µA/cm². Recordings in other units (s, V, pA, nA)
are converted once, here, with the membrane area stated.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..io import _first_non_increasing, _unit_problems

__all__ = [
    "CurrentSteps", "Recording", "current_steps", "estimate_noise", "estimate_series_resistance",
    "response_lag",
]

_T_SCALE = {"ms": 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3}
_V_SCALE = {"mV": 1.0, "V": 1e3, "uV": 1e-3, "µV": 1e-3}
# Density units (no area needed) and absolute units (converted with the area in cm²), in µA(/cm²).
_I_DENSITY = {"uA/cm2": 1.0, "µA/cm²": 1.0, "µA/cm2": 1.0, "mA/cm2": 1e3, "nA/cm2": 1e-3}
_I_ABSOLUTE = {"pA": 1e-6, "nA": 1e-3, "uA": 1.0, "µA": 1.0}
# Beyond these the numbers cannot be in the stated units (e.g. pA passed as µA/cm²).
_MAX_ABS_DENSITY = 1e4
_MAX_ABS_V = 500.0


def estimate_noise(v) -> float:
    """A robust estimate of white measurement noise (mV) on a finely sampled voltage trace.

    Second differences $v_{k+1} - 2v_k + v_{k-1}$ of white noise have variance $6\\sigma^2$;
    a smooth membrane signal barely contributes at sub-0.1 ms sampling, and the median
    absolute deviation ignores the few samples inside spikes.

    **Arguments:**

    - `v`: voltage samples (mV), shape `(samples,)`.

    **Returns:**

    The noise standard deviation (mV), a float.
    """
    v = np.asarray(v, dtype=np.float64)
    d2 = v[2:] - 2.0 * v[1:-1] + v[:-2]
    mad = np.median(np.abs(d2 - np.median(d2)))
    return float(1.482602218505602 * mad / np.sqrt(6.0))


class CurrentSteps(NamedTuple):
    """Where a sampled current steps ([`current_steps`][]): the one reading of a current's
    steps that every fitting path uses (the step protocol's window, the spike objectives'
    stimulus epoch, the voltage jumps behind the series-resistance estimate).

    - `holding`: the level before the first step (the median of the samples before the
      first clear jump; of the first 5 % when the sweep starts with one).
    - `noise`: robust standard deviation of the current's sample-to-sample noise (0 for a
      clean command; a recorded current channel has some).
    - `threshold`: a change counts above this: `max(8 noise, fraction × largest departure
      from holding)`.
    - `edges`: samples `k` where the current jumps, `|i[k+1] - i[k]| > threshold`.
    - `away`: samples away from `holding` by over `threshold`.
    """

    holding: float
    noise: float
    threshold: float
    edges: np.ndarray
    away: np.ndarray


def current_steps(i, fraction: float = 0.05) -> CurrentSteps:
    r"""Read the steps of a sampled current `i` (any units; a clean command or a noisy
    recorded channel, with or without a holding current): see [`CurrentSteps`][].

    The noise is $1.4826\,\mathrm{MAD}(\Delta i)/\sqrt 2$: steps are rare among the
    differences, so the median ignores them. A change must exceed 8 times it (a false step
    from Gaussian noise then needs a 5.7 σ difference) and `fraction` of the largest departure
    from the holding level (small test pulses and digitiser ripple below that are not steps).
    """
    i = np.asarray(i, dtype=np.float64)
    if i.ndim != 1 or i.size < 2:
        raise ValueError(f"current_steps: need a 1-D current of >= 2 samples, got {i.shape}.")
    d = np.diff(i)
    noise = 1.482602218505602 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0)
    # The holding level: the median before the first clear jump (a test pulse too small to be
    # one shifts it little), or of the first 5 % when the sweep starts with a jump.
    # A floor far below any step, so that a constant current has no steps (not every sample).
    floor = max(1e-9 * float(np.max(np.abs(i))), 1e-300)
    jumps = np.flatnonzero(np.abs(d) > max(8.0 * noise, fraction * float(np.max(np.abs(d))),
                                           floor))
    first = int(jumps[0]) + 1 if jumps.size else i.size
    holding = float(np.median(i[:first] if first >= 10 else i[: max(10, i.size // 20)]))
    departure = np.abs(i - holding)
    largest = float(np.max(departure))
    threshold = max(8.0 * noise, fraction * largest, floor)
    return CurrentSteps(holding, noise, threshold, np.flatnonzero(np.abs(d) > threshold),
                        np.flatnonzero(departure > threshold))


def _steps_of(i):
    """Samples `k` where the current jumps ([`current_steps`][]), and the jumps."""
    return current_steps(i).edges, np.diff(np.asarray(i, dtype=np.float64))


def response_lag(v, i, max_lag: int = 4) -> int:
    """Samples by which the recorded voltage's jumps follow the current's steps (0 to
    `max_lag`): digitisers and amplifiers often record the response one sample or more after
    the command changes (one sample in the shared 20-kHz files). 0 where the current never
    steps."""
    return _lag(np.asarray(v, dtype=np.float64), *_steps_of(i), max_lag)


def _lag(v, k, di, max_lag: int = 4) -> int:
    """[`response_lag`][] from the current's jump samples `k` and jumps `di`."""
    k = k[k + 2 + max_lag < v.size]
    if not k.size:
        return 0
    dv = np.diff(v)
    score = [np.sum(np.abs(dv[k + lag]) * np.abs(di[k])) for lag in range(max_lag + 1)]
    return int(np.argmax(score))


def onset_jumps(v, i, dt: float) -> tuple[float, int]:
    """`(rho, edges)`: the least-squares slope of the voltage jumps on the current's jumps
    (mV per unit of `i`) over the `edges` samples where the current steps
    ([`current_steps`][]). Each jump is the change over two samples, `response_lag`
    samples after the step (two, since an amplifier's filter spreads the jump: the shared
    20-kHz files put 80–85 % of it in the first sample), less the membrane's own charging
    over those samples, taken from the change over the four samples after them. A fit
    refines it."""
    v = np.asarray(v, dtype=np.float64)
    k, di = _steps_of(i)
    lag = _lag(v, k, di)
    k = k[(k >= 2) & (k + 6 + lag < v.size)]
    if not k.size:
        return 0.0, 0
    dv = (v[k + 2 + lag] - v[k + lag]) - 0.5 * (v[k + 6 + lag] - v[k + 2 + lag])
    return float(np.sum(dv * di[k]) / np.sum(di[k] ** 2)), int(k.size)


def estimate_series_resistance(recording) -> float:
    """The uncompensated series resistance (MΩ) that the voltage jumps at the current's steps
    imply: $R_s = \\sum \\Delta V\\,\\Delta I / \\sum \\Delta I^2$ over the steps (see
    [`Electrode`][]). Negative for an over-compensated bridge; 0 where the current never steps.

    **Arguments:**

    - `recording`: a [`Recording`][] read in absolute current units (pA, nA), whose `area`
      turns its current back into pA.
    """
    if getattr(recording, "area", None) is None:
        raise ValueError(
            "estimate_series_resistance: the recording's current is a density (no `area`); "
            "read it with i_units='pA' (or 'nA') and `area` to get R_s in MΩ.")
    rho, _ = onset_jumps(recording.v, recording.i_inj, recording.dt)
    return rho / (recording.area * 1e3)  # kΩ·cm² / cm² -> kΩ; / 1e3 -> MΩ


class Recording(eqx.Module):
    """One current-clamp sweep: times, membrane voltage and injected current.

    **Arguments:**

    - `t`: sample times, strictly increasing and uniformly spaced, shape `(samples,)`.
    - `v`: membrane potential at those times, shape `(samples,)`.
    - `i_inj`: the injected current at those times (depolarising positive), shape `(samples,)`.
      Taken as held constant from each sample to the next (what a digitised command is).
    - `sigma`: the measurement-noise standard deviation (mV). Default: estimated from `v`
      with [`estimate_noise`][].
    - `t_units`: `"ms"` (default), `"s"` or `"us"`.
    - `v_units`: `"mV"` (default) or `"V"`.
    - `i_units`: `"uA/cm2"` (default, also `"µA/cm²"`), `"nA/cm2"`, or an absolute unit
      `"pA"`, `"nA"`, `"uA"`, which needs `area`.
    - `area`: the membrane area in cm² (e.g. `1e-5` for 1000 µm²), to turn absolute
      currents into densities.
    - `metadata`: free-form information kept with the sweep (cell id, sweep number, file, ...).
    - `check_units`: refuse times and voltages whose size cannot be ms and mV after conversion
      (samples closer than 1 µs, or spanning under 5 ms at under 10 µs spacing: seconds; a
      voltage that never leaves ±1 mV: volts). Default `True`; `False` for data that really
      are that small.

    **Fields** (after conversion): `t` (ms), `v` (mV), `i_inj` (µA/cm²), `sigma` (mV), `dt` (ms),
    `metadata`, `area` (cm², the area an absolute current was converted with; `None` for a
    density).

    Bad input raises `ValueError` naming the argument: mismatched lengths, non-finite samples,
    times that are not strictly increasing or not uniform (to the resolution of their dtype:
    float32 times are accepted), and times, currents or voltages whose size cannot be in the
    stated units.
    """

    t: Array
    v: Array
    i_inj: Array
    sigma: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    metadata: dict = eqx.field(static=True)
    area: float | None = eqx.field(static=True)

    def __init__(
        self,
        t,
        v,
        i_inj,
        *,
        sigma: float | None = None,
        t_units: str = "ms",
        v_units: str = "mV",
        i_units: str = "uA/cm2",
        area: float | None = None,
        metadata: dict | None = None,
        check_units: bool = True,
    ):
        arrays = {}
        for name, x in (("t", t), ("v", v), ("i_inj", i_inj)):
            x = np.asarray(x)
            if x.ndim != 1:
                raise ValueError(
                    f"Recording: `{name}` must be one-dimensional, got shape {x.shape}."
                )
            if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
                raise TypeError(f"Recording: `{name}` must be real numbers, got dtype {x.dtype}.")
            arrays[name] = x.astype(np.float64)
        # The times' own resolution: float32 times are uniform only to float32 rounding.
        t_dtype = np.asarray(t).dtype
        t_eps = float(np.finfo(t_dtype if np.issubdtype(t_dtype, np.floating) else np.float64).eps)
        n = {k: a.shape[0] for k, a in arrays.items()}
        if len(set(n.values())) != 1:
            raise ValueError(
                "Recording: `t`, `v` and `i_inj` must have the same length, got "
                + ", ".join(f"{k}: {m}" for k, m in n.items())
                + "."
            )
        if n["t"] < 10:
            raise ValueError(f"Recording: need at least 10 samples, got {n['t']}.")
        for name, a in arrays.items():
            bad = np.flatnonzero(~np.isfinite(a))
            if bad.size:
                raise ValueError(
                    f"Recording: `{name}` has {bad.size} non-finite sample(s) (NaN/inf), first at "
                    f"index {bad[0]}; remove or interpolate them before fitting."
                )
        if t_units not in _T_SCALE:
            raise ValueError(
                f"Recording: `t_units` must be one of {sorted(_T_SCALE)}, got {t_units!r}."
            )
        if v_units not in _V_SCALE:
            raise ValueError(
                f"Recording: `v_units` must be one of {sorted(_V_SCALE)}, got {v_units!r}."
            )
        tt = arrays["t"] * _T_SCALE[t_units]
        vv = arrays["v"] * _V_SCALE[v_units]
        if i_units in _I_DENSITY:
            if area is not None:
                raise ValueError(
                    f"Recording: `area` is only used with absolute current units (pA, nA, uA); "
                    f"`i_units` is the density {i_units!r}."
                )
            ii = arrays["i_inj"] * _I_DENSITY[i_units]
        elif i_units in _I_ABSOLUTE:
            if area is None or not np.isfinite(area) or area <= 0:
                raise ValueError(
                    f"Recording: `i_units={i_units!r}` is an absolute current; pass the membrane "
                    f"`area` in cm² (> 0) to convert it to µA/cm², got area={area!r}."
                )
            ii = arrays["i_inj"] * _I_ABSOLUTE[i_units] / float(area)
        else:
            raise ValueError(
                f"Recording: `i_units` must be one of {sorted(_I_DENSITY) + sorted(_I_ABSOLUTE)}, "
                f"got {i_units!r}."
            )
        k = _first_non_increasing(tt)
        if k is not None:
            raise ValueError(
                f"Recording: `t` must be strictly increasing; t[{k + 1}] = {tt[k + 1]} ms follows "
                f"t[{k}] = {tt[k]} ms. Sort the samples (or check `t_units`)."
            )
        steps = np.diff(tt)
        dt = float((tt[-1] - tt[0]) / (tt.shape[0] - 1))
        problems = _unit_problems(tt, vv) if check_units else {}
        if "t" in problems:
            hint = "pass `t_units='s'`" if t_units == "ms" else f"check `t_units` (now {t_units!r})"
            raise ValueError(
                f"Recording: {problems['t']}; {hint} (or `check_units=False` if the values "
                "are right)."
            )
        # Rounding of each time is at most half an ulp: a spacing is off by at most one ulp of
        # the largest time; 4 ulps leave room for the unit conversion.
        resolution = 4.0 * t_eps * float(np.max(np.abs(tt)))
        # float32 times of a 10 s sweep at 50 kHz (dt 0.02 ms) are off by up to 2.4e-3 ms,
        # 12 % of dt; what matters is that the spacing is still recognisably uniform.
        if resolution > 0.25 * dt:
            start = "" if tt[0] == 0 else " (or start them at 0)"
            raise ValueError(
                f"Recording: `t` ({t_dtype}) cannot resolve the {dt:g} ms spacing at times up to "
                f"{float(np.max(np.abs(tt))):g} ms; pass float64 times{start}."
            )
        if np.max(np.abs(steps - dt)) > 1e-6 * dt + 1e-9 + resolution:
            raise ValueError(
                f"Recording: `t` must be uniformly sampled (fits integrate on the sample grid); "
                f"spacing ranges over [{steps.min()}, {steps.max()}] ms. Resample first."
            )
        if np.max(np.abs(ii)) > _MAX_ABS_DENSITY:
            raise ValueError(
                f"Recording: `i_inj` reaches {np.max(np.abs(ii)):.3g} µA/cm², which cannot be a "
                f"current density; is it in pA or nA? Pass `i_units='pA'` (or 'nA') and `area` "
                f"(cm²)."
            )
        if np.max(np.abs(vv)) > _MAX_ABS_V:
            raise ValueError(
                f"Recording: `v` reaches {np.max(np.abs(vv)):.3g} mV; check `v_units` "
                f"(now {v_units!r})."
            )
        if "v" in problems:
            hint = "pass `v_units='V'`" if v_units == "mV" else f"check `v_units` (now {v_units!r})"
            raise ValueError(
                f"Recording: {problems['v']}; {hint} (or `check_units=False` if the values "
                "are right)."
            )
        if sigma is None:
            sigma = estimate_noise(vv)
            # A noiseless (synthetic) trace: fall back to a tiny positive scale.
            sigma = max(sigma, 1e-6)
        sigma = float(sigma)
        if not np.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"Recording: `sigma` must be a positive number of mV, got {sigma!r}.")
        self.t = jnp.asarray(tt)
        self.v = jnp.asarray(vv)
        self.i_inj = jnp.asarray(ii)
        self.sigma = sigma
        self.dt = dt
        self.metadata = dict(metadata or {})
        # The area an absolute current was converted with (None for densities): objectives
        # that fit a model's own `area` rescale the current by area / model.area.
        self.area = float(area) if i_units in _I_ABSOLUTE else None

    @property
    def t0(self) -> float:
        """The first sample time (ms)."""
        return float(self.t[0])

    @property
    def t1(self) -> float:
        """The last sample time (ms)."""
        return float(self.t[-1])

    @property
    def num_samples(self) -> int:
        return int(self.t.shape[0])

    def __repr__(self) -> str:
        return (
            f"Recording({self.num_samples} samples, {self.t0:g}–{self.t1:g} ms, dt={self.dt:g} ms, "
            f"sigma={self.sigma:.3g} mV)"
        )
