"""Read current-clamp recordings (ABF, NWB, CSV, NPZ) into one `Recording` per sweep.

Units after reading, whatever the file used: time in ms, membrane potential in mV, injected
current in pA (`i_unit="pA"`), or in µA/cm² (`i_unit="uA/cm2"`) when the reader is given the
membrane `area` (cm²): $I\\,[\\mu A/cm^2] = 10^{-6} I\\,[pA] / \\text{area}$. Conversion happens
once, here; [`Recording.density`][] converts later if the area is only known after a fit.

Every reader raises [`RecordingError`][] (a `ValueError`) naming the file and the problem for a
file it cannot use: unreadable or truncated, a channel that does not exist, voltage-clamp data
(current recorded, voltage commanded), or no injected current.

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


class RecordingError(ValueError):
    """A recording file cannot be used; the message names the file and the problem."""


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
    """

    t: np.ndarray
    v: np.ndarray
    i_inj: np.ndarray
    i_unit: str = "pA"
    sweep: int = 0
    source: str = ""

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
        try:
            return cls(self.t, self.v, density, metadata=meta)
        except ValueError as err:
            raise RecordingError(f"{self.source}: sweep {self.sweep}: {err}") from None

    @property
    def dt(self) -> float:
        """The sampling interval (ms)."""
        return float(self.t[1] - self.t[0])


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


def _make(path, sweep, t, v, i, area, unit="pA"):
    t = np.asarray(t, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    i = np.asarray(i, dtype=np.float64)
    if not (t.shape == v.shape == i.shape) or t.ndim != 1:
        raise RecordingError(
            f"{path}: sweep {sweep}: time, voltage and current differ in shape "
            f"({t.shape}, {v.shape}, {i.shape})."
        )
    if t.size < 2 or not np.all(np.diff(t) > 0):
        raise RecordingError(f"{path}: sweep {sweep}: sample times are not increasing.")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(i))):
        raise RecordingError(f"{path}: sweep {sweep}: non-finite voltage or current samples.")
    rec = Recording(t, v, i, unit, int(sweep), str(path))
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

    **Returns:**

    A list of recordings, one per sweep. Time restarts at 0 ms in each sweep. The current is
    the *commanded* current; bridge balance and junction potential are not in ABF files.
    """
    import pyabf

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
        out.append(_make(path, s, t, v, i_pa, area))
    return out


# ---------------------------------------------------------------------------- NWB
def _series_time(series) -> np.ndarray:
    n = series.data.shape[0]
    if series.timestamps is not None:
        return np.asarray(series.timestamps[:], dtype=np.float64) * 1e3
    return (series.starting_time + np.arange(n) / series.rate) * 1e3


def _scaled(series) -> np.ndarray:
    data = np.asarray(series.data[:], dtype=np.float64)
    return data * float(getattr(series, "conversion", 1.0) or 1.0) + float(
        getattr(series, "offset", 0.0) or 0.0
    )


def read_nwb(
    path, sweeps: int | Sequence[int] | None = None, *, area: float | None = None
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
            out.append(_make(path, k, t, v, i_pa, area))
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


def _to_records(path, t, v, i, t_unit, v_unit, i_unit, area, sweep_ids=None):
    _units(path, t_unit, v_unit, i_unit)
    t = np.asarray(t, dtype=np.float64) * TIME_UNITS[t_unit]
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
    for k, s in enumerate(ids):
        if i_unit == DENSITY:
            out.append(_make(path, s, t[k], v[k], i[k], None, DENSITY))
        else:
            out.append(_make(path, s, t[k], v[k], i[k] * CURRENT_UNITS[i_unit], area))
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
) -> list[Recording]:
    """Read a CSV file with a header row: columns time, voltage, current (and optional sweep).

    **Arguments:**

    - `path`: the `.csv` file (comma-separated, one header line).
    - `t_col`, `v_col`, `i_col`: column names of time, voltage and injected current.
    - `sweep_col`: column of sweep numbers; if absent the file is one sweep.
    - `t_unit`, `v_unit`, `i_unit`: units in the file (`"s"`/`"ms"`, `"V"`/`"mV"`,
      `"A"`/`"nA"`/`"pA"` or `"uA/cm2"`).
    - `area`: membrane area (cm²); when given, currents are returned in µA/cm².

    **Returns:**

    A list of recordings, one per sweep.
    """
    path = _check_path(path)
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise RecordingError(f"{path}: empty file.") from None
        rows = [r for r in reader if r]
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
            )
        return out
    return _to_records(path, col[t_col], col[v_col], col[i_col], t_unit, v_unit, i_unit, area)


def read_npz(path, *, area: float | None = None) -> list[Recording]:
    """Read a NumPy `.npz` archive with arrays `t`, `v`, `i` (and optional unit strings).

    `v` and `i` are `(samples,)` or `(sweeps, samples)`; `t` is `(samples,)` or shaped like
    `v`. Optional scalar string entries `t_unit` (default `"ms"`), `v_unit` (`"mV"`), `i_unit`
    (`"pA"`) state the units.

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
    if "i" not in data:
        raise RecordingError(
            f"{path}: no injected current: the archive has no array 'i' (it has {sorted(data)})."
        )
    for key in ("t", "v"):
        if key not in data:
            raise RecordingError(f"{path}: no array {key!r} (it has {sorted(data)}).")
    units = {k: str(data[k]) for k in ("t_unit", "v_unit", "i_unit") if k in data}
    return _to_records(
        path,
        data["t"],
        data["v"],
        data["i"],
        units.get("t_unit", "ms"),
        units.get("v_unit", "mV"),
        units.get("i_unit", "pA"),
        area,
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
