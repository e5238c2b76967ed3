"""`fit`: estimate model parameters from current-clamp recordings.

Units: ms, mV, µA/cm², mS/cm², µF/cm².

The default pipeline ("lm") is the one that recovers conductances reliably and fast:

1. a start that needs no guess: the linear initialiser of Huys, Ahrens & Paninski (2006)
   ([`linear_estimate`][]), or the better of it and `params0`;
2. Levenberg–Marquardt on the whole-trace residuals $(v_{sim} - v_{obs})/\\sigma$, simulated on the
   sample grid ([`simulate_grid`][]) with forward-mode Jacobians;
3. uncertainty from the Gauss–Newton curvature at the optimum: $\\mathrm{cov} = s^2 (J^T J)^{-1}$
   for white noise (default), or the sandwich $H^{-1} \\Omega H^{-1}$ ($H = J^T J$) with a
   kernel estimate of the residuals' autocovariance in $\\Omega$ when the noise is
   correlated in time (`noise="correlated"`); a fit whose residuals say the white-noise
   intervals are too narrow warns.

Fallbacks for when no good start exists: annealed nudging (`init="nudge"`) and vmapped
multi-start (`init="multistart"`). `method="optax"` runs a first-order Optax loop instead
(progress bar, gradient clipping, early stopping, checkpoint and resume).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _scale
from .._scale import _available_cores, _map_in_threads
from .._simulate import SimulationError
from ..models._hh import HHParams
from . import _population
from ._config import (
    NUDGE_SCHEDULE,
    CrossEntropy,
    Electrode,
    Guess,
    MultiStart,
    Nudge,
    resolve_init,
    resolve_solver,
)
from ._core import ELECTRODE, Y0_MODES, _core, _core_jit, _schedule
from ._free import DEFAULT_FREE, FreeParams
from ._free import check_count as _count
from ._free import check_real as _real
from ._linear import linear_fields
from ._objectives import make_loss, model_trace, prepare, resolve_objective
from ._recording import Recording, onset_jumps

__all__ = ["FitResult", "Trace", "fit", "fit_batch", "INITS", "NOISE_MODELS"]

MAX_ITER = 100
"""The default LM iteration cap. Most fits converge in 6–12 iterations, but a start far down a
curved valley needs 40–50: at a cap of 40, 6 of 60 random-step HH fits (protocol study, σ = 1
mV) stopped 4–24 standard errors from their optimum and their intervals missed the truth; at
100 all converged (44–49 iterations) with |z| < 2. The loop ends at convergence, so the cap
costs only the fits that need it."""

INITS = ("auto", "linear", "guess", "nudge", "multistart")
NOISE_MODELS = ("white", "correlated")
_WARN_SE_RATIO = 1.5  # warn when correlated-noise SEs exceed the white-noise ones by this
_FALLBACK_INITS = ("auto", "linear", "guess")
_Z95 = 1.959963984540054
"""Default nudging strengths (1/ms) for `init="nudge"`; the un-nudged LM polish follows.

The first stage must be strong: at 30/ms the simulated voltage follows the data closely, the
gates see nearly the recorded voltage, and the fit is close to the linear current-balance
problem, which has one minimum. Starting at 10/ms left 2 of 20 starts ×3 off the truth in a
minimum with the leak conductance near zero and E_L far off (fitting/results/summary.md)."""


class Trace(eqx.Module):
    """The model simulated at the fitted parameters on one recording's sample grid.

    **Fields:** `ts` (ms), `v` (mV, the fit), `v_data` (mV, the recording), `i_inj` (µA/cm²),
    `residual` (mV, `v_data - v`). For the gates, simulate `result.params` with
    [`simulate_grid`][] (`full=True`) or [`hhjax.simulate`][].
    """

    ts: jax.Array
    v: jax.Array
    v_data: jax.Array
    i_inj: jax.Array
    residual: jax.Array


@dataclasses.dataclass
class FitResult:
    """What [`fit`][] returns.

    **Fields:**

    - `params`: the fitted model (same type as `params0`, e.g. [`hhjax.HHParams`][]).
    - `free`: the names of the fitted fields.
    - `values`: `{name: fitted value}` (natural units), for the free fields and the nuisance
      coordinates (`nuisance`: each recording's initial voltage `v0`, or `v0[k]`, with
      `y0="fit"`).
    - `stderr`: `{name: standard error}`; `ci`: `{name: (low, high)}`, the 95 % interval
      value ± 1.96 SE (Gauss–Newton curvature at the optimum; for `noise="correlated"`, the
      sandwich with the residuals' estimated autocovariance).
    - `noise`: the noise model of `stderr` (`"white"` or `"correlated"`).
    - `se_ratio`: `{name: correlated-noise SE / white-noise SE}`, both from this fit's
      residuals: ≈ 1 when the residuals are white; well above 1 when they are correlated in
      time (coloured recording noise or model mismatch), and then the white-noise intervals
      are too narrow by that factor.
    - `residual_lag1`: lag-1 autocorrelation of the residuals (0 for white noise).
    - `cov`, `corr`: covariance (natural units) and correlation matrices, ordered as `free`
      then `nuisance`.
    - `poorly_identified`: names whose relative SE exceeds 50 % (5 mV for potentials) or whose
      curvature is singular.
    - `condition_number`: of the correlation-scaled $J^T J$.
    - `sigma`: the noise level (mV): the residuals' standard deviation by default
      (`sigma_from="residuals"`), else the recordings' stated one.
    - `loss_history`: per iteration/step, mean squared residual in units of each recording's
      $\\sigma^2$ (≈ 1 at a good fit when $\\sigma$ is right); `inf` where the model could not
      be simulated.
    - `trace`: a [`Trace`][] (a list of them for several recordings).
    - `start`: the model the optimiser started from; `n_iter`, `converged`, `wall_time` (s),
      `method`, `init`; `fallback_used`: whether the nudging fallback replaced the first fit.
    - `stages`: what the fit did, in order: its start (`"linear"`, `"guess"`, `"nudge"`,
      `"multistart"`), `"lm"`, then `"nudging"` when the nudging refit ran (`fallback_used`
      says whether it was kept) and `"multistart"` when the escalation ran (`escalated` says
      whether it was kept).
    - `noise_floor`: the final mean squared residual in units of the recordings' $\\sigma^2$
      (1 ± a few $\\sqrt{2/n}$ at a fit that explains everything but the noise, when $\\sigma$
      is right; [`estimate_noise`][] gives it for white noise).
    - `at_noise_floor`: whether the fit looks converged to the noise floor: `noise_floor` at
      most `1 + max(0.1, 5\\sqrt{2/n})` and the residuals white (|`residual_lag1`| < 0.1).
      `False` means: do not trust these values or their intervals before looking at the trace
      (a local minimum, a model that cannot follow the data, or a misstated $\\sigma$).
    - `objective`: the objective's name (`"trace"`, `"features"`, `"spike-timing"`); `loss`: its
      final value (for `"trace"`, the same as `noise_floor`). A spike objective's fit has no
      Gauss–Newton intervals: its `stderr`, `ci`, `cov` are NaN, and its `trace` is the
      objective's own simulation at the sample times.
    - `electrode`: with a recording model ([`Electrode`][]), its fitted values and standard
      errors: `rho_s` (kΩ·cm²), `tau_e` (ms), `v_offset` (mV), `i_hold` (µA/cm²), each with
      `_se`, and
      `r_s_mohm`, `i_hold_pA` where the recordings were read in absolute units (their
      `area`); `{}` without one. The same coordinates are in `values`, `stderr`, `ci`.
    - `details`: what a preset adds (e.g. [`fit_steps`][]: the passive start estimate and the
      training sweep numbers, also as `.passive` and `.sweeps`; `.model` and `.history` are
      aliases of `params` and `loss_history`).
    - `ok`: whether the model could be simulated at the returned parameters (finite residuals).
      `False` only with `throw=False` (else the fit raises): then `params` is where the fit
      gave up, not an estimate, and `sigma`, `stderr` and `trace` are not finite.
    """

    params: eqx.Module
    free: tuple[str, ...]
    values: dict
    stderr: dict
    ci: dict
    cov: np.ndarray
    corr: np.ndarray
    poorly_identified: tuple[str, ...]
    condition_number: float
    sigma: float
    loss_history: np.ndarray
    trace: Trace | list
    start: eqx.Module
    n_iter: int
    converged: bool
    wall_time: float
    method: str
    init: str
    fallback_used: bool = False
    noise: str = "white"
    se_ratio: dict = dataclasses.field(default_factory=dict)
    residual_lag1: float = 0.0
    ok: bool = True
    nuisance: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    escalated: bool = False
    noise_floor: float = float("nan")
    at_noise_floor: bool = False
    objective: str = "trace"
    loss: float = float("nan")
    details: dict = dataclasses.field(default_factory=dict)
    electrode: dict = dataclasses.field(default_factory=dict)

    @property
    def model(self) -> eqx.Module:
        """The fitted model (`params`; the name the step-protocol preset [`fit_steps`][] used)."""
        return self.params

    @property
    def history(self) -> list:
        """`loss_history` as a list (the step-protocol preset's name)."""
        return list(np.asarray(self.loss_history))

    @property
    def passive(self) -> dict:
        """The passive start estimate of a [`fit_steps`][] fit (`details["passive"]`)."""
        return self.details.get("passive", {})

    @property
    def sweeps(self) -> list:
        """The sweep numbers a [`fit_steps`][] fit trained on (`details["sweeps"]`)."""
        return self.details.get("sweeps", [])

    def summary(self) -> str:
        """A small text table of values, standard errors and intervals, under a line that
        says whether the fit reached the noise floor and what it did to get there."""
        lines = [f"{'field':>8} {'value':>12} {'stderr':>10} {'95% CI':>26}"]
        if not self.ok:
            lines.insert(0, "FAILED: the model could not be simulated; these are not estimates")
        else:
            verdict = ("at the noise floor" if self.at_noise_floor else
                       "NOT at the noise floor: a local minimum or a model that cannot follow "
                       "the data; check the trace before trusting these values")
            if self.objective != "trace":
                lines.insert(0, f"{self.objective} objective: loss {self.loss:.4g} "
                                "(no Gauss-Newton intervals for this objective)")
            lines.insert(0, f"loss {self.noise_floor:.3g} sigma^2, residual lag-1 "
                            f"{self.residual_lag1:+.2f}: {verdict} "
                            f"(stages: {' > '.join(self.stages) or 'n/a'})")
        e = self.electrode
        if "r_s_mohm" in e:
            lines.insert(1 if self.ok else 0,
                         f"electrode: R_s {e['r_s_mohm']:.3g} ± {e['r_s_mohm_se']:.2g} MOhm")
        for n in (*self.free, *self.nuisance):
            lo, hi = self.ci[n]
            flag = "  (poorly identified)" if n in self.poorly_identified else ""
            lines.append(
                f"{n:>8} {self.values[n]:12.5g} {self.stderr[n]:10.3g} "
                f"[{lo:11.5g}, {hi:11.5g}]{flag}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------- pieces
def _as_recordings(recordings) -> list[Recording]:
    if isinstance(recordings, Recording):
        return [recordings]
    if isinstance(recordings, (list, tuple)) and recordings:
        for k, r in enumerate(recordings):
            if not isinstance(r, Recording):
                raise TypeError(
                    f"`recordings[{k}]` must be an hhjax.fitting.Recording, got {type(r).__name__}."
                )
        return list(recordings)
    raise TypeError(
        "`recordings` must be an hhjax.fitting.Recording or a non-empty list of them, got "
        f"{type(recordings).__name__}."
    )


def _fit_into(value, shape):
    """`value` in a member's slot of `shape`: the multi-start's loss histories are shorter
    than the first pass's (its cap is `_core.MULTISTART_MAX_ITER`), so they are NaN-padded
    (histories are read only up to each run's own iteration count)."""
    value = np.asarray(value)
    if value.shape == tuple(shape):
        return value
    pad = [(0, want - have) for have, want in zip(value.shape, shape, strict=True)]
    if any(p[1] < 0 for p in pad):
        raise AssertionError(f"a multi-start output {value.shape} exceeds its slot {shape}")
    return np.pad(value, pad, constant_values=np.nan)


def _history(out, n_res):
    """Loss history (mean squared residual per iteration) of a `_core` result; after a
    nudging refit that was kept, the first run's history followed by the refit's."""
    n_iter = int(out["n_iter"])
    hist = 2.0 * np.asarray(out["hist"])[: n_iter + 1] / n_res
    if bool(out["used"]):
        n1 = int(out["n_iter_first"])
        hist = np.concatenate([2.0 * np.asarray(out["hist_first"])[: n1 + 1] / n_res, hist])
    return hist


def _ar1_coefficient(x):
    """Least-squares AR(1) coefficient of a series (no mean removed), kept inside ±0.999."""
    den = float(np.sum(x[:-1] ** 2))
    return float(np.clip(np.sum(x[1:] * x[:-1]) / den, -0.999, 0.999)) if den > 0 else 0.0


def _bartlett_bandwidth(x):
    """Andrews' AR(1) plug-in bandwidth $S = 1.1447\\,(\\alpha n)^{1/3}$ for the Bartlett kernel,
    $\\alpha = 4\\rho^2 / ((1 - \\rho)^2 (1 + \\rho)^2)$ (Andrews 1991, Econometrica 59:817,
    eq. 6.4, one series)."""
    rho = _ar1_coefficient(x)
    alpha = 4 * rho**2 / ((1 - rho) ** 2 * (1 + rho) ** 2)
    return max(1.1447 * (alpha * len(x)) ** (1 / 3), 1.0)


def _noise_spectrum(r, nfft):
    r"""Spectrum $S(\omega) = \sum_l \hat\gamma(l) e^{-i\omega l}$ of the residuals' autocovariance
    on the `rfft` grid of `nfft` points: AR(1) prewhitening $u_t = r_t - \phi r_{t-1}$, a
    Bartlett-tapered autocovariance of $u$ (Andrews' bandwidth), recoloured by
    $1/|1 - \phi e^{-i\omega}|^2$ (the prewhitened kernel estimate of Andrews & Monahan 1992,
    Econometrica 60:953, applied to the noise rather than the scores)."""
    phi = _ar1_coefficient(r)
    u = r[1:] - phi * r[:-1]
    bw = _bartlett_bandwidth(u)
    acov = np.fft.irfft(np.abs(np.fft.rfft(u, nfft)) ** 2, nfft) / len(u)
    lag = np.minimum(np.arange(nfft), nfft - np.arange(nfft))
    s_u = np.fft.rfft(acov * np.clip(1.0 - lag / bw, 0.0, None)).real
    omega = 2 * np.pi * np.arange(len(s_u)) / nfft
    return s_u / np.abs(1.0 - phi * np.exp(-1j * omega)) ** 2


def _long_run_cov(jac, r):
    r"""$\Omega = \sum_l \hat\gamma(l) \sum_t J_{t+l} J_t^T$: the covariance of $J^T \varepsilon$
    for noise that is stationary and correlated in time, with $\hat\gamma$ from the residuals `r`
    ([`_noise_spectrum`][]); summed over lags in the frequency domain (Parseval), so the cost
    is $O(p^2 n \log n)$ whatever the correlation time.

    Taking the autocovariance from the residuals, not from the scores $J_t r_t$, keeps the
    estimate stable when $J_t$ varies along the trace (large inside spikes). Measured against
    the exact $(J^T J)^{-1} J^T \Sigma J (J^T J)^{-1}$ for AR(1) noise on the recovery study's
    trace (12 seeds): standard errors 0.995–1.000 of exact at correlation times 0.05 and
    0.2 ms, 0.98 at 1 ms, 0.96 at 3 ms (spread 0.01–0.14); 1.00 for white noise. A Bartlett
    estimate on the residuals without prewhitening gave 0.89–0.97; Newey–West on the scores
    0.6–1.2, and prewhitened on the scores 1.2–6.4 at 0.2 ms. The estimate runs low when a
    recording spans few correlation times, as residuals lose the slow noise that smooth
    Jacobian columns absorb (0.89–0.93 for 80 correlation times, tests/test_fitting.py)."""
    n, p = jac.shape
    if n < 3:  # too short for an autocovariance: the white-noise meat
        return jac.T @ jac * float(np.mean(r * r))
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    spec = _noise_spectrum(r, nfft)
    jf = np.fft.rfft(jac, nfft, axis=0)
    weight = np.full(len(spec), 2.0)  # rfft keeps half the frequencies: double the inner ones
    weight[0] = 1.0
    if nfft % 2 == 0:
        weight[-1] = 1.0
    return np.real(np.einsum("k,ka,kb->ab", weight * spec, np.conj(jf), jf)) / nfft


def _uncertainty(spec, theta, r, jac, sigma_from: str, noise: str = "white", segments=None):
    """Standard errors and 95 % intervals in natural units from $J$ at the optimum.

    `segments`: sample counts of the recordings in `r` (noise is taken as independent
    between recordings); default one. Returns the pieces of a [`FitResult`][], among them
    `se_ratio` (correlated / white SE) whatever `noise` is."""
    theta, r, jac = (np.asarray(a, dtype=np.float64) for a in (theta, r, jac))
    n, p = jac.shape
    s2_res = float(np.sum(r * r) / max(n - p, 1))
    s2 = s2_res if sigma_from == "residuals" else 1.0
    jtj = jac.T @ jac
    d = np.sqrt(np.maximum(np.diag(jtj), 1e-300))
    scaled = jtj / np.outer(d, d)
    cond = float("inf")
    cov_white = np.full((p, p), np.inf)
    cov_corr = np.full((p, p), np.inf)
    inv = None
    ok = np.all(np.isfinite(scaled)) and np.isfinite(s2_res)
    if ok:  # a failed fit has no curvature
        eig = np.linalg.eigvalsh(scaled)
        cond = float(eig[-1] / eig[0]) if eig[0] > 0 else float("inf")
        try:
            inv = np.linalg.inv(scaled) / np.outer(d, d)  # (J^T J)^{-1}
        except np.linalg.LinAlgError:
            pass
        if inv is not None:
            cov_white = s2 * inv
            omega = np.zeros((p, p))
            cuts = np.cumsum(segments or [n])[:-1]
            for j_seg, r_seg in zip(np.split(jac, cuts), np.split(r, cuts)):
                omega += _long_run_cov(j_seg, r_seg)
            # The same degrees-of-freedom correction as s^2, so that both agree on white noise.
            cov_corr = inv @ omega @ inv * (n / max(n - p, 1))
    dx = np.asarray(spec.dx_dtheta(theta), dtype=np.float64)
    cov_theta = cov_corr if noise == "correlated" else cov_white
    cov = cov_theta * np.outer(dx, dx)
    x = np.asarray(spec.to_natural(theta), dtype=np.float64)
    var = np.diag(cov)
    se = np.sqrt(np.where(var >= 0, var, np.inf))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(se, se)
        # Against the white-noise covariance with s^2 from the same residuals, so that a
        # recording's stated sigma (sigma_from="recording") does not enter the ratio.
        ratio = (np.sqrt(np.diag(cov_corr) / np.diag(s2_res * inv)) if inv is not None
                 else np.full(p, np.nan))
    values = {nm: float(x[k]) for k, nm in enumerate(spec.coords)}
    stderr = {nm: float(se[k]) for k, nm in enumerate(spec.coords)}
    ci = {nm: (float(x[k] - _Z95 * se[k]), float(x[k] + _Z95 * se[k]))
          for k, nm in enumerate(spec.coords)}
    se_ratio = {nm: float(ratio[k]) for k, nm in enumerate(spec.coords)}
    poor = []
    for k, nm in enumerate(spec.coords):
        if not np.isfinite(se[k]) or cond > 1e14:
            poor.append(nm)
        elif spec.transforms[k] == "log" and se[k] > 0.5 * abs(x[k]):
            poor.append(nm)
        elif spec.transforms[k] == "linear" and se[k] > 5.0:
            poor.append(nm)
    return values, stderr, ci, cov, corr, tuple(poor), cond, float(np.sqrt(s2)), se_ratio


def _lag1(r, segments):
    """Lag-1 autocorrelation of the residuals, pooled over recordings."""
    num = den = 0.0
    for seg in np.split(np.asarray(r, dtype=np.float64), np.cumsum(segments)[:-1]):
        e = seg - seg.mean()
        num += float(np.sum(e[1:] * e[:-1]))
        den += float(np.sum(e * e))
    return num / den if den > 0 else float("nan")


_WHITE_LAG1 = 0.1
"""|lag-1 autocorrelation| of the residuals below which they count as white."""


def _noise_floor_ok(loss, lag1, n):
    """Whether a final loss (in units of sigma^2) and residual lag-1 autocorrelation look like
    a fit converged to the noise floor of `n` residuals."""
    tol = max(0.1, 5.0 * np.sqrt(2.0 / max(n, 1)))
    return bool(np.isfinite(loss) and loss <= 1.0 + tol and abs(lag1) < _WHITE_LAG1)


def _warn_if_correlated(results, noise):
    """One warning when white-noise intervals are too narrow for the residuals."""
    if noise != "white":
        return
    bad = [r for r in results
           if max(r.se_ratio.values(), default=1.0) > _WARN_SE_RATIO]
    if not bad:
        return
    worst = max(bad, key=lambda r: max(r.se_ratio.values()))
    name = max(worst.se_ratio, key=worst.se_ratio.get)
    where = "" if len(results) == 1 else f" in {len(bad)} of {len(results)} fits"
    warnings.warn(
        f"fit: the residuals are correlated in time{where} (lag-1 autocorrelation "
        f"{worst.residual_lag1:.2f}; coloured noise, model mismatch, or a fit short of its "
        "optimum leave structure in them): the white-noise standard errors are too small by up "
        f"to x{worst.se_ratio[name]:.1f} ({name}). Pass noise='correlated' for intervals from "
        "the residuals' autocovariance; see FitResult.se_ratio.",
        stacklevel=3,
    )


def _residual_sigma_mv(r, recs, p):
    r"""The noise level (mV) implied by the residuals: $\sqrt{\sum e^2/(n-p)}$."""
    sig = np.concatenate([np.full(rec.num_samples, rec.sigma) for rec in recs])
    e = np.asarray(r) * sig
    return float(np.sqrt(np.sum(e * e) / max(e.size - p, 1)))


def _check_noise(noise, sigma_from):
    if sigma_from not in ("residuals", "recording"):
        raise ValueError(f"`sigma_from` must be 'residuals' or 'recording', got {sigma_from!r}.")
    if noise not in NOISE_MODELS:
        raise ValueError(f"`noise` must be one of {NOISE_MODELS}, got {noise!r}.")
    if noise == "correlated" and sigma_from != "residuals":
        raise ValueError(
            "`noise='correlated'` estimates the noise covariance from the residuals; "
            "`sigma_from='recording'` applies to `noise='white'` only."
        )


def _check_search(max_iter, nudges, n_starts, spread, seed, fallback_threshold):
    """The settings `fit` and `fit_batch` share, checked before anything is compiled."""
    max_iter = _count("max_iter", max_iter)
    n_starts = _count("n_starts", n_starts)
    spread = _real("spread", spread, above=1.0)
    seed = _count("seed", seed, minimum=0)
    fallback_threshold = _real("fallback_threshold", fallback_threshold, at_least=0.0)
    if isinstance(nudges, (str, bytes)) or not isinstance(nudges, Sequence):
        raise TypeError(f"`nudges` must be a sequence of strengths (1/ms), got {nudges!r}.")
    nudges = tuple(_real(f"nudges[{k}]", x, at_least=0.0) for k, x in enumerate(nudges))
    return max_iter, nudges, n_starts, spread, seed, fallback_threshold


def _with_initial_voltages(spec, recs, y0):
    """With `y0="fit"`: `spec` with one initial-voltage coordinate per recording (`v0`, or
    `v0[k]` for several), started at each recording's first sample; else `(spec, None)`."""
    if y0 != "fit":
        return spec, None
    names = ("v0",) if len(recs) == 1 else tuple(f"v0[{k}]" for k in range(len(recs)))
    return spec.with_nuisance(names), np.asarray([float(r.v[0]) for r in recs])


_ELECTRODE_BOUNDS = {"rho_s": (-1e3, 1e3), "tau_e": (1e-4, 0.5), "v_offset": (-50.0, 50.0),
                     "i_hold": (-1e3, 1e3)}
"""Bounds of the recording model's coordinates (kΩ·cm², ms, mV, µA/cm²): wide, only to keep a
lost fit finite; but `tau_e` at most 0.5 ms: an amplifier filter or an electrode's capacitance
acts within tens of µs, and a free `tau_e` of a few ms stands in for a fast membrane component
the model lacks (171116sh_0018, single compartment: `tau_e` ran to 5 ms and R_s to twice the
jumps' 14 MΩ)."""


def _with_electrode(spec, recs, electrode, v0):
    """`(spec, nuisance start)`: `spec` with the recording model's coordinates appended
    (`rho_s` started from the jumps at the current's steps, the others at 0), and the
    start of every nuisance coordinate (initial voltages less the start's bridge error)."""
    if electrode is None:
        return spec, v0
    if not isinstance(electrode, Electrode):
        raise TypeError(f"`electrode` must be hhjax.fitting.Electrode(...) or None, got "
                        f"{type(electrode).__name__}.")
    if electrode.time_constant and not electrode.series_resistance:
        raise ValueError("`electrode`: time_constant=True needs series_resistance=True (it is "
                         "the time constant of the bridge error).")
    flags = (electrode.series_resistance, electrode.time_constant, electrode.offset,
             electrode.holding)
    names = tuple(n for n, on in zip(ELECTRODE, flags) if on)
    if not names:
        return spec, v0
    start = []
    rho = 0.0
    if electrode.series_resistance:
        jumps = [onset_jumps(r.v, r.i_inj, r.dt) for r in recs]
        edges = sum(e for _, e in jumps)
        if edges == 0:
            raise ValueError(
                "`electrode`: series_resistance=True, but the recordings' currents never step, "
                "so R_s cannot be told from the membrane; use Electrode(series_resistance="
                "False) or recordings with current steps.")
        rho = sum(x * e for x, e in jumps) / edges
        start.append(rho)
    if electrode.time_constant:
        start.append(0.5 * min(r.dt for r in recs))
    start += [0.0] * (len(names) - len(start))
    for n in names:
        spec = spec.with_nuisance((n,), *_ELECTRODE_BOUNDS[n])
    if v0 is not None:
        v0 = np.asarray([float(x) - rho * float(r.i_inj[0]) for x, r in zip(v0, recs)])
    return spec, np.concatenate([[] if v0 is None else v0, start])


def _electrode_report(res, recs):
    """`FitResult.electrode`: the recording model's values and standard errors, in MΩ and pA
    where the recordings' area is known."""
    out = {}
    area = recs[0].area if all(r.area == recs[0].area for r in recs) else None
    for n in ELECTRODE:
        if n not in res.values:
            continue
        x, se = res.values[n], res.stderr[n]
        out[n], out[n + "_se"] = x, se
        if area is not None and n == "rho_s":
            out["r_s_mohm"], out["r_s_mohm_se"] = x / (area * 1e3), se / (area * 1e3)
        if area is not None and n == "i_hold":
            out["i_hold_pA"], out["i_hold_pA_se"] = x * area * 1e6, se * area * 1e6
    return out


def _check_start(spec, params0):
    """The free fields' starting values in `params0`: finite, and positive where fitted in log
    coordinates (a log of a non-positive value is NaN)."""
    x = np.asarray(spec.values(params0))
    for k, name in enumerate(spec.names):
        col = x[..., k]
        if not np.all(np.isfinite(col)):
            raise ValueError(
                f"`params0.{name}` is {col.ravel()[~np.isfinite(col.ravel())][0]}: the start of "
                "a free field must be finite."
            )
        if spec.transforms[k] == "log" and not np.all(col > 0):
            raise ValueError(
                f"`params0.{name}` is {col.ravel()[~(col.ravel() > 0)][0]}, but it is fitted in "
                f"log coordinates and must start positive. Give a positive start, or pass "
                f"transforms={{{name!r}: 'linear'}}."
            )


def _failure(where, spec, out, recs, example=""):
    """The message of a fit that never reached parameters the model can simulate."""
    start = np.asarray(spec.to_natural(jnp.asarray(out["start"])))
    values = ", ".join(f"{n}={float(v):.4g}" for n, v in zip(spec.names, start))
    dt = ", ".join(sorted({f"{r.dt:g}" for r in recs}))
    return (
        f"{where}: the model cannot be simulated on the recording's sample grid (dt = {dt} ms) "
        f"at any parameters the fit tried: {example}the loss at its start ({values}) is not "
        "finite (e.g. a guess whose dynamics are too fast for the fixed-step solver, g/c_m "
        "too large, or a model with no rest state). Pass a `params0` closer to the data, "
        "init='auto' or init='multistart', or `bounds`; pass throw=False to get the failed "
        "result with FitResult.ok False."
    )


def _finite_fit(out) -> bool:
    return bool(np.all(np.isfinite(np.asarray(out["theta"])))
                and np.all(np.isfinite(np.asarray(out["r"]))))


def _resolve(init, solver, method):
    """`(init string, method string, {argument: value})` from the initialiser and solver
    objects (or their string aliases): an object's fields replace the keyword arguments of
    the same names; a string alias leaves them as given."""
    kw = {}
    if not isinstance(init, str):
        obj = resolve_init(init)
        if isinstance(obj, (Guess, MultiStart)):
            kw.update(n_starts=obj.n_starts, spread=obj.spread)
        if isinstance(obj, MultiStart):
            kw.update(seed=obj.seed)
        if isinstance(obj, Nudge):
            kw.update(nudges=tuple(obj.schedule))
        init = obj.name
    else:
        resolve_init(init)  # a clear error for an unknown string
    if solver is not None:
        obj = resolve_solver(solver, method)
        kw.update({f: getattr(obj, f) for f in obj.__dataclass_fields__})
        method = obj.method
    return init, method, kw


def _override(kw, **given):
    """The keyword arguments `given`, each replaced by the configuration objects' field of
    the same name where `kw` (from `_resolve`) has one."""
    return [kw.get(k, v) for k, v in given.items()]


def _check_common(recs, free, params0, init, method, y0):
    if params0 is None:
        params0 = HHParams()
    if not isinstance(params0, eqx.Module):
        raise TypeError(f"`params0` must be a model such as hhjax.HHParams, got {params0!r}.")
    if init not in INITS:
        raise ValueError(f"`init` must be one of {INITS}, got {init!r}.")
    if method not in ("lm", "optax"):
        raise ValueError(f"`method` must be 'lm' or 'optax', got {method!r}.")
    if y0 not in Y0_MODES:
        raise ValueError(
            f"`y0` must be one of {Y0_MODES}, got {y0!r}: 'fit' (default) estimates each "
            "recording's initial voltage with the gates at steady state there; 'rest' assumes "
            "rest under the first current sample; 'data' starts at the first recorded voltage.")
    return params0


def _build_result(spec, base, out, recs, sigma_from, hist, method, init, wall, n_iter, conv,
                  noise="white"):
    theta = out["theta"]
    segments = [rec.num_samples for rec in recs]
    values, stderr, ci, cov, corr, poor, cond, sig, se_ratio = _uncertainty(
        spec, theta, out["r"], out["jac"], sigma_from, noise, segments
    )
    params = spec.apply(jnp.asarray(theta), base)
    traces = []
    r = np.asarray(out["r"])
    offset = 0
    for rec in recs:
        # The fitted trace is the data plus the weighted residual times sigma: no extra solve.
        res = r[offset : offset + rec.num_samples] * rec.sigma
        offset += rec.num_samples
        v = np.asarray(rec.v) + res
        traces.append(Trace(rec.t, jnp.asarray(v), rec.v, rec.i_inj, jnp.asarray(-res)))
    lag1 = _lag1(r, segments)
    loss = float(hist[-1]) if len(hist) else float("nan")
    return FitResult(
        params=params,
        free=spec.names,
        values=values,
        stderr=stderr,
        ci=ci,
        cov=cov,
        corr=corr,
        poorly_identified=poor,
        condition_number=cond,
        sigma=_residual_sigma_mv(r, recs, len(spec)) if sigma_from == "residuals"
        else float(np.mean([rec.sigma for rec in recs])),
        loss_history=np.asarray(hist),
        trace=traces[0] if len(traces) == 1 else traces,
        start=spec.apply(jnp.asarray(out["start"]), base),
        n_iter=int(n_iter),
        converged=bool(conv),
        wall_time=wall,
        method=method,
        init=init,
        noise=noise,
        se_ratio=se_ratio,
        residual_lag1=lag1,
        nuisance=spec.nuisance,
        noise_floor=loss,
        loss=loss,
        at_noise_floor=_noise_floor_ok(loss, lag1, int(r.size)),
    )


def _stages(out, init, theta_guess, n_fields):
    """`FitResult.stages` of an LM `_core` result (before any escalation); `n_fields`: the
    model's coordinates (the nuisance ones after them, initial voltages, are moved by the
    start's own search whichever start won)."""
    if init == "auto":
        same = np.allclose(np.asarray(out["start"])[..., :n_fields],
                           np.asarray(theta_guess)[..., :n_fields])
        first = "guess" if same else "linear"
    else:
        first = init
    stages = [first, "lm"] if init != "nudge" else ["nudge", "lm"]
    if init != "multistart" and bool(out["redone"]):
        stages.append("nudging")
    return stages


def _misfit(out, segments):
    """Whether an LM `_core` result is above the noise floor (the escalation's trigger; the
    same test as `FitResult.at_noise_floor`, per-recording lag-1 included)."""
    if not _finite_fit(out):
        return False
    r = np.asarray(out["r"])
    return not _noise_floor_ok(float(np.sum(r * r) / r.size), _lag1(r, segments), r.size)


def _better(a, b):
    """The `_core` result with the lower final cost."""
    ca = float(np.sum(np.square(np.asarray(a["r"]))))
    cb = float(np.sum(np.square(np.asarray(b["r"]))))
    return b if np.isfinite(cb) and not cb >= ca else a


# ---------------------------------------------------------------------------- public
def fit(
    recordings: Recording | Sequence[Recording],
    free: Sequence[str] = DEFAULT_FREE,
    params0: eqx.Module | None = None,
    *,
    objective=None,
    init="auto",
    solver=None,
    method: str = "lm",
    max_iter: int = MAX_ITER,
    bounds: Mapping[str, tuple] | None = None,
    transforms: Mapping[str, str] | None = None,
    y0: str = "fit",
    sigma_from: str = "residuals",
    noise: str = "white",
    nudges: Sequence[float] = NUDGE_SCHEDULE,
    n_starts: int = 16,
    spread: float = 3.0,
    seed: int = 0,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 500,
    clip: float | None = 10.0,
    patience: int | None = 50,
    min_delta: float = 1e-6,
    progress: bool = False,
    callback: Callable | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 25,
    fallback: bool = True,
    fallback_threshold: float = 1.1,
    escalate: bool = True,
    electrode: Electrode | None = None,
    throw: bool = True,
) -> FitResult:
    """Fit the free fields of a membrane model to one or several current-clamp recordings.

    **Arguments:**

    - `recordings`: a [`Recording`][] or a list of them; a list is fitted jointly (shared
      parameters, e.g. sweeps of different amplitudes from one cell).
    - `free`: names of the fields to fit. Default `("g_na", "g_k", "g_l", "e_l", "c_m")`.
    - `params0`: the model supplying the fixed fields and, where used, the starting guess
      (default [`hhjax.HHParams`][]`()`).
    - `objective`: what is minimised: [`LeastSquares`][] (default, the whole trace),
      [`SpikeFeatures`][] or [`SpikeTiming`][] (or their names `"trace"`, `"features"`,
      `"spike-timing"`). The spike objectives are solved by [`CrossEntropy`][] (the default
      solver for them) from `params0` (`init` `"auto"` or `"guess"`), start each recording at
      rest under its first current sample, and report no intervals; the arguments below that
      belong to the trace solvers do not apply to them.
    - `init`: the start. `"auto"` (default): the linear estimate, or `params0` if that fits the
      data better; `"linear"`: the linear estimate (needs no guess; HH models); `"guess"`:
      `params0` (if the model cannot be simulated there, the lowest-loss of `n_starts` draws
      within ×`spread` of it); `"nudge"`: annealed nudging from `params0` (schedule `nudges`,
      1/ms), each stage a few LM iterations with $k(v_{obs} - v)$ added to $dv/dt$; `"multistart"`:
      `n_starts` log-uniform starts within ×`spread` of `params0` (potentials ±15 mV; the first
      start is `params0` itself, the last the linear estimate), all polished in one vmapped
      call, the lowest loss kept.
    - `solver`: a [`LevenbergMarquardt`][] (default) or [`Optax`][] object; its fields
      replace the keyword arguments of the same names (`max_iter`, `nudges`, `fallback`,
      `fallback_threshold`, `escalate`; `optimizer`, `steps`, `clip`, `patience`,
      `min_delta`). `init` likewise takes an [`Auto`][], [`Linear`][], [`Guess`][],
      [`Nudge`][] or [`MultiStart`][] object (whose `n_starts`, `spread`, `seed`, `schedule`
      replace those arguments); the strings below are aliases of them.
    - `method`: `"lm"` (Levenberg–Marquardt, default) or `"optax"` (first-order loop); the
      string alias of `solver`.
    - `max_iter`: LM iteration cap.
    - `bounds`, `transforms`: per-field bounds (natural units) and `"log"`/`"linear"`
      coordinates; see [`FreeParams`][].
    - `y0`: how each recording starts. `"fit"` (default): its initial voltage is fitted (a
      nuisance coordinate `v0`, or `v0[k]` per recording) with the gates at steady state
      there: exact for a cell at rest under any constant current before the recording,
      whatever the current does from the first sample on. It starts from a grid search
      within ±4σ of the first sample at the start's parameters (a spiking trace pins it to
      hundredths of a mV, too narrow a well for the optimiser to find from the noisy first
      sample); each candidate start is ranked after its search. `"rest"`:
      at rest under the first current sample; `"data"`: gates at steady state of the first
      recorded voltage (neither is fitted).
    - `sigma_from`: noise level for the uncertainty: `"residuals"` (default, $s^2 = \\|r\\|^2
      /(n-p)$) or `"recording"` (each recording's stated `sigma`).
    - `noise`: `"white"` (default): independent samples, $\\mathrm{cov} = s^2 (J^T J)^{-1}$;
      `"correlated"`: noise correlated in time (coloured recording noise, or model mismatch
      that leaves structure in the residuals): the sandwich $H^{-1}\\Omega H^{-1}$, $H = J^T J$,
      where $\\Omega$ sums $J_{t+l} J_t^T$ over lags weighted by the residuals' autocovariance
      (per recording; AR(1)-prewhitened Bartlett estimate, Andrews' bandwidth). Either way
      `FitResult.se_ratio` gives the ratio of the two, and a white-noise fit warns when it
      exceeds 1.5. Coloured noise also defeats [`estimate_noise`][] (second differences see
      little of it): give such recordings their `sigma`, measured on a quiet baseline.
    - `seed`: random seed of the multi-start draws.
    - Optax loop only (`method="optax"`): `optimizer` (default: Adam, learning rate 0.02, on
      the transformed coordinates), `steps`, `clip` (global gradient-norm clip; `None` for
      none), `patience`/`min_delta` (early stopping when the best loss has not improved by a
      relative `min_delta` for `patience` steps), `progress` (tqdm bar), `callback`
      (`callback(step, loss, params)` after each step), `checkpoint` (file path, in an
      existing directory: progress is saved every `checkpoint_every` steps, atomically, and a
      later call with the same path resumes; a file written by a fit of other recordings or
      another configuration, or a damaged one, raises [`hhjax.fitting.CheckpointError`][] (a
      `ValueError`) naming it). A step
      that reaches parameters the model cannot simulate ends the loop with a warning; the
      best parameters seen are returned, not converged.
    - `fallback`, `fallback_threshold`: with `init` `"auto"`, `"linear"` or `"guess"` and
      `method="lm"`, a fit whose final mean squared residual exceeds `fallback_threshold` (in
      units of the recordings' $\\sigma^2$; a correct fit gives 1 ± 0.05 with $\\sigma$
      estimated from the data) is taken for a local minimum, typically a misplaced spike: it
      is refitted with annealed nudging from the same start, inside the same compiled loop,
      and the better of the two is returned.
    - `escalate`: with the fallback on, a fit still above the noise floor after it (see
      `FitResult.at_noise_floor`) escalates to a vmapped multi-start (`n_starts` starts within
      ×`spread` of the fit so far, the fit itself and the linear estimate among them) and
      keeps the better result; `FitResult.stages` and `escalated` report it. It is a second
      compiled program, built only when a fit needs it: inside the first program it would
      be compiled (and, under `fit_batch`'s vmap, run) for every fit.
    - `electrode`: a recording model ([`Electrode`][]: series resistance, offset, holding
      current) fitted beside the cell, shared by the recordings; `None` (default): an ideal
      recording. Its values are in `FitResult.electrode` (and `values`, `stderr`, `ci`).
    - `throw`: when the model cannot be simulated at any parameters the fit reaches (a
      non-finite loss from its start on), raise [`hhjax.SimulationError`][] (default); with
      `False`, warn and return the result with `ok=False`.

    **Returns:**

    A [`FitResult`][]: `.params`, `.stderr`, `.ci`, `.loss_history`, `.trace`, ...
    """
    recs = _as_recordings(recordings)
    objective = resolve_objective(objective)
    if objective.name != "trace" and electrode is not None:
        raise ValueError(
            "`electrode`: the recording model is fitted with the trace objective "
            "(LeastSquares) only; the spike objectives do not model it yet.")
    if objective.name != "trace":
        return _fit_spikes(recs, free, params0, objective, init, solver, method, bounds,
                           transforms, y0, progress, callback, throw)
    if isinstance(solver, CrossEntropy) or method == "cem":
        raise ValueError(
            "the trace objective (LeastSquares) is solved by LevenbergMarquardt or Optax; "
            "CrossEntropy serves objective=SpikeFeatures() or SpikeTiming().")
    init, method, kw = _resolve(init, solver, method)
    (max_iter, nudges, fallback, fallback_threshold, escalate, n_starts, spread, seed,
     optimizer, steps, clip, patience, min_delta) = _override(
        kw, max_iter=max_iter, nudges=nudges, fallback=fallback,
        fallback_threshold=fallback_threshold, escalate=escalate, n_starts=n_starts,
        spread=spread, seed=seed, optimizer=optimizer, steps=steps, clip=clip,
        patience=patience, min_delta=min_delta)
    params0 = _check_common(recs, free, params0, init, method, y0)
    _check_noise(noise, sigma_from)
    max_iter, nudges, n_starts, spread, seed, fallback_threshold = _check_search(
        max_iter, nudges, n_starts, spread, seed, fallback_threshold)
    if method == "optax":
        from ._optax import check_checkpoint_path

        steps = _count("steps", steps)
        checkpoint_every = _count("checkpoint_every", checkpoint_every)
        if patience is not None:
            patience = _count("patience", patience)
        min_delta = _real("min_delta", min_delta, at_least=0.0, below=1.0)
        if clip is not None:
            clip = _real("clip", clip, above=0.0)
        check_checkpoint_path(checkpoint)
    elif checkpoint is not None:
        raise ValueError(
            "`checkpoint` applies to method='optax' only (the LM fit runs as one compiled "
            "loop); pass method='optax' or leave `checkpoint` out."
        )
    spec = FreeParams.make(free, params0, transforms, bounds)
    _check_start(spec, params0)
    with_linear = any(n in linear_fields(params0) for n in spec.names)
    if init == "linear" and not with_linear:
        raise ValueError(
            f"`init='linear'` needs one of {linear_fields(params0)} free (the fields the linear "
            "initialiser estimates for this model)."
        )
    dtype = jnp.result_type(params0.dtype, float)
    data = [
        (r.v.astype(dtype), r.i_inj.astype(dtype), jnp.asarray(r.sigma, dtype)) for r in recs
    ]
    dts = tuple(float(r.dt) for r in recs)
    spec, v0 = _with_initial_voltages(spec, recs, y0)
    spec, nuis = _with_electrode(spec, recs, electrode, v0)
    theta_guess = spec.clip(spec.to_theta(spec.values(params0, nuis).astype(dtype)))
    key = jax.random.PRNGKey(seed)
    t_start = time.perf_counter()
    if method == "lm":
        iters, redo = _schedule(nudges, fallback and init in _FALLBACK_INITS,
                                fallback_threshold, dtype)
        out = _core_jit(params0, data, theta_guess, key, iters, redo, spec=spec, dts=dts,
                        init=init, max_iter=int(max_iter), y0_mode=y0,
                        nudges=tuple(map(float, nudges)), n_starts=int(n_starts),
                        spread=float(spread), with_linear=with_linear)
        out = jax.block_until_ready(out)
        n_res = sum(int(r.num_samples) for r in recs)
        stages = _stages(out, init, theta_guess, len(spec.names))
        used, escalated = bool(out["used"]), False
        segments = [int(r.num_samples) for r in recs]
        if escalate and fallback and init in _FALLBACK_INITS and _misfit(out, segments):
            stages.append("multistart")
            # Half the starts around the first fit's start (a fit stuck in a misplaced-spike
            # minimum has often wandered far, e.g. a leak run away, from the basin it began
            # in), half close to where it ended (a spike away from the optimum).
            ms = _core_jit(params0, data, out["start"], key, iters, redo, spec=spec, dts=dts,
                           init="multistart", max_iter=int(max_iter), y0_mode=y0,
                           nudges=tuple(map(float, nudges)), n_starts=int(n_starts),
                           spread=float(spread), with_linear=with_linear, near=out["theta"])
            best = _better(out, jax.block_until_ready(ms))
            if best is ms:
                out, escalated = dict(ms, start=out["start"]), True
        hist = _history(out, n_res)
        n_iter, conv = int(out["n_iter"]), bool(out["converged"])
    else:
        from ._optax import optax_loop

        used, escalated = False, False
        stages = [init, "optax"]
        out, hist, n_iter, conv = optax_loop(
            params0, data, theta_guess, key, spec=spec, dts=dts, init=init, y0_mode=y0,
            nudges=tuple(map(float, nudges)), n_starts=int(n_starts), spread=float(spread),
            with_linear=with_linear, optimizer=optimizer, steps=int(steps), clip=clip,
            patience=patience, min_delta=float(min_delta), progress=progress, callback=callback,
            checkpoint=checkpoint, checkpoint_every=int(checkpoint_every),
        )
    wall = time.perf_counter() - t_start
    ok = _finite_fit(out)
    if not ok:
        message = _failure("fit", spec, out, recs)
        if throw:
            raise SimulationError(message)
        warnings.warn(message, stacklevel=2)
    res = _build_result(spec, params0, out, recs, sigma_from, hist, method, init, wall, n_iter,
                        conv and ok, noise)
    res.fallback_used = used
    res.escalated = escalated
    res.stages = tuple(stages)
    res.ok = ok
    res.electrode = _electrode_report(res, recs)
    if ok:
        _warn_if_correlated([res], noise)
    return res


def _fit_spikes(recs, free, params0, objective, init, solver, method, bounds, transforms, y0,
                progress, callback, throw):
    """[`fit`][] with a spike objective: the cross-entropy search and its polish."""
    if solver is None and method in ("lm", "cem"):
        solver = CrossEntropy()
    if not isinstance(solver, CrossEntropy):
        raise ValueError(
            f"objective={type(objective).__name__}() is solved by CrossEntropy(...) (spike "
            "counts leave no useful gradient for LevenbergMarquardt or Optax; its polish "
            f"follows the gradient where there is one); got solver={solver!r}, "
            f"method={method!r}.")
    solver = resolve_solver(solver, "cem")
    init = init if isinstance(init, str) else resolve_init(init).name
    if init not in ("auto", "guess"):
        raise ValueError(
            f"objective={type(objective).__name__}() starts from `params0` (init 'auto' or "
            f"'guess'); got init={init!r}.")
    if y0 == "data":
        raise ValueError(
            "the spike objectives start each recording at rest under its first current "
            "sample; y0='data' does not apply (leave `y0` out).")
    params0 = _check_common(recs, free, params0, "guess", "lm", "rest")
    spec = FreeParams.make(free, params0, transforms, bounds)
    _check_start(spec, params0)
    preps = prepare(objective, recs)
    dtype = jnp.result_type(params0.dtype, float)
    theta0 = spec.clip(spec.to_theta(spec.values(params0).astype(dtype)))
    loss, smooth = make_loss(objective, preps, spec, params0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=solver.restarts * solver.generations, desc="cross-entropy",
                   unit="gen")

    def report(step, total, best):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{best:.4g}")
        if callback is not None:
            callback(step, best, None)

    t_start = time.perf_counter()
    try:
        theta, best, hist, collapsed = _population.cross_entropy(loss, spec, theta0, solver,
                                                                 report)
    finally:
        if bar is not None:
            bar.close()
    stages = ["guess", "cem"]
    if np.isfinite(best):
        theta, best, taken = _population.polish(loss, smooth, spec, theta, best, solver)
        if taken:
            stages.append("polish")
    wall = time.perf_counter() - t_start
    ok = bool(np.isfinite(best))
    if not ok:
        message = (
            f"fit: none of the {solver.restarts * solver.generations * solver.population} "
            f"models searched with objective={type(objective).__name__}() could be simulated on "
            "every recording (the voltage is not finite: e.g. a model with no rest state, such "
            "as one without any conductance). Check `params0` and `free`, or lower "
            f"`objective.dt` (now {preps[0].dt} ms).")
        if throw:
            raise SimulationError(message)
        warnings.warn(message, stacklevel=3)
    params = spec.apply(theta, params0)
    traces, res = [], []
    for rec, prep in zip(recs, preps):
        v = model_trace(params, prep, np.asarray(rec.t) - float(rec.t[0])) if ok else \
            np.full(rec.num_samples, np.nan)
        r = np.asarray(rec.v) - v
        res.append(r / rec.sigma)
        traces.append(Trace(rec.t, jnp.asarray(v), rec.v, rec.i_inj, jnp.asarray(r)))
    r_all = np.concatenate(res)
    segments = [rec.num_samples for rec in recs]
    floor = float(np.mean(r_all * r_all)) if ok else float("nan")
    lag1 = _lag1(r_all, segments) if ok else float("nan")
    x = np.asarray(spec.to_natural(theta), dtype=np.float64)
    n = len(spec.names)
    nan = float("nan")
    return FitResult(
        params=params, free=spec.names, values=dict(zip(spec.names, map(float, x))),
        stderr=dict.fromkeys(spec.names, nan), ci={k: (nan, nan) for k in spec.names},
        cov=np.full((n, n), nan), corr=np.full((n, n), nan), poorly_identified=(),
        condition_number=nan, sigma=float(np.mean([rec.sigma for rec in recs])),
        loss_history=np.asarray(hist, dtype=np.float64),
        trace=traces[0] if len(traces) == 1 else traces,
        start=params0, n_iter=len(hist), converged=bool(collapsed and ok), wall_time=wall,
        method="cem", init=init, residual_lag1=lag1, ok=ok, stages=tuple(stages),
        noise_floor=floor, at_noise_floor=ok and _noise_floor_ok(floor, lag1, r_all.size),
        objective=objective.name, loss=float(best),
    )


_batch_cache: dict = {}


def fit_batch(
    recordings: Sequence[Recording],
    free: Sequence[str] = DEFAULT_FREE,
    params0: eqx.Module | None = None,
    *,
    init="auto",
    solver=None,
    max_iter: int = MAX_ITER,
    bounds: Mapping[str, tuple] | None = None,
    transforms: Mapping[str, str] | None = None,
    y0: str = "fit",
    sigma_from: str = "residuals",
    noise: str = "white",
    nudges: Sequence[float] = NUDGE_SCHEDULE,
    n_starts: int = 16,
    spread: float = 3.0,
    seed: int = 0,
    fallback: bool = True,
    fallback_threshold: float = 1.1,
    escalate: bool = True,
    electrode: Electrode | None = None,
    workers: int | None = None,
    distribute: bool | None = None,
    throw: bool = True,
) -> list[FitResult]:
    """Fit many recordings independently in one vmapped, compiled call (e.g. 100 cells).

    **Arguments:**

    - `recordings`: a list of [`Recording`][]s with equal length and sampling interval; each is
      fitted on its own (use [`fit`][] with a list for a joint fit).
    - `params0`: one model for all, or a batch (fields with a leading axis of
      `len(recordings)`) giving each recording its own fixed fields/starting guess.
    - `max_iter`: LM iteration cap, default 100 as in [`fit`][] (see `MAX_ITER`). Under `vmap`
      every member of a part pays for its slowest one's iterations, but a lower cap is false
      economy: a fit from the linear estimate usually stops in 6–12 iterations, yet some need
      40–50, and one stopped early by the cap reports an optimum and intervals that are not.
      Check `converged`.
    - `workers`: on a CPU, the recordings are split into equal parts (four per worker) that
      `workers` threads fit with the same compiled program (XLA:CPU runs one compiled loop on
      one core); default: the cores available. A part stops as soon as its own slowest
      member has converged. With several local devices (GPUs, or CPU devices from
      `--xla_force_host_platform_device_count`) the parts go to them in turn, at least one
      thread per device, so that they run side by side.
    - `distribute`: split the recordings across the processes of `jax.distributed` (each
      fits its share on its own devices; the results are gathered once, so every process
      returns all of them; every process must make the same call). Default: when
      `jax.process_count() > 1`.
    - The other arguments are as in [`fit`][] (`method="lm"` only). A member whose fit needs
      the nudging fallback (final mean squared residual above `fallback_threshold`) is refitted
      inside the same compiled loop, so the fallback costs no second compilation.
    - `throw`: when some recordings' fits never reach parameters the model can simulate,
      raise [`hhjax.SimulationError`][] naming them (default); with `False`, warn once and
      return every result, those with `ok=False`.

    **Returns:**

    A list of [`FitResult`][]s, one per recording; each `wall_time` is the batch's total.
    """
    recs = _as_recordings(recordings)
    init, method, kw = _resolve(init, solver, "lm")
    if method != "lm":
        raise ValueError("fit_batch runs Levenberg–Marquardt only: pass "
                         "solver=LevenbergMarquardt(...) or none.")
    max_iter, nudges, fallback, fallback_threshold, escalate, n_starts, spread, seed = _override(
        kw, max_iter=max_iter, nudges=nudges, fallback=fallback,
        fallback_threshold=fallback_threshold, escalate=escalate, n_starts=n_starts,
        spread=spread, seed=seed)
    params0 = _check_common(recs, free, params0, init, "lm", y0)
    _check_noise(noise, sigma_from)
    max_iter, nudges, n_starts, spread, seed, fallback_threshold = _check_search(
        max_iter, nudges, n_starts, spread, seed, fallback_threshold)
    if workers is not None:
        workers = _count("workers", workers)
    lengths = {r.num_samples for r in recs}
    dts = {round(r.dt, 12) for r in recs}
    if len(lengths) != 1 or len(dts) != 1:
        raise ValueError(
            "fit_batch: all recordings must have the same number of samples and `dt`; got "
            f"lengths {sorted(lengths)} and dt {sorted(dts)} ms. Fit them separately."
        )
    batched = bool(params0.batch_shape)
    first = params0[0] if batched else params0
    spec = FreeParams.make(free, first, transforms, bounds)
    _check_start(spec, params0)
    with_linear = any(n in linear_fields(first) for n in spec.names)
    dtype = jnp.result_type(first.dtype, float)
    v = jnp.stack([r.v for r in recs]).astype(dtype)
    i = jnp.stack([r.i_inj for r in recs]).astype(dtype)
    sig = jnp.asarray([r.sigma for r in recs], dtype)
    base = params0.broadcast() if batched else params0
    spec1, v0 = _with_initial_voltages(spec, recs[:1], y0)
    spec, _ = _with_electrode(spec1, recs[:1], electrode, v0)
    x0 = jnp.broadcast_to(spec.values(base), (len(recs), len(spec.names)))
    if spec.nuisance:  # each recording's own start: initial voltage and electrode
        nuis = [_with_electrode(spec1, [r], electrode,
                                None if v0 is None else np.asarray([float(r.v[0])]))[1]
                for r in recs]
        x0 = jnp.concatenate([x0, jnp.asarray(np.stack(nuis), x0.dtype)], -1)
    theta_guess = spec.clip(spec.to_theta(x0.astype(dtype)))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(recs))
    iters, redo = _schedule(nudges, fallback and init in _FALLBACK_INITS, fallback_threshold,
                            dtype)
    cfg = dict(spec=spec, dts=(float(recs[0].dt),), init=init, max_iter=int(max_iter),
               y0_mode=y0, nudges=tuple(map(float, nudges)), n_starts=int(n_starts),
               spread=float(spread), with_linear=with_linear)
    size = len(recs)
    devices = jax.local_devices()
    n_dev = len(devices)
    if workers is None:
        workers = _available_cores() if jax.default_backend() == "cpu" else 1
    # Parts go to the local devices in turn, each called from its own thread, so that the
    # devices run side by side: one compiled program, bit-identical to one device. (A
    # `shard_map` over the devices, as `simulate_batch` uses, changed the fits in the 13th
    # digit: XLA compiles the partitioned LM's linear algebra differently.)
    workers = max(workers, n_dev)
    n_res = recs[0].num_samples

    def solve(rows):
        """Fit the members `rows` (global indices) on this process's devices: the first pass,
        then the multi-start escalation for those still above the noise floor. Returns the
        first-pass and final outputs (stacked) and, per member, whether the escalation was
        tried and whether it won."""
        n = len(rows)
        w = min(workers, n)
        # Several parts per worker, taken from a queue: a member that needs the nudging refit
        # keeps its part busy several times longer than the rest, and small parts let the
        # other threads take over the remaining ones meanwhile.
        n_parts = min(n, w * _PARTS_PER_WORKER) if w > 1 else 1
        part = -(-n // n_parts)
        n_parts = -(-n // part)

        def run(idx, th, near=None, device=None):
            # Every part has the same size (the last padded by repeating its final member),
            # so all threads share one compiled program.
            take = lambda a: a[idx]
            b_c = jax.tree_util.tree_map(take, base) if batched else base
            a_c = (b_c, v[idx], i[idx], sig[idx], th, keys[idx], iters, redo)
            a_c += () if near is None else (near,)
            near = near is not None
            if device is not None:
                a_c = jax.device_put(a_c, device)
            return _batch_program(batched, dict(cfg, init="multistart") if near else cfg,
                                  near)(*a_c)

        def run_part(c):
            pos = np.minimum(np.arange(c * part, (c + 1) * part), n - 1)
            idx = jnp.asarray(rows[pos])
            device = devices[c % n_dev] if n_dev > 1 else None
            return jax.device_get(run(idx, theta_guess[idx], device=device))

        parts = _map_in_threads(run_part, n_parts, w)
        first = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs)[:n], *parts)
        final = jax.tree_util.tree_map(np.copy, first)
        tried, won = np.zeros(n, bool), np.zeros(n, bool)
        member = lambda out, j: jax.tree_util.tree_map(lambda a: a[j], out)
        redo_pos = [j for j in range(n) if escalate and fallback
                    and init in _FALLBACK_INITS and _misfit(member(first, j), [n_res])]
        if redo_pos:
            # The members still above the noise floor: a vmapped multi-start from each one's
            # fit (one more compiled program, built only when some member needs it).
            pos = np.asarray(redo_pos)
            ms = jax.device_get(run(jnp.asarray(rows[pos]), jnp.asarray(first["start"][pos]),
                                    jnp.asarray(first["theta"][pos])))
            for j_ms, j in enumerate(redo_pos):
                tried[j] = True
                cand = member(ms, j_ms)
                if _better(member(first, j), cand) is cand:
                    won[j] = True
                    for name in final:
                        value = first[name][j] if name == "start" else cand[name]
                        final[name][j] = _fit_into(value, final[name].shape[1:])
        return first, final, tried, won

    t_start = time.perf_counter()
    if _scale.split_processes(distribute):
        # This process's share of the recordings, gathered once at the end.
        first, final, tried, won = _scale.gather_rows(solve(_scale.process_rows(size)), size)
    else:
        first, final, tried, won = solve(np.arange(size))
    members = [jax.tree_util.tree_map(lambda a, k=k: a[k], final) for k in range(size)]
    stages = [_stages(jax.tree_util.tree_map(lambda a, k=k: a[k], first), init, theta_guess[k],
                      len(spec.names))
              + (["multistart"] if tried[k] else []) for k in range(size)]
    escalated = [bool(x) for x in won]
    wall = time.perf_counter() - t_start
    failed = [k for k, o in enumerate(members) if not _finite_fit(o)]
    if failed:
        shown = ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
        message = _failure(
            f"fit_batch: recordings[{shown}] ({len(failed)} of {size})", spec,
            members[failed[0]], [recs[failed[0]]], example=f"for recordings[{failed[0]}], ",
        )
        if throw:
            raise SimulationError(message)
        warnings.warn(message, stacklevel=2)
    results = []
    for k, (rec, o) in enumerate(zip(recs, members)):
        b = base[k] if batched else base
        ok = k not in set(failed)
        res = _build_result(spec, b, o, [rec], sigma_from, _history(o, n_res), "lm", init, wall,
                            int(o["n_iter"]), bool(o["converged"]) and ok, noise)
        res.fallback_used = bool(o["used"])
        res.escalated = escalated[k]
        res.stages = tuple(stages[k])
        res.ok = ok
        res.electrode = _electrode_report(res, [rec])
        results.append(res)
    _warn_if_correlated([r for r in results if r.ok], noise)
    return results


_PARTS_PER_WORKER = 4


def _batch_program(batched, cfg, near=False):
    """The compiled, vmapped `_core` for one configuration (cached across calls); with
    `near`, the escalation's multi-start taking each member's fit so far as a last argument."""
    key_cfg = (batched, near, tuple(sorted((k, v_) for k, v_ in cfg.items() if k != "spec")),
               cfg["spec"])
    if key_cfg not in _batch_cache:
        def one(b, vv, ii, ss, th, k, iters, redo, *close):
            return _core(b, [(vv, ii, ss)], th, k, iters, redo, **cfg,
                         near=close[0] if close else None)

        axes = (0 if batched else None, 0, 0, 0, 0, 0, None, None) + ((0,) if near else ())
        _batch_cache[key_cfg] = eqx.filter_jit(jax.vmap(one, in_axes=axes))
    return _batch_cache[key_cfg]
