"""The sweep runner: resumable after SIGKILL, equal to an uninterrupted run, and strict about
foreign or damaged shard files."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import hhjax
from hhjax import SweepAxis, SweepConfig, SweepError, load_sweep, sweep

pytest.importorskip("pyarrow")

TOML = """
[model]
name = "HHParams.neuron"
fixed = {g_l = 0.0003}

[axes]
g_na = {start = 100.0, stop = 140.0, num = 12}
g_k = [30.0, 36.0, 42.0]

[stimulus]
amplitude = {start = 0.0, stop = 20.0, num = 10}
start = 5.0

[run]
t1 = 40.0
dt = 0.05
shard_size = 9
max_spikes = 8
dtype = "float64"
"""


def _same(a, b):
    """Tables equal column by column, NaN equal to NaN (pyarrow's `equals` says NaN != NaN)."""
    assert a.schema.equals(b.schema) and a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if name == "spike_times_ms":
            x, y = x.flatten(), y.flatten()
        np.testing.assert_array_equal(x.to_numpy(zero_copy_only=False),
                                      y.to_numpy(zero_copy_only=False), err_msg=name)
    return True


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "sweep.toml"
    path.write_text(TOML)
    return path


@pytest.fixture(scope="module")
def reference(config_file, tmp_path_factory):
    """The uninterrupted sweep, in this process."""
    out = tmp_path_factory.mktemp("reference")
    config = SweepConfig.from_toml(config_file)
    summary = sweep(config, out, progress=False)
    assert summary.written == list(range(40)) and summary.points == 360
    return out, load_sweep(out)


def test_grid_values_and_features(reference, config_file):
    out, table = reference
    assert table.num_rows == 12 * 3 * 10
    cols = {k: table.column(k).to_numpy() for k in ("g_na", "g_k", "amplitude", "spike_count")}
    # The last axis runs fastest; point 37 is g_na index 1, g_k index 0, amplitude index 7.
    assert cols["g_na"][37] == pytest.approx(100 + 40 / 11)
    assert cols["g_k"][37] == 30.0 and cols["amplitude"][37] == pytest.approx(140 / 9)
    # An independent check of the features: simulate_batch on the same points directly.
    p = hhjax.HHParams.neuron(g_l=0.0003).replace(
        g_na=cols["g_na"][:30], g_k=cols["g_k"][:30])
    feats = hhjax.simulate_batch(p, hhjax.Step(cols["amplitude"][:30], 5.0, 40.0), 40.0,
                                 dt=0.05, max_spikes=8)
    np.testing.assert_array_equal(cols["spike_count"][:30], feats.spike_count)
    assert cols["spike_count"].max() >= 2 and cols["spike_count"].min() == 0


def test_killed_sweep_resumes_to_the_same_result(reference, config_file, tmp_path):
    ref_out, ref_table = reference
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    job = subprocess.Popen(
        [sys.executable, "-m", "hhjax", "sweep", str(config_file), "--out", str(out), "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(list(out.glob("shard-*.parquet"))) < 3:
        assert job.poll() is None, job.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the sweep wrote no shard in 240 s"
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    finished = sorted(out.glob("shard-*.parquet"))
    assert 3 <= len(finished) < 40, "the kill must land mid-run"
    # Only whole shards count: whatever the kill interrupted is a hidden temporary file.
    with pytest.raises(SweepError, match="not written yet"):
        load_sweep(out)
    summary = sweep(SweepConfig.from_toml(config_file), out, progress=False)
    assert sorted(summary.skipped) == [int(p.stem.split("-")[1]) for p in finished]
    assert sorted(summary.written + summary.skipped) == list(range(40))
    assert not list(out.glob(".*.tmp"))
    assert _same(load_sweep(out), ref_table)
    for s in range(40):  # byte for byte, as files
        name = f"shard-{s:06d}.parquet"
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name


def test_processes_split_the_shards_without_overlap(reference, config_file, tmp_path):
    _, ref_table = reference
    config = SweepConfig.from_toml(config_file)
    a = sweep(config, tmp_path, progress=False, process=(0, 3))
    b = sweep(config, tmp_path, progress=False, process=(2, 3))
    c = sweep(config, tmp_path, progress=False, process=(1, 3))
    shards = a.written + b.written + c.written
    assert sorted(shards) == list(range(40)) and len(set(shards)) == 40
    assert _same(load_sweep(tmp_path), ref_table)


def test_random_sample_depends_only_on_seed_and_shard():
    config = SweepConfig(axes={"g_na": SweepAxis(low=80.0, high=160.0),
                               "amplitude": SweepAxis(low=0.1, high=20.0, log=True)},
                         sample="random", n=25, shard_size=10, seed=3)
    again = SweepConfig(axes={"g_na": {"low": 80.0, "high": 160.0},
                              "amplitude": {"low": 0.1, "high": 20.0, "log": True}},
                        sample="random", n=25, shard_size=10, seed=3, workers=1)
    assert config.fingerprint == again.fingerprint  # `workers` is how, not what
    for s in range(3):
        for k, v in config.points(s).items():
            np.testing.assert_array_equal(v, again.points(s)[k])
    pts = config.points(2)
    assert len(pts["g_na"]) == 5 and np.all((pts["amplitude"] >= 0.1) & (pts["amplitude"] <= 20))


def test_damaged_and_foreign_shards_are_refused(reference, config_file, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    config = SweepConfig.from_toml(config_file)
    # Truncated: refused when the sweep is continued, naming the file and the fix.
    shard = out / "shard-000004.parquet"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(SweepError, match=r"shard-000004\.parquet is damaged.*delete"):
        sweep(config, out, progress=False)
    # Bytes flipped inside a data page: the page checksum catches it on reading.
    shutil.copy(ref_out / "shard-000004.parquet", shard)
    data = bytearray(shard.read_bytes())
    data[200] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(SweepError, match="damaged"):
        load_sweep(out)
    # A shard of another sweep (other t1) dropped into this folder.
    other = SweepConfig.from_toml(config_file)
    other = SweepConfig(**{**other.__dict__, "t1": 30.0})
    sweep(other, tmp_path / "other", progress=False, process=(4, 40))
    shutil.copy(tmp_path / "other" / "shard-000004.parquet", shard)
    with pytest.raises(SweepError, match="another sweep"):
        sweep(config, out, progress=False)
    # Another configuration into the same folder.
    with pytest.raises(SweepError, match="holds another sweep"):
        sweep(other, out, progress=False)


@pytest.mark.parametrize("text, match", [
    ("[axes]\ng_na = {low = 1.0, high = 2.0}\n", "grid needs values"),
    ("[axes]\ng_xx = [1.0]\n", "not a field"),
    ("[axes]\ng_na = [1.0]\n[run]\nt2 = 3.0\n", "unknown key run.t2"),
    ("[axes]\ng_na = [1.0]\n[run]\nsample = 'random'\n", "needs `n`"),
    ("[axes]\ng_na = 'x'\n", "give a list"),
    ("[axes]\n", "`axes` is empty"),
    ("[axes]\ng_na = [1.0]\n[stimulus]\nstart = 5.0\n[run]\nt1 = 5.0\n", "start < stop"),
])
def test_bad_configurations_are_named(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        SweepConfig.from_toml(path).base_model()
    from hhjax.cli import main

    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2


def test_float64_sweep_needs_x64(tmp_path):
    import jax

    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            sweep(SweepConfig(axes={"g_na": [120.0]}, dtype="float64"), tmp_path,
                  progress=False)
    finally:
        jax.config.update("jax_enable_x64", True)
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_module_names(config_file):
    assert pathlib.Path(config_file).exists()
    assert hhjax.sweep is sweep and hhjax.load_sweep is load_sweep


def test_cortical_model_sweep_matches_simulate_batch(tmp_path):
    """Any model of the contract: a regular-spiking cortical cell swept over g_kd and the
    step's amplitude, against simulate_batch called directly on the same points."""
    from hhjax.models import Pospischil

    config = SweepConfig(axes={"g_kd": [4.0, 6.0], "amplitude": [0.0, 2.0, 5.0]},
                         model="Pospischil.regular_spiking", fixed={"g_m": 0.05},
                         t1=150.0, start=20.0, dt=0.05, shard_size=4, dtype="float64")
    sweep(config, tmp_path, progress=False)
    table = load_sweep(tmp_path)
    counts = table.column("spike_count").to_numpy()
    p = Pospischil.regular_spiking(g_m=0.05).replace(
        g_kd=np.array([4.0, 4.0, 4.0, 6.0, 6.0, 6.0]))
    direct = hhjax.simulate_batch(p, hhjax.Step(np.array([0.0, 2.0, 5.0] * 2), 20.0, 150.0),
                                  150.0, dt=0.05, max_spikes=16)
    np.testing.assert_array_equal(counts, direct.spike_count)
    assert counts[0] == 0 and counts[2] > counts[1] > 0  # silent at rest, rate rises with I
