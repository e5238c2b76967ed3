"""Every research notebook runs top to bottom from a fresh kernel, with small sizes.

Small sizes come from each notebook's `parameters` cell, which reads `HHJAX_NB_SMALL=1`. The
notebooks assert their own scientific claims (e.g. four spikes in seed 000's step, two for the
double pulse, autodiff against finite differences), so executing them is a test of those claims.
"""

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    for required in (
        "01_seed_tutorials.ipynb",
        "02_vectorised_simulation.ipynb",
        "03_gradients.ipynb",
    ):
        assert required in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs_and_with_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "HHJAX_NB_SMALL" in tagged[0].source


# Every notebook runs in the default suite; at small sizes each takes well under a minute on two
# CPU cores (the fitting notebooks 04 and 05 are dominated by compiling their fit programs).


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch, request):
    monkeypatch.setenv("HHJAX_NB_SMALL", "1")
    if path.name.startswith("04_"):
        pytest.importorskip("hhjax.fitting")
    if path.name.startswith("05_"):
        monkeypatch.setenv("HHJAX_ABF_DIR", str(request.getfixturevalue("abf_dir")))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    images = sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )
    assert images >= 1, "the notebook should draw its figures"
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
