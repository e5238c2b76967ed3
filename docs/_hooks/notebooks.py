"""Execute the research notebooks for the site, in small mode, two at a time.

The notebooks are committed without outputs (tests/test_notebooks.py keeps them so), so the site
runs them at build time with `HHJAX_NB_SMALL=1`: every figure on the site is one the current code
drew, and every claim the notebooks assert held when the site was built. Executed copies are
kept in `.cache/docs-notebooks/` under a key of the notebook and the library's source, so that
`mkdocs serve` re-executes only what changed.

Notebook 05 needs the shared ABF recordings ($HHJAX_ABF_DIR, or ../shared/data/abf beside the
repository). Without them it is shown unexecuted, under a note saying why.
"""

import concurrent.futures
import hashlib
import os
import pathlib
import time

import nbclient
import nbformat

NEEDS_RECORDINGS = "05_fitting_real_recording.ipynb"


def _abf_dir(repo):
    path = os.environ.get("HHJAX_ABF_DIR") or str(repo.parent / "shared" / "data" / "abf")
    return path if pathlib.Path(path).is_dir() else None


def _key(repo, notebook, abf_dir):
    digest = hashlib.sha256(notebook.read_bytes())
    for source in sorted((repo / "hhjax").rglob("*.py")):
        digest.update(source.read_bytes())
    if notebook.name == NEEDS_RECORDINGS:
        digest.update(str(abf_dir is not None).encode())
    return digest.hexdigest()[:16]


def _execute(notebook, target, abf_dir):
    nb = nbformat.read(notebook, as_version=4)
    env = {"HHJAX_NB_SMALL": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    if abf_dir:
        env["HHJAX_ABF_DIR"] = abf_dir
    os.environ.update(env)  # the kernel inherits this process's environment
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    partial = target.with_suffix(".partial")
    nbformat.write(nb, partial)
    partial.replace(target)  # an interrupted build leaves no half-written copy in the cache
    return time.perf_counter() - start


def _absent_note(notebook, target):
    nb = nbformat.read(notebook, as_version=4)
    note = nbformat.v4.new_markdown_cell(
        "**Not executed on this build:** the shared ABF recordings were not found "
        "(`$HHJAX_ABF_DIR`, or `../shared/data/abf` beside the repository), so this page shows "
        "the notebook's code without its outputs. Builds with the recordings present (CI) show "
        "its figures."
    )
    nb.cells.insert(1, note)
    nbformat.write(nb, target)


def executed(repo, workers=2):
    """{file name: executed notebook JSON} for every notebook in `notebooks/`."""
    cache = repo / ".cache" / "docs-notebooks"
    cache.mkdir(parents=True, exist_ok=True)
    abf_dir = _abf_dir(repo)
    targets, todo = {}, []
    for notebook in sorted((repo / "notebooks").glob("*.ipynb")):
        target = cache / f"{notebook.stem}.{_key(repo, notebook, abf_dir)}.ipynb"
        targets[notebook.name] = target
        if target.exists():
            continue
        if notebook.name == NEEDS_RECORDINGS and abf_dir is None:
            print(f"docs: {notebook.name}: recordings absent, shown unexecuted", flush=True)
            _absent_note(notebook, target)
        else:
            todo.append(notebook)
    # Threads suffice: each notebook runs in its own kernel process.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = {pool.submit(_execute, nb, targets[nb.name], abf_dir): nb for nb in todo}
        for job in concurrent.futures.as_completed(jobs):
            print(f"docs: executed {jobs[job].name} in {job.result():.0f} s", flush=True)
    for stale in cache.glob("*.ipynb"):
        if stale not in targets.values():
            stale.unlink()
    return {name: target.read_text(encoding="utf-8") for name, target in targets.items()}
