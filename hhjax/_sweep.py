"""Parameter sweeps that survive being killed: a grid or random sample over any model's
parameters and a step's amplitude, simulated with [`hhjax.simulate_batch`][] shard by shard,
one Parquet file per shard.

Units: mV, ms, µA/cm², Hz.

A sweep is a [`SweepConfig`][] (built in Python or read from a TOML file) and an output folder.
The points are numbered `0 … n-1`; shard `s` holds points `s·shard_size …`, and the values of a
point depend only on the configuration and its number (a grid is unravelled; a random sample
draws each shard from its own seed, `(seed, s)`), never on which process computes it or when.
Each finished shard is written to a temporary file and renamed into place (atomic on POSIX), so
a killed run leaves only whole shards; rerunning the same command skips them and produces the
same files as an uninterrupted run. Every shard records the configuration's fingerprint, its
number and its rows, and is checked against them when it is skipped or read: a file from
another sweep, or a damaged one, stops the run with a message naming it.

With several processes (`jax.distributed.initialize(...)` before the sweep, one command per
host), process `p` of `P` takes the shards `s ≡ p (mod P)`, simulates them on its own devices
and writes them itself: nothing is communicated. [`load_sweep`][] reads the folder back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SweepAxis", "SweepConfig", "SweepError", "SweepSummary", "load_sweep", "sweep"
]

_FORMAT = "hhjax-sweep/1"
_META_KEY = b"hhjax.sweep"


class SweepError(RuntimeError):
    """A sweep folder that cannot be continued or read: a shard from another sweep, a damaged
    or missing shard, or a configuration that differs from the folder's."""


@dataclasses.dataclass(frozen=True)
class SweepAxis:
    """One swept quantity: a list of `values` (grid points, or the choices of a random
    sample) or a range `low`–`high` (random samples only; `log` for a log-uniform draw).

    In TOML: `g_na = [100.0, 120.0]`, `g_na = {start = 80.0, stop = 160.0, num = 9}` (a
    `linspace`), or `g_na = {low = 80.0, high = 160.0, log = false}`.
    """

    values: tuple[float, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    def __post_init__(self):
        if self.values is not None:
            vals = tuple(float(x) for x in np.ravel(self.values))
            if not vals or not all(math.isfinite(x) for x in vals):
                raise ValueError(f"SweepAxis values must be finite numbers, at least one; got "
                                 f"{self.values!r}.")
            object.__setattr__(self, "values", vals)
            if self.low is not None or self.high is not None:
                raise ValueError("An SweepAxis has either `values` or `low`/`high`, not both.")
            return
        if self.low is None or self.high is None:
            raise ValueError("An SweepAxis needs `values`, or both `low` and `high`.")
        low, high = float(self.low), float(self.high)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"SweepAxis range must be finite with low <= high; got {low}, {high}.")
        if self.log and low <= 0:
            raise ValueError(f"A log-uniform SweepAxis needs low > 0; got {low}.")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def parse(cls, name: str, spec) -> SweepAxis:
        """An axis from its TOML form (a number, a list, or a table)."""
        if isinstance(spec, SweepAxis):
            return spec
        if isinstance(spec, int | float):
            return cls(values=(spec,))
        if isinstance(spec, list | tuple | np.ndarray):
            return cls(values=tuple(spec))
        if isinstance(spec, Mapping):
            keys = set(spec)
            if keys <= {"start", "stop", "num"} and keys >= {"start", "stop", "num"}:
                num = spec["num"]
                if not (isinstance(num, int) and num >= 1):
                    raise ValueError(f"sweep axis {name!r}: `num` must be an integer >= 1.")
                return cls(values=tuple(np.linspace(spec["start"], spec["stop"], num)))
            if keys <= {"low", "high", "log"} and {"low", "high"} <= keys:
                return cls(low=spec["low"], high=spec["high"], log=bool(spec.get("log", False)))
        raise ValueError(
            f"sweep axis {name!r}: give a list of values, {{start, stop, num}} or "
            f"{{low, high[, log]}}; got {spec!r}."
        )

    def to_json(self):
        if self.values is not None:
            return list(self.values)
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What a sweep simulates. All fields but `axes` have defaults.

    - `axes`: `{name: SweepAxis}`; names are fields of the model (e.g. `g_na`), or `amplitude`
      (µA/cm²) for the step's current. A grid sweeps their Cartesian product (the last axis
      fastest); a random sample draws each point's values independently.
    - `model`: a model class and preset in `hhjax` or `hhjax.models`, e.g. `"HHParams.neuron"`,
      `"HHParams"` (classic), `"Pospischil.regular_spiking"`.
    - `fixed`: `{field: value}` set on the model for every point.
    - `amplitude`, `start`, `stop`: the step current (µA/cm²) and its times (ms; `stop`
      `None`: to the end), used when `amplitude` is not an axis.
    - `t1`, `dt`: the simulated span and step (ms).
    - `sample`: `"grid"` or `"random"` (then `n` points drawn with `seed`).
    - `shard_size`: points per shard file.
    - `max_spikes`, `threshold`: passed to `simulate_batch`.
    - `dtype`: `"float32"` or `"float64"` (float64 needs `jax_enable_x64`).
    - `workers`: threads per process on a CPU (`None`: the cores available).
    """

    axes: Mapping[str, SweepAxis]
    model: str = "HHParams.neuron"
    fixed: Mapping[str, float] = dataclasses.field(default_factory=dict)
    amplitude: float = 10.0
    start: float = 5.0
    stop: float | None = None
    t1: float = 200.0
    dt: float = 0.025
    sample: str = "grid"
    n: int | None = None
    seed: int = 0
    shard_size: int = 100_000
    max_spikes: int = 16
    threshold: float | None = None
    dtype: str = "float32"
    workers: int | None = None

    def __post_init__(self):
        if not self.axes:
            raise ValueError("SweepConfig: `axes` is empty; give at least one swept quantity.")
        axes = {str(k): SweepAxis.parse(k, a) for k, a in self.axes.items()}
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "fixed", {str(k): float(v) for k, v in self.fixed.items()})
        if self.sample not in ("grid", "random"):
            raise ValueError(f"SweepConfig: `sample` must be 'grid' or 'random', got "
                             f"{self.sample!r}.")
        if self.sample == "grid":
            ranged = [k for k, a in axes.items() if a.values is None]
            if ranged:
                raise ValueError(
                    f"SweepConfig: a grid needs values on every axis; {ranged} are ranges "
                    "(use sample = 'random' with `n`, or give {start, stop, num}).")
            if self.n is not None and self.n != math.prod(len(a.values) for a in axes.values()):
                raise ValueError("SweepConfig: `n` is the grid's size for a grid; leave it out.")
        elif not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"SweepConfig: a random sample needs `n` >= 1 points, got "
                             f"{self.n!r}.")
        if not (isinstance(self.shard_size, int) and self.shard_size >= 1):
            raise ValueError(f"SweepConfig: `shard_size` must be an integer >= 1, got "
                             f"{self.shard_size!r}.")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"SweepConfig: `dtype` must be 'float32' or 'float64', got "
                             f"{self.dtype!r}.")
        for name in ("t1", "dt"):
            x = getattr(self, name)
            if not (isinstance(x, int | float) and math.isfinite(x) and x > 0):
                raise ValueError(f"SweepConfig: `{name}` must be a number > 0 ms, got {x!r}.")
        stop = self.t1 if self.stop is None else self.stop
        if not (isinstance(self.start, int | float) and 0 <= self.start < stop <= self.t1):
            raise ValueError(
                f"SweepConfig: the step needs 0 <= start < stop <= t1; got start {self.start}, "
                f"stop {self.stop}, t1 {self.t1} ms.")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> SweepConfig:
        """Read a configuration file: `[model]` (`name`, `fixed`), `[axes]`, `[stimulus]`
        (`amplitude`, `start`, `stop`), `[run]` (the other fields). See the README's example."""
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10: the same parser as a package
            import tomli as tomllib
        path = pathlib.Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"sweep configuration {path} does not exist.") from None
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"sweep configuration {path}: not valid TOML ({err}).") from None
        known = {"model", "axes", "stimulus", "run"}
        unknown = set(doc) - known
        if unknown:
            raise ValueError(f"sweep configuration {path}: unknown table(s) {sorted(unknown)}; "
                             f"expected {sorted(known)}.")
        model = doc.get("model", {})
        stim = dict(doc.get("stimulus", {}))
        axes = dict(doc.get("axes", {}))
        if isinstance(stim.get("amplitude"), list | dict):  # a swept amplitude
            axes["amplitude"] = stim.pop("amplitude")
        kw = dict(doc.get("run", {}))
        for key in set(model) - {"name", "fixed"}:
            raise ValueError(f"sweep configuration {path}: unknown key model.{key}.")
        for key in set(stim) - {"amplitude", "start", "stop"}:
            raise ValueError(f"sweep configuration {path}: unknown key stimulus.{key}.")
        fields = {f.name for f in dataclasses.fields(cls)} - {"axes", "model", "fixed",
                                                               "amplitude", "start", "stop"}
        for key in set(kw) - fields:
            raise ValueError(f"sweep configuration {path}: unknown key run.{key}; "
                             f"known: {sorted(fields)}.")
        return cls(axes=axes, model=model.get("name", cls.model),
                   fixed=model.get("fixed", {}), **stim, **kw)

    def to_json(self) -> dict:
        """The configuration as plain data (what the fingerprint is taken of)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["axes"] = {k: a.to_json() for k, a in self.axes.items()}
        out["fixed"] = dict(self.fixed)
        out.pop("workers")  # how fast, not what: a rerun may use other threads
        return out

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"format": _FORMAT, **self.to_json()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def size(self) -> int:
        """The number of points."""
        if self.sample == "grid":
            return math.prod(len(a.values) for a in self.axes.values())
        return int(self.n)

    @property
    def n_shards(self) -> int:
        return -(-self.size // self.shard_size)

    def rows(self, shard: int) -> tuple[int, int]:
        lo = shard * self.shard_size
        return lo, min(self.size, lo + self.shard_size)

    def points(self, shard: int) -> dict[str, np.ndarray]:
        """The axis values of every point of `shard` (float64 arrays)."""
        lo, hi = self.rows(shard)
        if self.sample == "grid":
            shape = tuple(len(a.values) for a in self.axes.values())
            idx = np.unravel_index(np.arange(lo, hi), shape)
            return {k: np.asarray(a.values)[j] for (k, a), j in zip(self.axes.items(), idx,
                                                                      strict=True)}
        rng = np.random.default_rng([self.seed, shard])
        out = {}
        for k, a in self.axes.items():
            if a.values is not None:
                out[k] = np.asarray(a.values)[rng.integers(0, len(a.values), hi - lo)]
            elif a.log:
                out[k] = np.exp(rng.uniform(np.log(a.low), np.log(a.high), hi - lo))
            else:
                out[k] = rng.uniform(a.low, a.high, hi - lo)
        return out

    def base_model(self):
        """The model instance named by `model`, with `fixed` applied."""
        import hhjax
        from hhjax import models

        cls_name, _, preset = self.model.partition(".")
        cls = getattr(hhjax, cls_name, None) or getattr(models, cls_name, None)
        if not isinstance(cls, type):
            raise ValueError(f"SweepConfig: model {self.model!r}: no model class {cls_name!r} in "
                             "hhjax or hhjax.models (e.g. 'HHParams.neuron', "
                             "'Pospischil.regular_spiking').")
        make = getattr(cls, preset, None) if preset else cls
        if make is None or not callable(make):
            raise ValueError(f"SweepConfig: model {self.model!r}: {cls_name} has no preset "
                             f"{preset!r}.")
        model = make()
        names = set(model.field_names)
        for k in list(self.fixed) + [k for k in self.axes if k != "amplitude"]:
            if k not in names:
                raise ValueError(f"SweepConfig: {k!r} is not a field of {self.model}; fields: "
                                 f"{sorted(names)}.")
        return model.replace(**self.fixed) if self.fixed else model


@dataclasses.dataclass
class SweepSummary:
    """What [`sweep`][] did on this process: shards written and skipped, points, seconds."""

    out: pathlib.Path
    written: list[int]
    skipped: list[int]
    points: int
    seconds: float


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError("hhjax sweeps write Parquet files through pyarrow: "
                          "pip install 'hhjax[sweep]' (or pip install pyarrow).") from None
    return pyarrow


def _shard_path(out: pathlib.Path, shard: int) -> pathlib.Path:
    return out / f"shard-{shard:06d}.parquet"


def _check_shard(path: pathlib.Path, config: SweepConfig, shard: int, full: bool = False):
    """Raise [`SweepError`][] unless `path` is shard `shard` of this sweep, whole."""
    pa = _pyarrow()
    fix = f"delete {path} and rerun to recompute it"
    try:
        if full:
            table = pa.parquet.read_table(path, page_checksum_verification=True)
            meta, rows = table.schema.metadata or {}, table.num_rows
        else:
            md = pa.parquet.read_metadata(path)
            meta, rows = md.metadata or {}, md.num_rows
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise SweepError(f"{path} is damaged or not a Parquet file ({type(err).__name__}: "
                         f"{err}); {fix}.") from None
    info = meta.get(_META_KEY)
    try:
        info = json.loads(info) if info is not None else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or info.get("fingerprint") != config.fingerprint:
        got = info.get("fingerprint") if isinstance(info, dict) else "none"
        raise SweepError(f"{path} belongs to another sweep (configuration fingerprint {got}, "
                         f"this one {config.fingerprint}); {fix}, or write this sweep to "
                         "another folder.")
    lo, hi = config.rows(shard)
    if info.get("shard") != shard or info.get("rows") != [lo, hi] or rows != hi - lo:
        raise SweepError(f"{path} holds shard {info.get('shard')} rows {info.get('rows')} "
                         f"({rows} rows), not shard {shard} rows [{lo}, {hi}]; {fix}.")
    return table if full else None


def _write_manifest(out: pathlib.Path, config: SweepConfig):
    manifest = out / "sweep.json"
    doc = {"format": _FORMAT, "fingerprint": config.fingerprint, "points": config.size,
           "shards": config.n_shards, "config": config.to_json()}
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except ValueError:
            old = {}
        if old.get("fingerprint") != config.fingerprint:
            raise SweepError(
                f"{out} holds another sweep (fingerprint {old.get('fingerprint')}, this one "
                f"{config.fingerprint}): write this one to another folder, or delete {out}.")
        return
    tmp = manifest.with_name(f".sweep.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, manifest)


def _simulate_shard(config: SweepConfig, model, shard: int):
    import jax.numpy as jnp

    import hhjax

    pts = config.points(shard)
    lo, hi = config.rows(shard)
    n = hi - lo
    if n < config.shard_size < config.size:
        # The last shard is padded to the others' size (its repeated last point is dropped
        # below), so that one compiled program serves every shard.
        pad = np.minimum(np.arange(config.shard_size), n - 1)
        pts = {k: v[pad] for k, v in pts.items()}
    dtype = jnp.dtype(config.dtype)
    fields = {k: jnp.asarray(v, dtype) for k, v in pts.items() if k != "amplitude"}
    params = model.replace(**fields).astype(dtype)
    amp = pts.get("amplitude", config.amplitude)
    stim = hhjax.Step(jnp.asarray(amp, dtype), config.start,
                      config.t1 if config.stop is None else config.stop)
    feats = hhjax.simulate_batch(
        params, stim, config.t1, dt=config.dt, max_spikes=config.max_spikes,
        threshold=config.threshold, progress=False, workers=config.workers, distribute=False)
    m = len(next(iter(pts.values())))
    cut = lambda x, *shape: np.broadcast_to(np.asarray(x), (m, *shape))[:n]
    cols = {"index": np.arange(lo, hi, dtype=np.int64)}
    cols.update({k: np.asarray(v, np.float64)[:n] for k, v in pts.items()})
    cols["spike_count"] = cut(feats.spike_count).astype(np.int32)
    cols["rate_hz"] = cut(feats.rate).astype(np.float64)
    cols["ok"] = cut(feats.ok)
    cols["dropped"] = cut(feats.dropped).astype(np.int32)
    times = cut(feats.spike_times, config.max_spikes).astype(np.float64)
    return cols, times


def _write_shard(out: pathlib.Path, config: SweepConfig, shard: int, cols, times):
    pa = _pyarrow()
    arrays = [pa.array(v) for v in cols.values()]
    names = list(cols)
    flat = pa.array(np.ascontiguousarray(times).reshape(-1))
    arrays.append(pa.FixedSizeListArray.from_arrays(flat, config.max_spikes))
    names.append("spike_times_ms")
    lo, hi = config.rows(shard)
    meta = {_META_KEY: json.dumps({"fingerprint": config.fingerprint, "shard": shard,
                                   "rows": [lo, hi], "format": _FORMAT})}
    table = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(meta)
    path = _shard_path(out, shard)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pa.parquet.write_table(table, tmp, compression="zstd", write_page_checksum=True)
    with open(tmp, "rb") as f:  # on disk before the rename makes it count
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sweep(config: SweepConfig, out: str | os.PathLike, *, progress: bool = True,
          process: tuple[int, int] | None = None) -> SweepSummary:
    """Run (or continue) a sweep into the folder `out`, one Parquet file per shard.

    **Arguments:**

    - `config`: a [`SweepConfig`][] (e.g. `SweepConfig.from_toml("sweep.toml")`).
    - `out`: the output folder (created). A folder that already holds this sweep is
      continued: its finished shards are checked and skipped.
    - `progress`: a tqdm bar over this process's shards.
    - `process`: `(index, count)` of this process among those sharing the sweep; default
      `(jax.process_index(), jax.process_count())`, i.e. from `jax.distributed`.

    **Returns:**

    A [`SweepSummary`][]. Read the results with [`load_sweep`][].

    Raises [`SweepError`][] when `out` holds another sweep or a damaged shard.
    """
    import jax

    _pyarrow()
    if not isinstance(config, SweepConfig):
        raise TypeError(f"`config` must be a SweepConfig, got {type(config).__name__}.")
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("SweepConfig.dtype is 'float64' but JAX runs in float32: call "
                         "jax.config.update('jax_enable_x64', True) first (the `hhjax sweep` "
                         "command does).")
    index, count = process or (jax.process_index(), jax.process_count())
    if not (0 <= index < count):
        raise ValueError(f"`process` must be (index, count) with 0 <= index < count, got "
                         f"{process!r}.")
    model = config.base_model()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, config)
    mine = list(range(index, config.n_shards, count))
    for stale in out.glob(".shard-*.tmp"):  # this process's own leftovers of a killed run
        shard = int(stale.name.split("-")[1].split(".")[0])
        if shard in mine:
            stale.unlink(missing_ok=True)
    done = []
    for shard in mine:
        path = _shard_path(out, shard)
        if path.exists():
            _check_shard(path, config, shard)
            done.append(shard)
    todo = [s for s in mine if s not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), initial=len(done), unit="shard",
                   desc=f"sweep {out.name}" + (f" [{index}/{count}]" if count > 1 else ""))
    start = time.perf_counter()
    points = 0
    try:
        for shard in todo:
            cols, times = _simulate_shard(config, model, shard)
            _write_shard(out, config, shard, cols, times)
            points += len(cols["index"])
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return SweepSummary(out, todo, done, points, time.perf_counter() - start)


def load_sweep(out: str | os.PathLike, *, columns: Sequence[str] | None = None) -> Any:
    """Read a finished sweep: one `pyarrow.Table` ordered by point `index` (`.to_pandas()`,
    `.column(name).to_numpy()`).

    Every shard is read with its page checksums and checked against the folder's
    configuration; a missing, damaged or foreign shard raises [`SweepError`][].
    """
    pa = _pyarrow()
    out = pathlib.Path(out)
    manifest = out / "sweep.json"
    if not manifest.exists():
        raise SweepError(f"{out} holds no sweep (no sweep.json).")
    doc = json.loads(manifest.read_text())
    config = SweepConfig(**doc["config"])  # its axes are parsed from their JSON form
    if config.fingerprint != doc["fingerprint"]:
        raise SweepError(f"{manifest} is inconsistent (its configuration's fingerprint is "
                         f"{config.fingerprint}, it records {doc['fingerprint']}).")
    missing = [s for s in range(config.n_shards) if not _shard_path(out, s).exists()]
    if missing:
        raise SweepError(f"{out}: {len(missing)} of {config.n_shards} shard(s) not written yet "
                         f"(first: {missing[0]}); rerun the sweep to finish it.")
    tables = [_check_shard(_shard_path(out, s), config, s, full=True)
              for s in range(config.n_shards)]
    table = pa.concat_tables(tables)
    index = table.column("index").to_numpy()
    if not np.array_equal(index, np.arange(config.size)):
        raise SweepError(f"{out}: the shards' rows are not the points 0..{config.size - 1} once "
                         "each.")
    return table.select(list(columns)) if columns is not None else table
