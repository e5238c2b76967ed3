"""Test configuration: float64 everywhere (float32 is checked in its own tests), headless plots."""

import os
import pathlib

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def abf_dir():
    """The shared real recordings, or skip when this checkout has none beside it."""
    path = SHARED / "data" / "abf"
    if not path.is_dir():
        pytest.skip("../shared/data/abf is not present")
    return path


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. A full run compiles thousands of
    programs; kept all session, their code mappings grow without bound, and a late
    compilation crashed (segfault/abort inside XLA's compiler in test_trust, reproducibly in
    the full run, never with the module alone)."""
    yield
    jax.clear_caches()
