"""The step-protocol preset: fit a cortical model to a multi-sweep step protocol of a real cell,
then predict the other sweeps. [`fit_steps`][] is a thin preset over [`fit`][]: the
[`SpikeFeatures`][] objective, the [`CrossEntropy`][] solver, and a passive start read off a
subthreshold sweep.

Units: ms, mV, pA (recorded currents), µA/cm² (model), cm² (area).

Why this loss and this optimiser. Trace-level least squares on spiking sweeps of a real cell
is hopeless: a spike 1 ms early costs as much as no spike at all, so the loss surface is a
field of narrow local minima. The [`SpikeFeatures`][] loss therefore mixes

- **trace error where traces are comparable**: the RMS difference (in units of 0.5 mV) between
  model and data on every subthreshold training sweep, over the pre-step baseline, the
  charging curve and the plateau; this pins the resting potential, the input resistance
  (steady state) and the membrane time constant, i.e. area (capacitance), $g_L$ and $E_L$;
- **spike features where they are not**: on suprathreshold sweeps, the spike count
  (upward 0-mV crossings), the first-spike latency, the mean inter-spike interval
  (log ratio) and the resting potential, scaled so that 5 ms of latency, 10 % of ISI, 0.5 mV
  of rest or 0.5 mV RMS of subthreshold trace cost the same, and one spike too many or too
  few ten times that.

Counts are integers and latencies jump when a spike appears, so this loss has no useful
gradient in the spiking parameters. They ($\\bar g_{Na}$, $\\bar g_{Kd}$, $V_T$, $\\bar g_M$,
$\\tau_{max}$) are searched derivative-free, with the passive ones, by the cross-entropy method
(a population of a few hundred cells simulated in one vmapped exponential-Euler scan per
generation; the elite's mean and spread become the next sampling distribution). The passive
start comes from the data directly (input resistance and time constant of the subthreshold
training sweep); finally the passive parameters are polished by Adam (Optax) on the
differentiable subthreshold trace error, kept only if the full loss does not get worse.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._features import coincidence_factor
from ..models._cortical import Pospischil
from ..models._stepper import integrate
from ._config import CrossEntropy, Guess
from ._fit import FitResult, fit
from ._objectives import (
    SpikeFeatures,
    SpikeTiming,
    SweepFeatures,
    crossing_times,
    data_features,
)
from ._recording import Recording, current_steps, response_lag

__all__ = [
    "StepSweep",
    "step_sweep",
    "SweepFeatures",
    "data_features",
    "FitResult",
    "fit_steps",
    "predict_steps",
    "simulate_step",
    "choose_training",
    "FREE",
    "plot_steps",
    "passive_start",
    "step_recording",
]

FREE = ("area", "g_l", "e_l", "g_na", "g_kd", "v_t", "g_m", "tau_max")
"""The parameters the step-protocol fit frees (others stay at the model's values)."""
SCALE = {"area": 0.3, "g_l": 0.3, "e_l": 4.0, "g_na": 0.7, "g_kd": 0.8, "v_t": 6.0, "g_m": 1.0,
         "tau_max": 0.7}
"""The search's initial spread per field (log units; mV for potentials); others 0.5."""


@dataclasses.dataclass(frozen=True)
class StepSweep:
    """One sweep reduced to its first current step and a window around it.

    **Fields:** `sweep` (number in the file), `amplitude` (pA, the step above the holding
    current), `t_on`, `t_off` (ms, step edges within the window), `t` (ms, window times from
    0), `v` (mV, recorded), `dt` (ms), `holding` (pA, the current before the step; 0 for a
    clean command from zero), `lag` (samples by which the recorded response follows the
    command, already applied to `t_on` and `t_off`; see [`response_lag`][]).
    """

    sweep: int
    amplitude: float
    t_on: float
    t_off: float
    t: np.ndarray
    v: np.ndarray
    dt: float
    holding: float = 0.0
    lag: int = 0


def step_sweep(recording, *, pre: float = 100.0, post: float = 50.0) -> StepSweep | None:
    """The first current step of `recording` and the window `[on - pre, off + post]`.

    The current may be a clean command or a recorded (noisy) channel with a holding current,
    read by [`current_steps`][]: the step is where the current first departs from the holding
    level by over its threshold (8 times the current's noise, and 5 % of the largest
    departure, so that a small test pulse before it is passed over) until it leaves the
    step's own level by as much. The step's edges are moved by the
    samples the recorded response lags the command ([`response_lag`][]), so that the cell is
    stimulated when it responds.

    **Returns:** a [`StepSweep`][] (window times restart at 0), or `None` if the sweep has no
    current step. Currents are taken in pA (`recording.i_unit == "pA"`).
    """
    if getattr(recording, "i_unit", None) != "pA":
        raise ValueError(
            "step_sweep: needs the current in pA (an hhjax.io.Recording read without `area`); "
            f"got {type(recording).__name__} with i_unit={getattr(recording, 'i_unit', None)!r}."
        )
    t, v, i = (np.asarray(x, dtype=np.float64) for x in (recording.t, recording.v, recording.i_inj))
    holding, noise, thr, _, away = current_steps(i)
    if not away.size:
        return None
    on = int(away[0])
    level = float(np.median(i[on : on + 5]))
    left = np.flatnonzero(np.abs(i[on:] - level) > thr)
    off = on + int(left[0]) if left.size else len(i) - 1
    if noise > 0:
        level = float(np.median(i[on:off]))  # the step's level, its noise averaged out
    clean = holding + np.where((np.arange(len(i)) >= on) & (np.arange(len(i)) < off),
                               level - holding, 0.0)
    lag = response_lag(v, clean)
    on, off = min(on + lag, len(i) - 1), min(off + lag, len(i) - 1)
    dt = float(t[1] - t[0])
    k0 = max(0, on - int(round(pre / dt)))
    k1 = min(len(t), off + int(round(post / dt)))
    return StepSweep(
        sweep=int(getattr(recording, "sweep", 0)),
        amplitude=level - holding,
        t_on=float(t[on] - t[k0]),
        t_off=float(t[off] - t[k0]),
        t=t[k0:k1] - t[k0],
        v=v[k0:k1],
        dt=dt,
        holding=holding,
        lag=lag,
    )


# ---------------------------------------------------------------------------- simulation
def _grid(sweep: StepSweep, dt: float):
    steps = int(round(sweep.t[-1] / dt))
    t_mid = (np.arange(steps) + 0.5) * dt
    mask = ((t_mid >= sweep.t_on) & (t_mid < sweep.t_off)).astype(np.float64)
    return steps, mask


def simulate_step(model: Pospischil, sweep: StepSweep, dt: float = 0.05):
    """Simulate `model` (one cell) on the sweep's window from rest under the holding current;
    returns `(t, v)` in ms, mV."""
    steps, mask = _grid(sweep, dt)
    i = (sweep.holding + jnp.asarray(mask) * sweep.amplitude) * 1e-6 / model.area
    v = integrate(model, i, dt, model.rest_state(i[0]))
    return np.arange(steps + 1) * dt, np.asarray(v)


def passive_start(sweep: StepSweep, c_m: float = 1.0) -> dict:
    """Area, $g_L$, $E_L$ from a subthreshold step: input resistance and charging time constant.

    $R_{in} = \\Delta V_{ss}/I$, $\\tau$ from the time to reach 63 % of $\\Delta V_{ss}$; then
    $C = \\tau/R_{in}$, area $= C/c_m$, $g_L = 1/(R_{in}\\,\\text{area})$, $E_L$ = resting
    potential (the active currents at rest are neglected here; the search corrects them).
    """
    f = data_features(sweep.t, sweep.v, sweep.t_on, sweep.t_off)
    dv = f.steady - f.rest  # mV
    if not (np.isfinite(dv) and dv * sweep.amplitude > 0):
        # No response, or one of the wrong sign, gives no (or a negative) input resistance.
        raise ValueError(
            f"passive_start: sweep {sweep.sweep} ({sweep.amplitude:g} pA) changes the voltage "
            f"by {dv:.3g} mV (steady {f.steady:.4g} - rest {f.rest:.4g}); the passive estimate "
            "needs a subthreshold sweep whose steady voltage moves with the current. Pick "
            "another training sweep."
        )
    r_in = dv / sweep.amplitude * 1e9  # mV/pA -> Ohm: 1 mV / 1 pA = 1e9 Ohm
    after = (sweep.t >= sweep.t_on) & (sweep.t < sweep.t_off)
    tt, vv = sweep.t[after] - sweep.t_on, sweep.v[after]
    reached = np.flatnonzero((vv - f.rest) / dv >= 0.632)
    tau = float(tt[reached[0]]) if reached.size else 20.0  # ms
    tau = min(max(tau, 2.0), 200.0)
    cap = tau * 1e-3 / r_in  # F
    area = cap * 1e6 / c_m  # µF / (µF/cm²) = cm²
    g_l = 1.0 / (r_in * area) * 1e3  # S/cm² -> mS/cm²
    return dict(area=area, g_l=g_l, e_l=f.rest, r_in_mohm=r_in / 1e6, tau_ms=tau)


def step_recording(sweep: StepSweep, area: float) -> Recording:
    """A [`StepSweep`][] as a [`Recording`][]: the step's current in pA, converted over `area`
    (cm²; a model with its own `area` field is simulated over that one, see [`SpikeFeatures`][])."""
    on = (sweep.t >= sweep.t_on) & (sweep.t < sweep.t_off)
    return Recording(sweep.t, sweep.v, sweep.holding + np.where(on, sweep.amplitude, 0.0),
                     i_units="pA",
                     area=area, metadata=dict(sweep=sweep.sweep), check_units=False)


def fit_steps(
    sweeps: Sequence[StepSweep],
    *,
    base: Pospischil | None = None,
    free: Sequence[str] = FREE,
    dt: float = 0.1,
    population: int = 256,
    generations: int = 12,
    elite: float = 0.1,
    refine_steps: int = 40,
    restarts: int = 1,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
    objective: SpikeFeatures | SpikeTiming | None = None,
) -> FitResult:
    """Fit a [`Pospischil`][] model to training step sweeps (see the module docstring): a
    preset of [`fit`][] with `objective=SpikeFeatures(dt=dt)` (or the `objective` given) and
    `solver=CrossEntropy(...)`, started from the passive estimate ([`passive_start`][]).

    **Arguments:**

    - `sweeps`: training [`StepSweep`][]s (≤ 3 recommended: one subthreshold, two spiking).
    - `base`: the model whose other parameters are kept (default regular spiking).
    - `free`: the parameters searched (with the default, also `g_h` when `base` has an h
      current).
    - `dt`: simulation step (ms) of the search (exponential Euler).
    - `population`, `generations`, `elite`: cross-entropy search sizes.
    - `refine_steps`: Adam steps of the final polish of area, g_L and E_L (those free) on the
      subthreshold trace error (0 to skip).
    - `restarts`: independent searches (seeds `seed`, `seed + 1`, ...); the one with the
      lowest training loss is kept.
    - `seed`: random seed.
    - `progress`: called as `progress(generation, restarts * generations, best_loss)`
      (`best_loss` is `inf` until some model could be simulated on every training sweep).
    - `objective`: default `SpikeFeatures(dt=dt)`, whose polish moves area, g_L and E_L only
      (its gradient is the subthreshold trace's); a [`SpikeTiming`][] instead is polished in
      every free field (`dt` is then the objective's own).

    **Returns:**

    A [`FitResult`][] (`objective="features"` by default): `.params` (also `.model`), `.loss`,
    `.loss_history` (also `.history`: best per generation, restarts one after the other),
    `.passive` (the start estimate) and `.sweeps` (the training sweep numbers). Raises
    [`hhjax.SimulationError`][] when no model searched could be simulated on every training
    sweep.
    """
    sweeps, free = _check_fit_steps(sweeps, base, free, dt, population, generations, elite,
                                    refine_steps, restarts, seed, progress)
    base = Pospischil() if base is None else base
    base = base.astype(jnp.float64) if jax.config.jax_enable_x64 else base
    feats = [data_features(s.t, s.v, s.t_on, s.t_off) for s in sweeps]
    sub = [s for s, f in zip(sweeps, feats) if f.count == 0]
    passive = passive_start(sub[0], float(base.c_m)) if sub else {}
    start = base.replace(**{k: passive[k] for k in ("area", "g_l", "e_l") if k in passive})
    names = tuple(free)
    if tuple(free) == FREE and base.g_h.ndim == 0 and float(base.g_h) > 0:
        names = names + ("g_h",)  # a model with an h current gets its conductance fitted
    recs = [step_recording(s, float(base.area)) for s in sweeps]
    objective = SpikeFeatures(dt=dt) if objective is None else objective
    polish = (tuple(n for n in ("area", "g_l", "e_l") if n in names)
              if isinstance(objective, SpikeFeatures) else None)
    solver = CrossEntropy(population=population, generations=generations, elite=elite,
                          restarts=restarts, seed=seed, scale=dict(SCALE),
                          polish_steps=refine_steps, polish=polish)
    callback = None if progress is None else (
        lambda step, loss, _: progress(step, restarts * generations, loss))
    res = fit(recs, names, start, objective=objective, solver=solver, init=Guess(),
              callback=callback)
    res.details.update(passive=passive, sweeps=[s.sweep for s in sweeps])
    return res


def _check_fit_steps(sweeps, base, free, dt, population, generations, elite, refine_steps,
                     restarts, seed, progress):
    """`fit_steps`' arguments, checked before anything is compiled; returns `(sweeps, free)`."""
    if isinstance(sweeps, StepSweep) or not isinstance(sweeps, Sequence) or not sweeps:
        raise TypeError("`sweeps` must be a non-empty list of StepSweep (see step_sweep).")
    for k, sw in enumerate(sweeps):
        if not isinstance(sw, StepSweep):
            raise TypeError(f"`sweeps[{k}]` must be a StepSweep, got {type(sw).__name__}.")
    if base is not None and not isinstance(base, Pospischil):
        raise TypeError(f"`base` must be a Pospischil model or None, got {type(base).__name__}.")
    fields = (Pospischil() if base is None else base).field_names
    free = (free,) if isinstance(free, str) else tuple(free)
    if not free or len(set(free)) != len(free):
        raise ValueError(f"`free` must name distinct fields, got {free!r}.")
    for name in free:
        if name not in fields:
            raise ValueError(f"`free`: Pospischil has no field {name!r}; fields are {fields}.")
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating, np.integer)) or not (
        math.isfinite(dt) and dt > 0
    ):
        raise ValueError(f"`dt` must be a positive, finite number of ms, got {dt!r}.")
    for name, value, low in (("population", population, 2), ("generations", generations, 1),
                             ("refine_steps", refine_steps, 0), ("restarts", restarts, 1),
                             ("seed", seed, 0)):
        try:
            if isinstance(value, bool):
                raise TypeError
            n = operator.index(value)
        except TypeError:
            raise TypeError(f"`{name}` must be an integer, got {value!r}.") from None
        if n < low:
            raise ValueError(f"`{name}` must be at least {low}, got {value!r}.")
    if isinstance(elite, bool) or not isinstance(elite, (int, float, np.floating)) or not (
        0.0 < elite <= 1.0
    ):
        raise ValueError(f"`elite` must be a fraction in (0, 1], got {elite!r}.")
    if progress is not None and not callable(progress):
        raise TypeError(f"`progress` must be callable or None, got {type(progress).__name__}.")
    return list(sweeps), free


def predict_steps(model: Pospischil, sweeps: Sequence[StepSweep], dt: float = 0.05) -> list:
    """Simulate every sweep and compare features with the data.

    **Returns:** a list of dicts (one per sweep): sweep, amplitude (pA), data and model
    spike counts, steady-state voltages (mV), latencies (ms), whether the sweep spikes, and
    `gamma`, the coincidence factor of the model's spikes with the data's during the step
    ([`hhjax.coincidence_factor`][], ±4 ms; NaN where neither fires, or where the model
    fires at 125 Hz or more and Γ is undefined).
    """
    rows = []
    for sw in sweeps:
        t, v = simulate_step(model, sw, dt)
        fd = data_features(sw.t, sw.v, sw.t_on, sw.t_off)
        fm = data_features(t, v, sw.t_on, sw.t_off)
        # The spikes data_features counts (0 mV, re-armed 3 mV below), during the step.
        during = [s[(s >= sw.t_on) & (s < sw.t_off)] for s in
                  (crossing_times(sw.t, sw.v, 0.0, -3.0), crossing_times(t, v, 0.0, -3.0))]
        gamma = coincidence_factor(*during, duration=sw.t_off - sw.t_on)
        rows.append(
            dict(
                sweep=sw.sweep,
                amplitude_pA=sw.amplitude,
                spiking=fd.count > 0,
                count_data=fd.count,
                count_model=fm.count,
                steady_data=fd.steady,
                steady_model=fm.steady,
                rest_data=fd.rest,
                rest_model=fm.rest,
                latency_data=fd.latency,
                latency_model=fm.latency,
                gamma=gamma,
            )
        )
    return rows


def choose_training(sweeps: Sequence[StepSweep]) -> list[int]:
    """Default training set: one subthreshold sweep and two spiking sweeps.

    - Subthreshold: the strongest *depolarising* step that does not fire (it probes the
      membrane just below threshold, where the M and window currents act, and lies between
      the hyperpolarised and the spiking sweeps); if there is none, the median
      hyperpolarising step.
    - Spiking: the sweep at about 20 % of the spiking amplitudes and the one that fires most
      (sweeps beyond it are in depolarisation block), so that most held-out spiking sweeps
      are interpolations.

    **Returns:** positions into `sweeps`.
    """
    feats = [data_features(s.t, s.v, s.t_on, s.t_off) for s in sweeps]
    quiet = [k for k, f in enumerate(feats) if f.count == 0]
    pos = sorted((k for k in quiet if sweeps[k].amplitude > 0), key=lambda k: sweeps[k].amplitude)
    neg = sorted((k for k in quiet if sweeps[k].amplitude < 0), key=lambda k: sweeps[k].amplitude)
    spk = [k for k, f in enumerate(feats) if f.count > 0]
    spk.sort(key=lambda k: sweeps[k].amplitude)
    if spk:
        peak = max(range(len(spk)), key=lambda j: feats[spk[j]].count)
        spk = spk[: peak + 1]
    chosen = []
    if pos:
        chosen.append(pos[-1])
    elif neg:
        chosen.append(neg[len(neg) // 2])
    if spk:
        a = spk[int(round(0.2 * (len(spk) - 1)))]
        b = spk[-1]
        chosen += [a] if a == b else [a, b]
    return chosen


def plot_steps(model, sweeps, train=(), *, dt: float = 0.05, title: str = "", columns: int = 4):
    """Data (grey) and model (colour) for every sweep, one small panel each.

    **Arguments:** `model` (fitted [`Pospischil`][]), `sweeps` ([`StepSweep`][]s), `train`
    (sweep numbers used for fitting, marked "train"), `dt` (ms), `title`, `columns`.

    **Returns:** the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    rows = int(math.ceil(len(sweeps) / columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 1.7 * rows), sharey=True, squeeze=False
    )
    for ax in axes.flat[len(sweeps) :]:
        ax.axis("off")
    for ax, sw in zip(axes.flat, sweeps):
        t, v = simulate_step(model, sw, dt)
        fd = data_features(sw.t, sw.v, sw.t_on, sw.t_off)
        fm = data_features(t, v, sw.t_on, sw.t_off)
        ax.plot(sw.t, sw.v, color="0.6", lw=0.5)
        ax.plot(t, v, color="C3" if sw.sweep in train else "C0", lw=0.5)
        tag = "train" if sw.sweep in train else "test"
        ax.set_title(
            f"#{sw.sweep} {sw.amplitude:+.0f} pA {tag}: n {fd.count}/{fm.count}", fontsize=7
        )
        ax.tick_params(labelsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("mV", fontsize=7)
    fig.suptitle(
        title + "  (grey data, blue model, red = training sweep; n data/model)", fontsize=8
    )
    fig.tight_layout()
    return fig
