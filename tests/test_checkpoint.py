"""Fault injection on long fits: checkpoints survive a SIGKILL inside a write, and a damaged
checkpoint or one from another fit is refused with a message naming the file and the fix.

The fits are small (a 20 ms recording, two free fields, a few Adam steps); one subprocess runs
a checkpointed fit and is killed while writing its second checkpoint.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hhjax
from hhjax import fitting as hf

TRUE = hhjax.HHParams()
DT = 0.025
START = TRUE.replace(g_na=130.0, g_k=33.0)
OPT = optax.adam(0.01)  # one object: every fit below shares its compiled step
# Six Adam steps stop far from the optimum, and the structured residuals rightly warn.
pytestmark = pytest.mark.filterwarnings("ignore:fit. the residuals are correlated")


def _recording(amplitude, seed, t1=20.0):
    ts = np.round(np.arange(int(round(t1 / DT)) + 1) * DT, 10)
    stim = hhjax.Step(amplitude, 2.0, t1 - 2.0)
    traj = hhjax.simulate(TRUE, stim, t1, ts=ts)
    i_inj = np.asarray(jax.vmap(stim)(jnp.asarray(ts)))
    v = np.asarray(traj.v) + 0.5 * np.random.default_rng(seed).standard_normal(ts.shape)
    return ts, v, i_inj


@pytest.fixture(scope="module")
def arrays():
    return _recording(10.0, 7)


@pytest.fixture(scope="module")
def rec(arrays):
    return hf.Recording(*arrays)


def _fit(rec, **kw):
    return hf.fit(rec, free=("g_na", "g_k"), params0=START, method="optax", init="guess",
                  optimizer=OPT, patience=None, **kw)


# The child: the same fit, checkpointed every 2 steps. Its file writes go through a wrapper
# that, for the second checkpoint, puts half of the bytes on disk and then stalls (where the
# parent kills it), so the SIGKILL lands inside a write whatever the writer's layout.
CHILD = textwrap.dedent("""
    import builtins, os, sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import optax
    import hhjax
    from hhjax import fitting as hf
    from hhjax.fitting import _optax

    data, ck, marker = sys.argv[1:4]
    d = np.load(data)
    rec = hf.Recording(d["t"], d["v"], d["i"])
    real_open, opened = builtins.open, []

    class Stalling:
        def __init__(self, f):
            self.f, self.buf = f, b""
        def write(self, b):
            self.buf += bytes(b)
            return len(b)
        def flush(self):
            self.f.write(self.buf[: len(self.buf) // 2])
            self.f.flush()
            os.fsync(self.f.fileno())
            open(marker, "w").close()
            time.sleep(600)
        close = flush
        def fileno(self):
            return self.f.fileno()
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.flush()

    def stalling_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode and os.path.dirname(os.path.abspath(file)) == os.path.dirname(ck):
            opened.append(file)
            if len(opened) == 2:
                return Stalling(f)
        return f

    _optax.open = stalling_open
    hf.fit(rec, free=("g_na", "g_k"), params0=hhjax.HHParams().replace(g_na=130.0, g_k=33.0),
           method="optax", init="guess", optimizer=optax.adam(0.01), patience=None, steps=6,
           checkpoint=ck, checkpoint_every=2)
    print("the fit finished without stalling", flush=True)
""")


def _header(path):
    """The JSON header line and the payload of a checkpoint file."""
    raw = pathlib.Path(path).read_bytes()
    assert raw.startswith(b"hhjax-checkpoint"), raw[:40]
    first, second, payload = raw.split(b"\n", 2)
    return json.loads(second), payload


def test_sigkill_inside_a_checkpoint_write_loses_nothing(arrays, rec, tmp_path):
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    ck, marker = ckdir / "fit.ckpt", tmp_path / "stalled"
    data = tmp_path / "rec.npz"
    np.savez(data, t=arrays[0], v=arrays[1], i=arrays[2])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(ck), str(marker)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        full = _fit(rec, steps=6)  # the uninterrupted fit, while the child compiles
        deadline = time.monotonic() + 240
        while not marker.exists():
            if child.poll() is not None:
                out, err = child.communicate()
                pytest.fail(f"the child exited ({child.returncode}) before stalling:\n"
                            f"{out.decode()}\n{err.decode()[-3000:]}")
            assert time.monotonic() < deadline, "the child never reached its second checkpoint"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    # The checkpoint is the previous one, whole (step 2 of 6) ...
    header, payload = _header(ck)
    assert header["step"] == 2 and len(payload) == header["payload_bytes"]
    # ... though the kill landed inside a write: a partial file lies beside it.
    partial = [p for p in ckdir.iterdir() if p != ck]
    assert partial and all(p.stat().st_size < ck.stat().st_size for p in partial)

    seen = []
    resumed = _fit(rec, steps=6, checkpoint=ck, checkpoint_every=2,
                   callback=lambda k, loss, p: seen.append(k))
    assert seen == [2, 3, 4, 5]  # only the steps the kill lost ran again
    np.testing.assert_allclose(resumed.loss_history, full.loss_history, rtol=1e-10)
    for name in ("g_na", "g_k"):
        assert resumed.values[name] == pytest.approx(full.values[name], rel=1e-10)
    assert _header(ck)[0]["step"] == 6
    assert full.loss_history[-1] < full.loss_history[0]  # the fit did something


@pytest.fixture(scope="module")
def finished(rec, tmp_path_factory):
    """A complete checkpoint of a two-step fit of `rec`."""
    path = tmp_path_factory.mktemp("finished") / "fit.ckpt"
    res = _fit(rec, steps=2, checkpoint=path)
    return path, res


def test_truncated_checkpoint_is_refused_naming_the_file(rec, finished, tmp_path):
    raw = finished[0].read_bytes()
    path = tmp_path / "truncated.ckpt"
    for damaged in (raw[: len(raw) // 2], raw[: len(raw) - 1], raw[:-2] + b"\x00\x00"):
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match="truncated or corrupted") as err:
            _fit(rec, steps=4, checkpoint=path)
        assert str(path) in str(err.value) and "Delete" in str(err.value)
        assert path.read_bytes() == damaged  # left for the user to inspect
    for junk in (b"", b"not a checkpoint\n", raw[:10]):
        path.write_bytes(junk)
        with pytest.raises(ValueError, match="not an hhjax checkpoint") as err:
            _fit(rec, steps=4, checkpoint=path)
        assert str(path) in str(err.value)


def test_checkpoint_of_another_recording_is_refused(finished, tmp_path):
    other = hf.Recording(*_recording(20.0, 3))
    path = tmp_path / "fit.ckpt"
    path.write_bytes(finished[0].read_bytes())
    with pytest.raises(ValueError, match="different recordings") as err:
        _fit(other, steps=4, checkpoint=path)
    assert str(path) in str(err.value) and "Delete" in str(err.value)
    assert path.read_bytes() == finished[0].read_bytes()


@pytest.mark.parametrize(
    "change, part",
    [
        (dict(optimizer=optax.adam(0.02)), "optimiser"),
        (dict(clip=1.0), "optimiser"),
        (dict(bounds={"g_na": (50.0, 500.0)}), "bounds"),
        (dict(params0=START.replace(e_na=55.0)), "params0"),
        (dict(params0=START.astype(jnp.float32)), "dtype"),
    ],
)
def test_checkpoint_of_another_configuration_is_refused(rec, finished, tmp_path, change, part):
    path = tmp_path / "fit.ckpt"
    path.write_bytes(finished[0].read_bytes())
    kw = dict(free=("g_na", "g_k"), params0=START, method="optax", init="guess",
              optimizer=OPT, patience=None, steps=4, checkpoint=path)
    with pytest.raises(ValueError, match=part) as err:
        hf.fit(rec, **{**kw, **change})
    assert str(path) in str(err.value)


def test_resume_with_more_steps_is_accepted(rec, finished, tmp_path):
    path = tmp_path / "fit.ckpt"
    path.write_bytes(finished[0].read_bytes())
    seen = []
    res = _fit(rec, steps=3, checkpoint=path, callback=lambda k, loss, p: seen.append(k))
    assert seen == [2]
    np.testing.assert_array_equal(res.loss_history[:2], finished[1].loss_history)


def test_checkpoint_in_a_missing_directory_fails_before_fitting(rec, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the fit started")

    monkeypatch.setattr(hf._optax, "optax_loop", never)
    path = tmp_path / "no" / "such" / "fit.ckpt"
    with pytest.raises(ValueError, match="does not exist") as err:
        _fit(rec, steps=4, checkpoint=path)
    assert str(path.parent) in str(err.value)
    with pytest.raises(ValueError, match="is a directory"):
        _fit(rec, steps=4, checkpoint=tmp_path)
    with pytest.raises(TypeError, match="`checkpoint`"):
        _fit(rec, steps=4, checkpoint=3)
    with pytest.raises(ValueError, match="method='optax' only"):
        hf.fit(rec, checkpoint=tmp_path / "fit.ckpt")
