"""Read current-clamp recordings (ABF, NWB, CSV, NPZ) into one `Recording` per sweep.

Units after reading, whatever the file used: time in ms, membrane potential in mV, injected
current in pA (`i_unit="pA"`), or in µA/cm² (`i_unit="uA/cm2"`) when the reader is given the
membrane `area` (cm²): $I\\,[\\mu A/cm^2] = 10^{-6} I\\,[pA] / \\text{area}$. Conversion happens
once, here; [`Recording.density`][] converts later if the area is only known after a fit.

Every reader raises [`RecordingError`][] (a `ValueError`) naming the file and the problem for a
file it cannot use: unreadable or truncated, a channel that does not exist, voltage-clamp data
(current recorded, voltage commanded), no injected current, non-finite samples (NaN/inf; a CSV
reader names the line), or numbers whose size cannot be in the stated units: a membrane
potential that never leaves ±1 mV (volts read as mV), or sample times closer than 1 µs or
spanning under 5 ms at under 10 µs spacing (seconds read as ms). The message names the fix,
usually a unit argument; `check_units=False` skips the size checks for data that really are
that small.

Without `area`, readers return this module's [`Recording`][] (fields `t`, `v`, `i_inj`,
`i_unit`, `sweep`, `source`), which keeps the current in pA because the area of a real cell
is usually only known after a fit. With `area`, or via [`Recording.to_fitting`][], they
return [`hhjax.fitting.Recording`][] with the current in µA/cm², ready for `hhjax.fitting.fit`.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "Recording",
    "RecordingError",
    "read",
    "read_abf",
    "read_nwb",
    "read_csv",
    "read_npz",
    "TIME_UNITS",
    "VOLTAGE_UNITS",
    "CURRENT_UNITS",
]

TIME_UNITS = {"s": 1e3, "sec": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3}
"""Factors to ms."""
VOLTAGE_UNITS = {"V": 1e3, "mV": 1.0, "uV": 1e-3, "µV": 1e-3}
"""Factors to mV."""
CURRENT_UNITS = {"A": 1e12, "uA": 1e6, "µA": 1e6, "nA": 1e3, "pA": 1.0, "fA": 1e-3}
"""Factors to pA."""
DENSITY = "uA/cm2"
"""The unit string of a current density (µA/cm²)."""

# Sizes that cannot be in ms and mV. No current-clamp digitiser samples faster than 1 MHz, and a
# whole recording shorter than 5 ms sampled faster than 100 kHz is seconds read as ms. A
# membrane potential never stays within ±1 mV of 0 for a whole sweep (rest is -40 to -90 mV);
# volts read as mV do (|v| < 0.2).
_MIN_DT_MS = 1e-3
_SHORT_SPAN_MS, _FINE_DT_MS = 5.0, 1e-2
_MIN_MAX_ABS_V_MV = 1.0


class RecordingError(ValueError):
    """A recording file cannot be used; the message names the file and the problem."""


def _first_non_increasing(t) -> int | None:
    """The first `k` with `t[k + 1] <= t[k]`, or `None` when `t` is strictly increasing."""
    bad = np.flatnonzero(np.diff(t) <= 0)
    return int(bad[0]) if bad.size else None


def _unit_problems(t, v) -> dict[str, str]:
    """Why times `t` (ms) and voltages `v` (mV) cannot be in those units; empty if they can.

    **Arguments:**

    - `t`: sample times (ms), increasing, shape `(samples,)`.
    - `v`: membrane potential (mV), shape `(samples,)`.

    **Returns:**

    A dict with key `"t"` and/or `"v"`, each a sentence saying what looks wrong and which
    unit the numbers look like (seconds, volts).
    """
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    problems = {}
    if t.size >= 2:
        dt = float(np.median(np.diff(t)))
        span = float(t[-1] - t[0])
        if dt < _MIN_DT_MS or (span < _SHORT_SPAN_MS and dt < _FINE_DT_MS):
            problems["t"] = (
                f"`t` spans {span:.3g} ms with samples {dt:.3g} ms apart "
                f"({1e-3 / dt:.3g} MHz sampling), too short and too fast for milliseconds: "
                "it looks like seconds"
            )
    if v.size and float(np.max(np.abs(v))) < _MIN_MAX_ABS_V_MV:
        problems["v"] = (
            f"`v` stays within ±{float(np.max(np.abs(v))):.3g} mV for the whole sweep: it looks "
            "like volts (a cell resting near 0 mV, as in the 1952 convention, with sub-mV "
            "responses is the one exception: pass `check_units=False` for it)"
        )
    return problems


def _check_samples(where, t, v, i, *, fix_t, fix_v, check_units=True):
    """Raise `RecordingError` (prefixed by `where`) for shape, NaN, order or unit problems."""
    if not (t.shape == v.shape == i.shape) or t.ndim != 1:
        raise RecordingError(
            f"{where}: time, voltage and current differ in shape or are not 1-D "
            f"({t.shape}, {v.shape}, {i.shape})."
        )
    if t.size < 2:
        raise RecordingError(f"{where}: need at least two samples, got {t.size}.")
    for name, x in (("t", t), ("v", v), ("i_inj", i)):
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            k = int(bad[0])
            at = f" (t = {float(t[k]):g} ms)" if name != "t" else ""
            raise RecordingError(
                f"{where}: `{name}` has {bad.size} non-finite sample(s) (NaN/inf), first at "
                f"sample {k}{at}; remove or interpolate them before using the recording."
            )
    k = _first_non_increasing(t)
    if k is not None:
        raise RecordingError(
            f"{where}: sample times are not increasing: t[{k + 1}] = {float(t[k + 1]):g} ms "
            f"follows t[{k}] = {float(t[k]):g} ms."
        )
    if check_units:
        problems = _unit_problems(t, v)
        if "t" in problems:
            raise RecordingError(f"{where}: {problems['t']}; {fix_t}.")
        if "v" in problems:
            raise RecordingError(f"{where}: {problems['v']}; {fix_v}.")


def _times(t) -> np.ndarray:
    """Sample times as float64, or float32 if given so (their resolution is that of float32)."""
    t = np.asarray(t)
    return t.astype(np.float32 if t.dtype == np.float32 else np.float64)


@dataclasses.dataclass(frozen=True)
class Recording:
    """One current-clamp sweep as read: times (ms), membrane potential (mV), current (pA).

    **Fields:**

    - `t`: sample times (ms), shape `(samples,)`, increasing.
    - `v`: membrane potential (mV), shape `(samples,)`.
    - `i_inj`: injected current, shape `(samples,)`, in `i_unit`.
    - `i_unit`: `"pA"` or `"uA/cm2"` (µA/cm²).
    - `sweep`: sweep number in the file (0-based).
    - `source`: the file it came from.
    - `check_units` (keyword-only): refuse times and voltages whose size cannot be ms and mV
      (see the module docstring); default `True`.

    Construction raises [`RecordingError`][] for mismatched shapes, non-finite samples, times
    that do not increase, or (with `check_units`) seconds or volts.
    """

    t: np.ndarray
    v: np.ndarray
    i_inj: np.ndarray
    i_unit: str = "pA"
    sweep: int = 0
    source: str = ""
    check_units: bool = dataclasses.field(default=True, kw_only=True, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "t", _times(self.t))
        for name in ("v", "i_inj"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if self.i_unit not in ("pA", DENSITY):
            raise RecordingError(
                f"Recording: `i_unit` must be 'pA' or {DENSITY!r}, got {self.i_unit!r}; convert "
                "the current to pA first (or read the file with `i_unit=`)."
            )
        where = f"{self.source}: sweep {self.sweep}" if self.source else "Recording"
        _check_samples(
            where,
            self.t,
            self.v,
            self.i_inj,
            fix_t="convert `t` to ms (multiply seconds by 1e3), or pass `check_units=False` "
            "if the values are right",
            fix_v="convert `v` to mV (multiply volts by 1e3), or pass `check_units=False` "
            "if the values are right",
            check_units=self.check_units,
        )

    def density(self, area: float) -> np.ndarray:
        """The injected current as a density (µA/cm²) on a membrane of `area` (cm²)."""
        return _density(self.i_inj, self.i_unit, area, self.source)

    def to_fitting(self, area: float | None = None):
        """This sweep as [`hhjax.fitting.Recording`][] (current in µA/cm² on `area` cm²).

        Falls back to an `io.Recording` with `i_unit="uA/cm2"` if `hhjax.fitting` is absent.
        """
        density = self.density(area)
        cls = _fitting_recording()
        if cls is None:
            return dataclasses.replace(self, i_inj=density, i_unit=DENSITY)
        meta = dict(source=self.source, sweep=self.sweep, area_cm2=area, i_unit_file=self.i_unit)
        # A current in pA stays one: the fitting Recording converts it over `area` and keeps
        # the area, so a model's own area and a series resistance in MΩ can be fitted.
        current, unit = (self.i_inj, "pA") if self.i_unit == "pA" else (density, DENSITY)
        try:
            return cls(self.t, self.v, current, i_units=unit,
                       area=area if unit == "pA" else None, metadata=meta,
                       check_units=self.check_units)
        except ValueError as err:
            raise RecordingError(f"{self.source}: sweep {self.sweep}: {err}") from None

    @property
    def dt(self) -> float:
        """The sampling interval (ms): the mean spacing of `t`."""
        t = np.asarray(self.t, dtype=np.float64)
        return float((t[-1] - t[0]) / (t.shape[0] - 1))


def _density(i_inj, i_unit, area, source=""):
    if i_unit == DENSITY:
        return np.asarray(i_inj)
    if area is None or not np.isfinite(area) or area <= 0:
        raise RecordingError(
            f"{source}: converting {i_unit} to µA/cm² needs the membrane `area` in cm² (> 0), "
            f"got {area!r}."
        )
    return np.asarray(i_inj) * CURRENT_UNITS[i_unit] * 1e-6 / area


def _fitting_recording():
    try:
        from .fitting import Recording as FitRecording
    except Exception:  # the fitting module is optional here
        return None
    return FitRecording


def _make(path, sweep, t, v, i, area, unit="pA", *, fix_t, fix_v, check_units=True):
    """One checked sweep; `fix_t`/`fix_v` say how to fix seconds/volts with this reader."""
    t = _times(t)
    v = np.asarray(v, dtype=np.float64)
    i = np.asarray(i, dtype=np.float64)
    where = f"{path}: sweep {sweep}"
    _check_samples(where, t, v, i, fix_t=fix_t, fix_v=fix_v, check_units=check_units)
    rec = Recording(t, v, i, unit, int(sweep), str(path), check_units=check_units)
    if area is None and unit == "pA":
        return rec
    return rec.to_fitting(area)


def _check_path(path) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such file.")
    return path


def _select(path, available: Sequence[int], sweeps) -> list[int]:
    if sweeps is None:
        return list(available)
    if isinstance(sweeps, int | np.integer):
        sweeps = [int(sweeps)]
    chosen = [int(s) for s in sweeps]
    bad = [s for s in chosen if s not in available]
    if bad:
        raise RecordingError(
            f"{path}: no sweep(s) {bad}; the file has sweeps {available[0]}..{available[-1]}."
        )
    return chosen


def _unit_kind(unit: str) -> str:
    unit = (unit or "").strip()
    if unit in VOLTAGE_UNITS:
        return "voltage"
    if unit in CURRENT_UNITS:
        return "current"
    return "unknown"


# ---------------------------------------------------------------------------- ABF
def read_abf(
    path,
    sweeps: int | Sequence[int] | None = None,
    channel: int = 0,
    *,
    area: float | None = None,
    current: np.ndarray | None = None,
    current_channel: int | None = None,
    check_units: bool = True,
) -> list[Recording]:
    """Read an Axon Binary Format (ABF1 or ABF2) current-clamp file with `pyabf`.

    **Arguments:**

    - `path`: the `.abf` file.
    - `sweeps`: sweep numbers (0-based) to read; default all.
    - `channel`: the ADC channel holding the membrane potential (default 0).
    - `area`: membrane area (cm²); when given, currents are returned in µA/cm².
    - `current`: the injected current (pA), shape `(samples,)` or `(sweeps, samples)`, for
      files that do not store their command waveform (e.g. gap-free files written by tools);
      default: the file's command waveform (`pyabf`'s `sweepC`).
    - `current_channel`: an ADC channel that records the injected current (pA or nA), to use
      instead of the command waveform: the measured current, noise and holding current
      included (the fitting engine finds its steps, see [`hhjax.fitting.step_sweep`][]).
    - `check_units`: refuse volt-sized voltages and second-sized times (module docstring).

    **Returns:**

    A list of recordings, one per sweep. Time restarts at 0 ms in each sweep. The current is
    the *commanded* current (or the recorded one, with `current_channel`); bridge balance and
    junction potential are not in ABF files (fit them: [`hhjax.fitting.Electrode`][]).
    """
    try:
        import pyabf
    except ImportError:
        raise ImportError(
            f"Reading {path}: ABF files need pyabf; install it with `pip install 'hhjax[io]'`."
        ) from None

    path = _check_path(path)
    try:
        abf = pyabf.ABF(str(path))
        data_shape = abf.data.shape
    except Exception as err:
        raise RecordingError(
            f"{path}: not a readable ABF file (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from None
    if not 0 <= channel < abf.channelCount:
        raise RecordingError(
            f"{path}: no channel {channel}; the file has {abf.channelCount} channel(s) "
            f"{list(abf.adcNames)} with units {list(abf.adcUnits)}."
        )
    if current_channel is not None and not (
        0 <= current_channel < abf.channelCount and current_channel != channel
    ):
        raise RecordingError(
            f"{path}: `current_channel={current_channel}` must be another of the file's "
            f"{abf.channelCount} channel(s) {list(abf.adcNames)} (units {list(abf.adcUnits)}).")
    if current_channel is not None and current is not None:
        raise RecordingError(f"{path}: pass `current` or `current_channel`, not both.")
    expected = abf.sweepCount * abf.sweepPointCount
    if data_shape[-1] < expected:
        raise RecordingError(
            f"{path}: truncated: {data_shape[-1]} samples per channel, the header announces "
            f"{abf.sweepCount} sweeps x {abf.sweepPointCount}."
        )
    chosen = _select(path, list(abf.sweepList), sweeps)
    out = []
    for s in chosen:
        abf.setSweep(s, channel=channel)
        y_unit = abf.sweepUnitsY
        if _unit_kind(y_unit) == "current":
            raise RecordingError(
                f"{path}: channel {channel} records current ({y_unit}): this is voltage-clamp "
                "data (or the wrong channel); hhjax fits current-clamp recordings."
            )
        if _unit_kind(y_unit) != "voltage":
            raise RecordingError(
                f"{path}: channel {channel} has unit {y_unit!r}, not a membrane potential "
                f"(expected one of {sorted(VOLTAGE_UNITS)}); pick another `channel`."
            )
        v = abf.sweepY * VOLTAGE_UNITS[y_unit]
        if current is not None:
            cur = np.asarray(current, dtype=np.float64)
            i_pa = cur if cur.ndim == 1 else cur[chosen.index(s)]
        elif current_channel is not None:
            abf.setSweep(s, channel=current_channel)
            c_unit = abf.sweepUnitsY
            if _unit_kind(c_unit) != "current":
                raise RecordingError(
                    f"{path}: `current_channel={current_channel}` has unit {c_unit!r}, not a "
                    "current; pick the channel that records the injected current.")
            i_pa = abf.sweepY * CURRENT_UNITS[c_unit]
            abf.setSweep(s, channel=channel)
        else:
            c_unit = abf.sweepUnitsC
            kind = _unit_kind(c_unit)
            if kind == "voltage":
                raise RecordingError(
                    f"{path}: channel {channel} is driven by a voltage command ({c_unit}): "
                    "voltage-clamp data or the wrong channel; hhjax fits current-clamp data."
                )
            if kind != "current":
                raise RecordingError(
                    f"{path}: no injected current: the file stores no current command for "
                    f"channel {channel} (unit {c_unit!r}). Pass `current=` (pA) if you know it."
                )
            i_pa = abf.sweepC * CURRENT_UNITS[c_unit]
        t = abf.sweepX * 1e3 - abf.sweepX[0] * 1e3
        out.append(
            _make(
                path,
                s,
                t,
                v,
                i_pa,
                area,
                fix_t=f"the file's sample rate ({abf.sampleRate} Hz) is wrong; pass "
                "`check_units=False` if it is right",
                fix_v=f"channel {channel} is labelled {y_unit!r} but holds volts: fix the "
                "file's units, or pass `check_units=False` if they are right",
                check_units=check_units,
            )
        )
    return out


# ---------------------------------------------------------------------------- NWB
def _series_time(series) -> np.ndarray:
    n = series.data.shape[0]
    if series.timestamps is not None:
        return _times(series.timestamps[:]) * 1e3
    return (series.starting_time + np.arange(n) / series.rate) * 1e3


def _scaled(series) -> np.ndarray:
    data = np.asarray(series.data[:], dtype=np.float64)
    return data * float(getattr(series, "conversion", 1.0) or 1.0) + float(
        getattr(series, "offset", 0.0) or 0.0
    )


def read_nwb(
    path,
    sweeps: int | Sequence[int] | None = None,
    *,
    area: float | None = None,
    check_units: bool = True,
) -> list[Recording]:
    """Read the current-clamp sweeps of a Neurodata Without Borders (NWB 2) file with `pynwb`.

    Every `CurrentClampSeries` in `acquisition` is a sweep (ordered by `sweep_number`, else
    by name); its injected current is the `CurrentClampStimulusSeries` in `stimulus` with the
    same `sweep_number` (else the same position). NWB stores SI units (volts, amperes) with a
    `conversion` factor; both are applied.

    **Arguments:**

    - `path`: the `.nwb` file.
    - `sweeps`: positions (0-based, in the order above) to read; default all.
    - `area`: membrane area (cm²); when given, currents are returned in µA/cm².
    - `check_units`: refuse volt-sized voltages and second-sized times (module docstring).

    **Returns:**

    A list of recordings, one per sweep; times are those stored (ms).
    """
    try:
        from pynwb import NWBHDF5IO
    except ImportError:
        raise ImportError(
            f"Reading {path}: NWB files need pynwb; install it with `pip install 'hhjax[io]'`."
        ) from None
    from pynwb.icephys import CurrentClampSeries, CurrentClampStimulusSeries, VoltageClampSeries

    path = _check_path(path)
    try:
        io = NWBHDF5IO(str(path), "r", load_namespaces=True)
        nwb = io.read()
    except Exception as err:
        raise RecordingError(
            f"{path}: not a readable NWB file (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from None
    try:
        acq = list(nwb.acquisition.values())
        cc = [s for s in acq if isinstance(s, CurrentClampSeries)]
        if not cc:
            if any(isinstance(s, VoltageClampSeries) for s in acq):
                raise RecordingError(
                    f"{path}: holds only VoltageClampSeries: voltage-clamp data; hhjax fits "
                    "current-clamp recordings (CurrentClampSeries)."
                )
            raise RecordingError(f"{path}: no CurrentClampSeries in `acquisition`.")
        stims = [s for s in nwb.stimulus.values() if isinstance(s, CurrentClampStimulusSeries)]
        if not stims:
            raise RecordingError(
                f"{path}: no injected current: no CurrentClampStimulusSeries in `stimulus`."
            )

        def key(s):
            number = getattr(s, "sweep_number", None)
            return (0, int(number), s.name) if number is not None else (1, 0, s.name)

        cc.sort(key=key)
        stims.sort(key=key)
        by_number = {int(s.sweep_number): s for s in stims if s.sweep_number is not None}
        chosen = _select(path, list(range(len(cc))), sweeps)
        out = []
        for k in chosen:
            series = cc[k]
            number = getattr(series, "sweep_number", None)
            stim = by_number.get(int(number)) if number is not None else None
            if stim is None:
                if k >= len(stims):
                    raise RecordingError(
                        f"{path}: no injected current for sweep {k} ({series.name})."
                    )
                stim = stims[k]
            v_unit = "V" if series.unit in ("volts", "V") else series.unit
            i_unit = "A" if stim.unit in ("amperes", "A") else stim.unit
            if _unit_kind(v_unit) != "voltage":
                raise RecordingError(
                    f"{path}: {series.name} has unit {series.unit!r}, not a voltage."
                )
            if _unit_kind(i_unit) != "current":
                raise RecordingError(f"{path}: {stim.name} has unit {stim.unit!r}, not a current.")
            v = _scaled(series) * VOLTAGE_UNITS[v_unit]
            i_pa = _scaled(stim) * CURRENT_UNITS[i_unit]
            t = _series_time(series)
            if i_pa.shape != v.shape:
                raise RecordingError(
                    f"{path}: {stim.name} has {i_pa.shape[0]} samples but {series.name} has "
                    f"{v.shape[0]}; they must share the sample grid."
                )
            fix = (
                f"check {series.name}'s `unit`, `conversion`, `rate` or `timestamps` (NWB "
                "stores seconds and volts), or pass `check_units=False` if the values are right"
            )
            out.append(
                _make(path, k, t, v, i_pa, area, fix_t=fix, fix_v=fix, check_units=check_units)
            )
        return out
    finally:
        io.close()


# ---------------------------------------------------------------------------- CSV / NPZ
def _units(path, t_unit, v_unit, i_unit):
    for name, unit, table in (
        ("t_unit", t_unit, TIME_UNITS),
        ("v_unit", v_unit, VOLTAGE_UNITS),
        ("i_unit", i_unit, CURRENT_UNITS),
    ):
        if unit not in table and not (name == "i_unit" and unit == DENSITY):
            raise RecordingError(
                f"{path}: unknown {name} {unit!r}; use one of {sorted(table)}"
                + (f" or {DENSITY!r}" if name == "i_unit" else "")
                + "."
            )


def _to_records(path, t, v, i, t_unit, v_unit, i_unit, area, sweep_ids=None, *, how, check_units):
    """Sweeps from arrays in the given units; `how(name, unit)` says how to state a unit."""
    _units(path, t_unit, v_unit, i_unit)
    fixes = {}
    for name, unit, table, bigger in (
        ("t", t_unit, TIME_UNITS, "s"),
        ("v", v_unit, VOLTAGE_UNITS, "V"),
    ):
        if table[unit] < table[bigger]:
            fixes[name] = how(name + "_unit", bigger)
        else:  # already read as the larger unit: the numbers themselves are off
            fixes[name] = f"the values are too small even for {unit!r}: check the file"
        fixes[name] += "; `check_units=False` if the values are right"
    t = _times(t) * TIME_UNITS[t_unit]
    v = np.atleast_2d(np.asarray(v, dtype=np.float64)) * VOLTAGE_UNITS[v_unit]
    i = np.atleast_2d(np.asarray(i, dtype=np.float64))
    if i.shape != v.shape:
        raise RecordingError(
            f"{path}: current has shape {i.shape[-2:]} but voltage {v.shape[-2:]}; one current "
            "sample per voltage sample is needed."
        )
    t = np.broadcast_to(t, v.shape) if t.ndim == 1 else t
    ids = range(v.shape[0]) if sweep_ids is None else sweep_ids
    out = []
    checks = dict(fix_t=fixes["t"], fix_v=fixes["v"], check_units=check_units)
    for k, s in enumerate(ids):
        if i_unit == DENSITY:
            out.append(_make(path, s, t[k], v[k], i[k], None, DENSITY, **checks))
        else:
            out.append(_make(path, s, t[k], v[k], i[k] * CURRENT_UNITS[i_unit], area, **checks))
    return out


def read_csv(
    path,
    *,
    t_col: str = "t",
    v_col: str = "v",
    i_col: str = "i",
    sweep_col: str = "sweep",
    t_unit: str = "ms",
    v_unit: str = "mV",
    i_unit: str = "pA",
    area: float | None = None,
    check_units: bool = True,
) -> list[Recording]:
    """Read a CSV file with a header row: columns time, voltage, current (and optional sweep).

    **Arguments:**

    - `path`: the `.csv` file (comma-separated, one header line).
    - `t_col`, `v_col`, `i_col`: column names of time, voltage and injected current.
    - `sweep_col`: column of sweep numbers; if absent the file is one sweep.
    - `t_unit`, `v_unit`, `i_unit`: units in the file (`"s"`/`"ms"`, `"V"`/`"mV"`,
      `"A"`/`"nA"`/`"pA"` or `"uA/cm2"`).
    - `area`: membrane area (cm²); when given, currents are returned in µA/cm².
    - `check_units`: refuse volt-sized voltages and second-sized times (module docstring).

    **Returns:**

    A list of recordings, one per sweep. A non-finite entry (`nan`, `inf`) in a used column is
    an error naming its line.
    """
    path = _check_path(path)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise RecordingError(f"{path}: empty file.") from None
        rows, line_numbers = [], []
        for r in reader:
            if r:
                rows.append(r)
                line_numbers.append(reader.line_num)
    if i_col not in header:
        raise RecordingError(
            f"{path}: no injected current: no column {i_col!r} (columns: {header}); pass `i_col=`."
        )
    for name, col in (("t_col", t_col), ("v_col", v_col)):
        if col not in header:
            raise RecordingError(f"{path}: no column {col!r} for `{name}` (columns: {header}).")
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as err:
        raise RecordingError(f"{path}: non-numeric or ragged rows: {err}") from None
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] != len(header):
        raise RecordingError(f"{path}: need at least two complete rows of {len(header)} columns.")
    col = {h: table[:, k] for k, h in enumerate(header)}
    used = [c for c in (t_col, v_col, i_col, sweep_col) if c in col]
    bad_rows = np.flatnonzero(~np.all(np.isfinite(np.stack([col[c] for c in used])), axis=0))
    if bad_rows.size:
        k = int(bad_rows[0])
        name = next(c for c in used if not np.isfinite(col[c][k]))
        raise RecordingError(
            f"{path}: line {line_numbers[k]}: column {name!r} is "
            f"{rows[k][header.index(name)].strip()!r}, not a finite number ({bad_rows.size} "
            "such row(s)); remove or interpolate them before using the recording."
        )
    how = lambda name, unit: f"pass `{name}={unit!r}`"
    checks = dict(how=how, check_units=check_units)
    if sweep_col in col:
        ids = np.unique(col[sweep_col]).astype(int)
        groups = [col[sweep_col].astype(int) == s for s in ids]
        out = []
        for s, g in zip(ids, groups):
            out += _to_records(
                path,
                col[t_col][g],
                col[v_col][g],
                col[i_col][g],
                t_unit,
                v_unit,
                i_unit,
                area,
                [int(s)],
                **checks,
            )
        return out
    return _to_records(
        path, col[t_col], col[v_col], col[i_col], t_unit, v_unit, i_unit, area, **checks
    )


def read_npz(
    path,
    *,
    t_unit: str | None = None,
    v_unit: str | None = None,
    i_unit: str | None = None,
    area: float | None = None,
    t_key: str = "t",
    v_key: str = "v",
    i_key: str = "i",
    check_units: bool = True,
) -> list[Recording]:
    """Read a NumPy `.npz` archive with arrays `t`, `v`, `i` (and optional unit strings).

    `v` and `i` are `(samples,)` or `(sweeps, samples)`; `t` is `(samples,)` or shaped like
    `v`. Optional scalar string entries `t_unit` (default `"ms"`), `v_unit` (`"mV"`), `i_unit`
    (`"pA"`) state the units.

    **Arguments:**

    - `path`: the `.npz` file.
    - `t_unit`, `v_unit`, `i_unit`: the units, for archives that do not state them (an
      archive that states a different unit is an error); default the archive's, else
      `"ms"`, `"mV"`, `"pA"`.
    - `area`: membrane area (cm²); when given, currents are returned in µA/cm².
    - `t_key`, `v_key`, `i_key`: the names of the time, voltage and current arrays in the
      archive (default `"t"`, `"v"`, `"i"`).
    - `check_units`: refuse volt-sized voltages and second-sized times (module docstring).

    **Returns:**

    A list of recordings, one per sweep.
    """
    path = _check_path(path)
    try:
        archive = np.load(path, allow_pickle=False)
        data = {k: archive[k] for k in archive.files}
    except Exception as err:
        raise RecordingError(
            f"{path}: not a readable .npz archive (truncated or corrupt?): {err}"
        ) from None
    if i_key not in data:
        raise RecordingError(
            f"{path}: no injected current: the archive has no array {i_key!r} (it has "
            f"{sorted(data)}); name it with `i_key=`."
        )
    for key, arg in ((t_key, "t_key"), (v_key, "v_key")):
        if key not in data:
            raise RecordingError(f"{path}: no array {key!r} (it has {sorted(data)}); name it "
                                 f"with `{arg}=`.")
    units = {}
    for key, given, default in (
        ("t_unit", t_unit, "ms"),
        ("v_unit", v_unit, "mV"),
        ("i_unit", i_unit, "pA"),
    ):
        stored = str(data[key]) if key in data else None
        if given is not None and stored is not None and given != stored:
            raise RecordingError(
                f"{path}: the archive states {key}={stored!r} but `{key}={given!r}` was passed; "
                "drop the argument (or fix the archive's entry)."
            )
        units[key] = given if given is not None else (stored if stored is not None else default)

    def how(key, unit):
        if key in data:  # the archive's own entry is wrong
            return f"store {key}={unit!r} in the archive"
        return f"pass `{key}={unit!r}` or store {key}={unit!r} in the archive"

    return _to_records(
        path,
        data[t_key],
        data[v_key],
        data[i_key],
        units["t_unit"],
        units["v_unit"],
        units["i_unit"],
        area,
        how=how,
        check_units=check_units,
    )


_READERS = {".abf": read_abf, ".nwb": read_nwb, ".csv": read_csv, ".npz": read_npz}


def read(path, **kwargs) -> list[Recording]:
    """Read any supported recording, choosing the reader by file suffix.

    `.abf` -> [`read_abf`][], `.nwb` -> [`read_nwb`][], `.csv` -> [`read_csv`][],
    `.npz` -> [`read_npz`][]; keyword arguments go to that reader.
    """
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in _READERS:
        raise RecordingError(
            f"{path}: unknown recording format {suffix!r}; supported: {sorted(_READERS)}."
        )
    return _READERS[suffix](path, **kwargs)
