"""Configuration of a fit as small named objects (optimistix style): an initialiser (where the
optimiser starts) and a solver (how it descends). [`fit`][] and [`fit_batch`][] take them as
`init=` and `solver=`; the older strings (`init="linear"`, `method="optax"`, ...) stay as
aliases of the same objects.

    fit(rec, free, params0, init=MultiStart(n_starts=32), solver=LevenbergMarquardt(max_iter=60))

The objective is the trace least squares $\\sum_t (v_{sim}(t) - v_{obs}(t))^2 / \\sigma^2$ over
every recording, the initial voltage of each fitted as a nuisance coordinate (`y0="fit"`).
"""

from __future__ import annotations

import equinox as eqx
import optax

from ._free import check_count, check_real

__all__ = [
    "AbstractInit", "Auto", "Linear", "Guess", "Nudge", "MultiStart",
    "AbstractSolver", "LevenbergMarquardt", "Optax", "CrossEntropy", "Electrode",
    "NUDGE_SCHEDULE",
]

NUDGE_SCHEDULE = (30.0, 10.0, 3.0, 1.0, 0.3)
"""Default nudging strengths (1/ms), strongest first."""


class AbstractInit(eqx.Module):
    """Where a fit starts. `name` is the string alias."""

    name = "abstract"


class Auto(AbstractInit):
    """The linear estimate (for free fields outside its reach, e.g. a threshold V_T: the
    estimate at the best of several draws of them, ranked by the estimate's own misfit), or
    `params0` if that fits the data better. The default."""

    name = "auto"


class Linear(AbstractInit):
    """The linear estimate ([`linear_estimate`][]); no guess needed for the fields it covers
    ([`linear_fields`][] of the model)."""

    name = "linear"


class Guess(AbstractInit):
    """`params0` itself (if the model cannot be simulated there, the lowest-loss of
    `n_starts` draws within ×`spread` of it)."""

    name = "guess"
    n_starts: int = 16
    spread: float = 3.0


class Nudge(AbstractInit):
    """Annealed nudging from `params0`: each stage a few LM iterations with
    $k(v_{obs} - v)$ added to $dv/dt$, $k$ along `schedule` (1/ms)."""

    name = "nudge"
    schedule: tuple[float, ...] = NUDGE_SCHEDULE


class MultiStart(AbstractInit):
    """`n_starts` starts within ×`spread` of `params0` (potentials ±1.5 `spread`-free units of
    10 mV), half of them with the linear estimate's conductances for their kinetics, all
    polished in one vmapped call; the lowest loss is kept."""

    name = "multistart"
    n_starts: int = 16
    spread: float = 3.0
    seed: int = 0


class AbstractSolver(eqx.Module):
    """How a fit descends. `method` is the string alias."""

    method = "abstract"


class LevenbergMarquardt(AbstractSolver):
    """Levenberg–Marquardt on forward-mode Jacobians, in one compiled loop.

    - `max_iter`: iteration cap.
    - `fallback`, `fallback_threshold`: refit with annealed nudging (`nudges`, 1/ms) when the
      final mean squared residual exceeds `fallback_threshold` σ².
    - `escalate`: then, if the fit is still above the noise floor, a vmapped multi-start.
    """

    method = "lm"
    max_iter: int = 100
    nudges: tuple[float, ...] = NUDGE_SCHEDULE
    fallback: bool = True
    fallback_threshold: float = 1.1
    escalate: bool = True


class Optax(AbstractSolver):
    """A first-order loop with an Optax optimiser (default Adam, learning rate 0.02) on the
    transformed coordinates; checkpoints and resumes (see [`fit`][]'s `checkpoint`)."""

    method = "optax"
    optimizer: optax.GradientTransformation | None = None
    steps: int = 500
    clip: float | None = 10.0
    patience: int | None = 50
    min_delta: float = 1e-6


class CrossEntropy(AbstractSolver):
    """A derivative-free population search (the cross-entropy method) for objectives without
    a useful gradient ([`SpikeFeatures`][], [`SpikeTiming`][]): each generation draws
    `population` parameter vectors from a normal distribution in the fit's coordinates, scores
    them in one vmapped call, and refits the distribution to the best `elite` fraction (its
    spread never below 2 % of the first). `restarts` independent searches (seeds `seed`,
    `seed + 1`, ...) run one after the other; the lowest loss wins. Then `polish_steps` Adam
    steps (learning rate `learning_rate` per log unit or per mV) on the objective's smooth
    part, over the free fields named in `polish` (default: all), kept only if the whole loss
    does not get worse.

    - `scale`: `{field: initial spread}`, in log units for positive fields and mV for
      potentials; default 0.5 and 4 mV.
    - `distribute`: score each generation's population across the processes of
      `jax.distributed` too (each scores its share; the losses are gathered, a few bytes per
      member, once per generation); every process must then make the same `fit` call. The
      population is always spread over this process's devices (same result as one device).
    """

    method = "cem"
    population: int = 256
    generations: int = 12
    elite: float = 0.1
    restarts: int = 1
    seed: int = 0
    scale: dict | None = None
    polish_steps: int = 40
    polish: tuple[str, ...] | None = None
    learning_rate: float = 0.01
    distribute: bool = False


class Electrode(eqx.Module):
    """The recording model: what lies between the cell and the recorded voltage, fitted beside
    the cell's parameters (each a nuisance coordinate shared by the recordings of a fit).

    - `series_resistance`: an uncompensated (or over-compensated: negative) bridge adds
      $R_s I$ to the recorded voltage, a jump at every current step. Coordinate `rho_s`
      (kΩ·cm²: $R_s$ times the recording's area, so that $\\rho_s i$ with $i$ in µA/cm² is
      mV), started from the jumps at the current's steps ([`estimate_series_resistance`][]);
      [`FitResult`][]`.electrode` gives it in MΩ for recordings read in pA or nA.
    - `time_constant`: the bridge error follows the current with a time constant `tau_e`
      (ms; an amplifier filter, the electrode's capacitance), started at half a sample
      interval: for recordings whose jumps spread over more than one sample.
    - `offset`: a constant voltage offset `v_offset` (mV; a liquid-junction potential). It
      trades against every potential of the model; free it only with them fixed.
    - `holding`: a constant holding current `i_hold` (µA/cm², reported in pA where the area
      is known) added to the recorded one, which the cell receives but the bridge does not
      show (a current channel that misses it).
    """

    series_resistance: bool = True
    time_constant: bool = False
    offset: bool = False
    holding: bool = False


_INITS = {c.name: c for c in (Auto, Linear, Guess, Nudge, MultiStart)}


def resolve_init(init) -> AbstractInit:
    """An initialiser object from an object or its string alias."""
    if isinstance(init, AbstractInit):
        if type(init) is AbstractInit:
            raise TypeError("`init` must be a concrete initialiser, e.g. hhjax.fitting.Auto().")
        return init
    if isinstance(init, str) and init in _INITS:
        return _INITS[init]()
    raise ValueError(
        f"`init` must be an initialiser object (Auto(), Linear(), Guess(), Nudge(), "
        f"MultiStart()) or one of {tuple(_INITS)}, got {init!r}."
    )


def resolve_solver(solver, method: str) -> AbstractSolver:
    """A solver object from `solver` (an object or None) and the `method` string alias."""
    if solver is None:
        if method == "lm":
            return LevenbergMarquardt()
        if method == "optax":
            return Optax()
        if method == "cem":
            return CrossEntropy()
        raise ValueError(f"`method` must be 'lm', 'optax' or 'cem', got {method!r}.")
    if not isinstance(solver, AbstractSolver) or type(solver) is AbstractSolver:
        raise TypeError(
            "`solver` must be hhjax.fitting.LevenbergMarquardt(...), Optax(...) or "
            f"CrossEntropy(...), got {type(solver).__name__}."
        )
    if method not in ("lm", solver.method):
        raise ValueError(
            f"`method={method!r}` contradicts `solver={type(solver).__name__}(...)`; pass one.")
    check_count("max_iter", getattr(solver, "max_iter", 1))
    check_real("fallback_threshold", getattr(solver, "fallback_threshold", 1.0), at_least=0.0)
    if isinstance(solver, CrossEntropy):
        for name, low in (("population", 2), ("generations", 0), ("restarts", 1), ("seed", 0),
                          ("polish_steps", 0)):
            check_count(f"solver.{name}", getattr(solver, name), minimum=low)
        elite = check_real("solver.elite", solver.elite, above=0.0)
        if elite > 1.0:
            raise ValueError(f"`solver.elite` must be a fraction in (0, 1], got {elite!r}.")
        check_real("solver.learning_rate", solver.learning_rate, above=0.0)
        for name, x in (solver.scale or {}).items():
            check_real(f"solver.scale[{name!r}]", x, above=0.0)
        if not isinstance(solver.distribute, bool):
            raise ValueError(f"`solver.distribute` must be True or False, got "
                             f"{solver.distribute!r}.")
    return solver
