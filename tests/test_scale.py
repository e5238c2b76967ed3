"""Scale-out: the batch entry points (`simulate_batch`, `fit_batch`, the cross-entropy
population) on two local devices and on two `jax.distributed` processes return exactly the
one-device result (`tests/scale_worker.py` runs the problem)."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import scale_worker  # noqa: E402


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two host devices in one process, and two processes on 127.0.0.1, started together."""
    out = tmp_path_factory.mktemp("scale")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    two = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    port = str(_free_port())
    worker = str(HERE / "scale_worker.py")
    jobs = {
        "devices": subprocess.Popen([sys.executable, worker, str(out / "devices.npz")],
                                    env=two, stderr=subprocess.PIPE, text=True),
    }
    for k in range(2):
        jobs[f"process{k}"] = subprocess.Popen(
            [sys.executable, worker, str(out / f"process{k}.npz"), str(k), "2", port],
            env=env, stderr=subprocess.PIPE, text=True)
    reference = scale_worker.run()  # one device, here
    for name, job in jobs.items():
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, f"{name} failed:\n{err[-3000:]}"
    return reference, {name: dict(np.load(out / f"{name}.npz")) for name in jobs}


@pytest.mark.parametrize("name", ["devices", "process0", "process1"])
def test_batch_entry_points_equal_one_device(runs, name):
    reference, results = runs
    got = results[name]
    # The run really was spread: two devices in one process, or one device in each of two.
    assert tuple(got["devices"]) == ((2, 1) if name == "devices" else (1, 2))
    assert tuple(reference["devices"]) == (1, 1)
    assert reference["count"].tolist() == [0, 1, 1, 4, 5, 5, 6]  # the batch does fire
    assert np.all(np.diff(reference["cem_losses"][1:]) <= 0)  # the search does descend
    if name == "devices":  # inputs sharded on an Explicit mesh are taken as they are
        np.testing.assert_array_equal(got["explicit_times"], reference["times"][:6])
    np.testing.assert_array_equal(reference["fused_count"], reference["count"])
    np.testing.assert_array_equal(reference["fused_times"], reference["times"])
    for key in ("count", "times", "v", "ok", "values", "stderr", "n_iter", "cem_theta",
                "cem_losses", "fused_count", "fused_times"):
        np.testing.assert_array_equal(got[key], reference[key], err_msg=key)
