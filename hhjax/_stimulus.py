"""Injected-current stimuli: steps, pulse trains, sampled waveforms, Ornstein–Uhlenbeck noise.

Units: time in ms, current density in µA/cm² (inward, depolarising, positive).

Every stimulus is an `equinox.Module` with `__call__(t)` and `jump_ts()`. The latter lists the
times at which the current is discontinuous; [`hhjax.simulate`][] hands them to the step-size
controller so adaptive solvers step exactly onto each edge instead of smoothing it or rejecting
steps around it. Stimuli add: `Step(...) + Pulses(...)` is a [`SumStimulus`][]. Amplitudes
are arrays, so gradients flow to them.
"""

from __future__ import annotations

import abc
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import _check_batch_shapes, _check_finite, _check_numbers, _check_real, _concrete

__all__ = [
    "AbstractStimulus",
    "Step",
    "Pulses",
    "Sampled",
    "OUNoise",
    "SumStimulus",
    "as_stimulus",
]


class AbstractStimulus(eqx.Module):
    """Base class of all stimuli: a current density `I(t)` (µA/cm²) with declared jumps."""

    @abc.abstractmethod
    def __call__(self, t: ArrayLike) -> Array:
        """The current density (µA/cm²) at time `t` (ms)."""

    def jump_ts(self) -> Float[Array, " jumps"]:
        """Times (ms) where the current jumps; an empty array if it is continuous."""
        return jnp.zeros((0,))

    def check_span(self, t0: float, t1: float) -> None:
        """Raise or warn, eagerly, if this stimulus does not make sense on `[t0, t1]`."""

    def __add__(self, other: AbstractStimulus) -> SumStimulus:
        if not isinstance(other, AbstractStimulus):
            return NotImplemented
        left = self.terms if isinstance(self, SumStimulus) else (self,)
        right = other.terms if isinstance(other, SumStimulus) else (other,)
        return SumStimulus(left + right)


def _window(t, start, stop):
    # Half-open [start, stop): with jumps declared, the solver never evaluates exactly on an edge.
    return (t >= start) & (t < stop)


def _warn_outside(name: str, first, last, t0: float, t1: float) -> None:
    first, last = _concrete(first), _concrete(last)
    if first is None or last is None:
        return
    if np.all(np.asarray(first) >= t1) or np.all(np.asarray(last) <= t0):
        warnings.warn(
            f"{name} is zero over the whole simulated span [{t0}, {t1}] ms "
            f"(it acts on [{np.min(first)}, {np.max(last)}] ms); check `t1` or the stimulus "
            "times.",
            stacklevel=4,
        )


class Step(AbstractStimulus):
    """A current step: `amplitude` (µA/cm²) on `[start, stop)` ms, zero elsewhere.

    **Arguments:**

    - `amplitude`: µA/cm², finite.
    - `start`: onset (ms); default 0; `-inf` for a current that was always on.
    - `stop`: offset (ms), after `start`; default never (`inf`).

    Concrete values are checked on construction: NaN (or an infinite amplitude) raises
    `ValueError`, a complex value `TypeError`.
    """

    amplitude: Array = eqx.field(converter=jnp.asarray)
    start: Array = eqx.field(converter=jnp.asarray, default=0.0)
    stop: Array = eqx.field(converter=jnp.asarray, default=jnp.inf)

    def __check_init__(self):
        for name in ("amplitude", "start", "stop"):
            _check_real("Step", name, getattr(self, name))
        _check_batch_shapes("Step", {n: getattr(self, n) for n in ("amplitude", "start", "stop")})
        _check_finite("Step", "amplitude", self.amplitude, "µA/cm²")
        # start = -inf is a current that was always on (`as_stimulus(constant)` builds one);
        # stop = +inf one that never ends.
        start = _check_finite("Step", "start", self.start, "ms", allow_neginf=True)
        stop = _check_finite("Step", "stop", self.stop, "ms", allow_posinf=True)
        if start is not None and stop is not None and np.any(stop <= start):
            raise ValueError(f"Step: `stop` ({stop}) must be after `start` ({start}).")

    def __call__(self, t):
        return jnp.where(_window(t, self.start, self.stop), self.amplitude, 0.0)

    def jump_ts(self):
        return jnp.stack([self.start, self.stop]).reshape(-1)

    def check_span(self, t0, t1):
        _warn_outside("Step", self.start, self.stop, t0, t1)


class Pulses(AbstractStimulus):
    """A train of rectangular pulses, each with its own amplitude, onset and width.

    Seed 001's double pulse is `Pulses([150.0, 50.0], starts=[0.0, 10.0], widths=[1.0, 1.0])`.
    For a regular train use [`Pulses.train`][].

    **Arguments:**

    - `amplitudes`: µA/cm², shape `(pulses,)`.
    - `starts`: onsets (ms), shape `(pulses,)`.
    - `widths`: durations (ms), shape `(pulses,)` or a scalar shared by all pulses; > 0.

    Every value must be finite (checked on construction when concrete).
    """

    amplitudes: Array = eqx.field(converter=jnp.atleast_1d)
    starts: Array = eqx.field(converter=jnp.atleast_1d)
    widths: Array = eqx.field(converter=jnp.atleast_1d)

    def __init__(self, amplitudes, starts, widths):
        amplitudes, starts, widths = (
            jnp.atleast_1d(jnp.asarray(x)) for x in (amplitudes, starts, widths)
        )
        if widths.shape[-1:] == (1,) and starts.shape[-1] != 1:
            widths = jnp.broadcast_to(widths, starts.shape)
        if not (amplitudes.shape[-1] == starts.shape[-1] == widths.shape[-1]):
            raise ValueError(
                "Pulses: `amplitudes`, `starts` and `widths` must have one entry per pulse; got "
                f"lengths {amplitudes.shape[-1]}, {starts.shape[-1]}, {widths.shape[-1]}."
            )
        for name, x in (("amplitudes", amplitudes), ("starts", starts), ("widths", widths)):
            _check_real("Pulses", name, x)
            _check_finite("Pulses", name, x, "ms" if name != "amplitudes" else "µA/cm²")
        w = _concrete(widths)
        if w is not None and np.any(w <= 0):
            raise ValueError(f"Pulses: every width must be > 0 ms, got {w}.")
        self.amplitudes, self.starts, self.widths = amplitudes, starts, widths

    @classmethod
    def train(cls, amplitude, start, width, period, count: int) -> Pulses:
        """`count` (an int >= 1) equal pulses of `amplitude` (µA/cm²) and `width` (ms), one
        every `period` ms from `start` (ms)."""
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
            raise TypeError(
                f"Pulses.train: `count` must be a whole number of pulses (an int), got {count!r}."
            )
        if count < 1:
            raise ValueError(
                f"Pulses.train: `count` must be >= 1, got {count}; for no current pass "
                "`stimulus=None`."
            )
        _check_numbers(
            "Pulses.train",
            ("amplitude", amplitude, "µA/cm²"),
            ("start", start, "ms"),
            ("width", width, "ms"),
            ("period", period, "ms"),
        )
        if period <= width:
            raise ValueError(f"Pulses.train: `period` ({period}) must exceed `width` ({width}).")
        starts = start + period * np.arange(count)
        return cls(jnp.full((count,), amplitude), starts, jnp.full((count,), width))

    def __call__(self, t):
        on = _window(t, self.starts, self.starts + self.widths)
        return jnp.sum(jnp.where(on, self.amplitudes, 0.0), axis=-1)

    def jump_ts(self):
        return jnp.concatenate([self.starts, self.starts + self.widths], axis=-1).reshape(-1)

    def check_span(self, t0, t1):
        _warn_outside("Pulses", self.starts, self.starts + self.widths, t0, t1)


class Sampled(AbstractStimulus):
    """A current sampled on a time grid, e.g. a recorded command waveform.

    **Arguments:**

    - `ts`: sample times (ms), finite and strictly increasing, shape `(samples,)`.
    - `values`: current (µA/cm²) at those times, finite, shape `(samples,)`.
    - `hold`: `False` (default) interpolates linearly; `True` holds each sample until the next
      (zero-order hold, what a digitised command step is).
    - `jumps`: discontinuity times (ms). Default: for `hold=True`, the times where the value
      changes (found once, at construction); none for linear interpolation.

    Outside `[ts[0], ts[-1]]` the end values are held; [`hhjax.simulate`][] refuses a span the
    samples do not cover.
    """

    ts: Array
    values: Array
    hold: bool = eqx.field(static=True)
    jumps: Array

    def __init__(self, ts, values, *, hold: bool = False, jumps=None):
        ts, values = jnp.asarray(ts), jnp.asarray(values)
        if ts.ndim != 1 or values.shape[-1:] != ts.shape:
            raise ValueError(
                f"Sampled: `values` must have one entry per time in `ts`; got ts shape "
                f"{ts.shape} and values shape {values.shape}."
            )
        if ts.shape[0] < 2:
            raise ValueError("Sampled: need at least two samples.")
        _check_real("Sampled", "ts", ts)
        _check_real("Sampled", "values", values)
        _check_finite("Sampled", "values", values, "µA/cm²")
        ts_np = _check_finite("Sampled", "ts", ts, "ms")
        if ts_np is not None and not np.all(np.diff(ts_np) > 0):
            raise ValueError("Sampled: `ts` must be strictly increasing.")
        if jumps is None:
            values_np = _concrete(values)
            if hold and values_np is not None and ts_np is not None:
                steps = np.diff(values_np.reshape(-1, ts.shape[0]), axis=-1)
                changed = np.flatnonzero(np.any(steps != 0, axis=0))
                jumps = ts_np[changed + 1]
            else:
                jumps = np.zeros((0,))
        else:
            _check_real("Sampled", "jumps", jnp.asarray(jumps))
            _check_finite("Sampled", "jumps", jumps, "ms")
        self.ts, self.values, self.hold = ts, values, hold
        self.jumps = jnp.asarray(jumps, dtype=ts.dtype)

    def __call__(self, t):
        if self.hold:
            idx = jnp.clip(jnp.searchsorted(self.ts, t, side="right") - 1, 0, self.ts.shape[0] - 1)
            return self.values[..., idx]
        return jnp.interp(t, self.ts, self.values)

    def jump_ts(self):
        return self.jumps

    def check_span(self, t0, t1):
        ts = _concrete(self.ts)
        if ts is None:
            return
        # Allow half a sample of slack at each end for grids that start at t0 exactly.
        slack = 0.5 * float(np.min(np.diff(ts)))
        if ts[0] > t0 + slack or ts[-1] < t1 - slack:
            raise ValueError(
                f"Sampled stimulus covers [{ts[0]}, {ts[-1]}] ms but the simulation spans "
                f"[{t0}, {t1}] ms; pass samples covering the span or shorten `t1`."
            )


class OUNoise(AbstractStimulus):
    r"""Ornstein–Uhlenbeck noise current, reproducible from a PRNG key.

    $I(t) = \mu + \sigma z(t)$ where $z$ is a unit-variance OU process with correlation time
    $\tau$, sampled exactly on a grid of spacing `dt` ($z_{k+1} = a z_k + \sqrt{1-a^2}\,\xi_k$,
    $a = e^{-dt/\tau}$, $z_0$ drawn from the stationary law) and interpolated linearly between.
    The path is fixed by `key`; `mean` and `sigma` are differentiable.

    **Arguments:**

    - `mean`: µA/cm². `sigma`: standard deviation (µA/cm²), >= 0. `tau`: correlation time
      (ms), > 0. All finite (checked on construction when concrete).
    - `t0`, `t1`: the span (ms) the path covers. `dt`: its grid spacing (ms), default 0.1.
    - `key`: a `jax.random` key.
    """

    mean: Array
    sigma: Array
    tau: Array
    grid: Array
    z: Array

    def __init__(self, mean, sigma, tau, t0, t1, *, key: PRNGKeyArray, dt: float = 0.1):
        _check_numbers(
            "OUNoise",
            ("mean", mean, "µA/cm²"),
            ("sigma", sigma, "µA/cm²"),
            ("tau", tau, "ms"),
            ("t0", t0, "ms"),
            ("t1", t1, "ms"),
            ("dt", dt, "ms"),
        )
        if not t1 > t0:
            raise ValueError(f"OUNoise: `t1` ({t1}) must be after `t0` ({t0}).")
        if not dt > 0:
            raise ValueError(f"OUNoise: `dt` must be > 0 ms, got {dt}.")
        tau_np, sigma_np = _concrete(tau), _concrete(sigma)
        if tau_np is not None and np.any(tau_np <= 0):
            raise ValueError(f"OUNoise: `tau` must be > 0 ms, got {tau_np}.")
        if sigma_np is not None and np.any(sigma_np < 0):
            raise ValueError(
                f"OUNoise: `sigma` must be >= 0 µA/cm² (a standard deviation), got {sigma_np}."
            )
        n = int(np.ceil((t1 - t0) / dt)) + 1
        self.mean, self.sigma, self.tau = (jnp.asarray(x) for x in (mean, sigma, tau))
        self.grid = t0 + dt * jnp.arange(n, dtype=self.mean.dtype)
        a = jnp.exp(-dt / self.tau)
        xi = jax.random.normal(key, (n,), dtype=self.mean.dtype)

        def step(z, x):
            z = a * z + jnp.sqrt(1.0 - a * a) * x
            return z, z

        _, rest = jax.lax.scan(step, xi[0], xi[1:])
        self.z = jnp.concatenate([xi[:1], rest])

    def __call__(self, t):
        return self.mean + self.sigma * jnp.interp(t, self.grid, self.z)

    def check_span(self, t0, t1):
        grid = _concrete(self.grid)
        if grid is not None and (grid[0] > t0 + 1e-9 or grid[-1] < t1 - 1e-9):
            raise ValueError(
                f"OUNoise path covers [{grid[0]}, {grid[-1]}] ms but the simulation spans "
                f"[{t0}, {t1}] ms; build it with the simulation's t0 and t1."
            )


class SumStimulus(AbstractStimulus):
    """The sum of several stimuli (built by `a + b`)."""

    terms: tuple[AbstractStimulus, ...]

    def __check_init__(self):
        if not self.terms:
            raise ValueError("SumStimulus: `terms` is empty; pass `stimulus=None` for no current.")
        for term in self.terms:
            if not isinstance(term, AbstractStimulus):
                raise TypeError(
                    "SumStimulus: every term must be a stimulus (Step, Pulses, Sampled, OUNoise), "
                    f"got {type(term).__name__}; a constant current is Step(value, start=-inf)."
                )

    def __call__(self, t):
        return sum(term(t) for term in self.terms)

    def jump_ts(self):
        return jnp.concatenate([term.jump_ts().reshape(-1) for term in self.terms])

    def check_span(self, t0, t1):
        for term in self.terms:
            term.check_span(t0, t1)


def as_stimulus(stimulus, *, per_neuron: bool = False) -> AbstractStimulus | None:
    """Accept `None`, a number (a constant current from t = -inf) or a stimulus; with
    `per_neuron` also a 1-D array, one constant current per neuron of a batch.

    The one stimulus convention of every path: a stimulus is a function of time sampled where
    the solver asks for it (adaptive solvers at their stages, with its edges stepped on; the
    exponential-Euler paths at each step's midpoint), and a constant is a step that was
    always on."""
    if stimulus is None or isinstance(stimulus, AbstractStimulus):
        return stimulus
    array = hasattr(stimulus, "shape") or isinstance(stimulus, (list, tuple))
    if isinstance(stimulus, (int, float)) or (array and np.ndim(stimulus) == 0):
        value = _concrete(stimulus)
        if value is not None and not np.isfinite(value):
            raise ValueError(
                f"`stimulus`, a constant current, must be a finite number of µA/cm², got {value}."
            )
        return Step(stimulus, start=-jnp.inf)
    if per_neuron and array:
        amplitude = jnp.asarray(stimulus)
        if amplitude.ndim > 1:
            raise ValueError(
                f"An array `stimulus` must be 1-D (one per neuron), got {amplitude.shape}."
            )
        return Step(amplitude, start=-jnp.inf)
    raise TypeError(
        f"`stimulus` must be an hhjax stimulus (Step, Pulses, Sampled, OUNoise, a sum of these), "
        f"a number in µA/cm², or None; got {type(stimulus).__name__}."
    )
