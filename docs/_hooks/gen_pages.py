"""Pages generated at build time (mkdocs-gen-files): the API reference, the recorded results,
and the research notebooks executed in small mode.

- API: one page per public module, one entry per name of its runtime `__all__`, so a new public
  name gets its entry without anyone editing the docs. A name exported by several modules is
  documented once, at its home (`hhjax` when the top level exports it, else the module that
  defines it); its other entries are short headings that link there.
- Results: the benchmark and fitting write-ups are the committed Markdown files themselves,
  copied with the date of the commit that last changed each; the validation page's
  `%last-changed PATH%` marks are filled with those dates.
- Notebooks: see `notebooks.py`; the figures the README shows are copied beside them.
"""

import importlib
import pathlib
import re
import subprocess
import sys

import mkdocs_gen_files

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import notebooks  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]

# Public modules in reading order, each with its page and one line about it.
MODULES = {
    "hhjax": ("api/hhjax.md", "Simulation: models, stimuli, solvers, spikes, batches, sweeps."),
    "hhjax.models": ("api/models.md", "Channels and the membrane models composed of them."),
    "hhjax.fitting": ("api/fitting.md", "Fitting conductances to recordings."),
    "hhjax.io": ("api/io.md", "Reading recordings: ABF, NWB, CSV, NPZ."),
    "hhjax.plot": ("api/plot.md", "Figures."),
}

# Headings for the private modules that define public names; one not listed here is titled by
# its path, so a new module still gets its group.
GROUPS = {
    "hhjax._simulate": "Simulating",
    "hhjax._stimulus": "Stimuli",
    "hhjax._solvers": "Solvers",
    "hhjax._model": "The model contract",
    "hhjax.models._hh": "Hodgkin–Huxley",
    "hhjax._features": "Spikes and firing rates from traces",
    "hhjax._spikes": "Spikes detected during the solve",
    "hhjax._batch": "Large batches",
    "hhjax._sweep": "Resumable sweeps",
    "hhjax._kinetics": "Rate functions",
    "hhjax.models._channels": "Channels",
    "hhjax.models._cortical": "The cortical family (Pospischil et al. 2008)",
    "hhjax.models._membrane": "Composed membranes",
    "hhjax.models._stepper": "Fixed-grid exponential Euler",
    "hhjax.fitting._fit": "Fitting",
    "hhjax.fitting._config": "Initialisers, solvers and the recording model",
    "hhjax.fitting._objectives": "Objectives and spike features",
    "hhjax.fitting._recording": "Recordings and what is read from them",
    "hhjax.fitting._steps": "Step protocols",
    "hhjax.fitting._free": "Free parameters",
    "hhjax.fitting._linear": "The linear estimate",
    "hhjax.fitting._lm": "Levenberg–Marquardt",
    "hhjax.fitting._optax": "Optax",
    "hhjax.fitting._grid": "RK4 on the sample grid",
    "hhjax.fitting._plot": "Figures",
}


# Types that public functions return but no module exports: documented beside them, so that
# their fields have a page ({public module: [defining path]}).
RETURNED = {"hhjax": ["hhjax._sweep.SweepSummary"]}


def _defining_module(public, name, obj):
    """The module that defines `obj`: its `__module__` for classes and functions, otherwise the
    private module holding the same object under that name."""
    if isinstance(obj, type(sys)):
        return obj.__name__
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and module.startswith("hhjax") and hasattr(obj, "__qualname__"):
        return module
    for path, mod in sorted(sys.modules.items()):
        if path.startswith("hhjax.") and vars(mod).get(name) is obj and "._" in path:
            return path
    return public


def api_entries():
    """{public module: [(group module, name, home path or None)]}; None marks the home entry."""
    runtime = {path: importlib.import_module(path) for path in MODULES}
    exporters = {}
    for path, mod in runtime.items():
        for name in mod.__all__:
            exporters.setdefault(id(getattr(mod, name)), []).append(path)
    entries = {}
    for path, mod in runtime.items():
        rows = []
        for name in mod.__all__:
            obj = getattr(mod, name)
            where = _defining_module(path, name, obj)
            paths = exporters[id(obj)]
            if "hhjax" in paths:
                home = "hhjax"
            else:
                prefixes = [p for p in paths if where == p or where.startswith(p + ".")]
                home = max(prefixes, key=len) if prefixes else paths[0]
            rows.append((where, name, None if home == path else f"{home}.{name}"))
        entries[path] = rows
    return entries


def write_api():
    for path, rows in api_entries().items():
        page, blurb = MODULES[path]
        lines = [f"# `{path}`", "", blurb, "", f"::: {path}", "    options:",
                 "      members: false", "      show_root_heading: false", ""]
        groups = {}
        for where, name, home in rows:
            groups.setdefault(where, []).append((name, home))
        for target in RETURNED.get(path, ()):
            where, name = target.rsplit(".", 1)
            groups.setdefault(where, []).append((name, target))
        for where in sorted(groups, key=lambda w: list(GROUPS).index(w) if w in GROUPS else 99):
            lines += [f"## {GROUPS.get(where, f'`{where}`')}", ""]
            for name, home in sorted(groups[where], key=lambda r: r[0].lower()):
                if home is None:
                    lines += [f"::: {path}.{name}", ""]
                elif home.startswith(f"{where}."):  # returned, not exported
                    lines += [f"::: {home}", "", f"Not a public name: `{path}.{name}` does not "
                              "exist; functions on this page return it.", ""]
                else:
                    lines += [f"### `{name}` {{ #{path}.{name} }}", "",
                              f"The same object as [`{home}`][]; documented there.", ""]
        with mkdocs_gen_files.open(page, "w") as f:
            f.write("\n".join(lines))


# Committed write-ups shown on the site, at the same relative paths, so their links still work.
RESULTS = (
    "benchmarks/README.md",
    "benchmarks/results/results.md",
    "fitting/README.md",
    "fitting/results/summary.md",
    "fitting/results/coverage.md",
    "fitting/results/protocols/summary.md",
    "fitting/real/README.md",
    "fitting/results/real/summary.md",
)


def _last_changed(path):
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", path],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""
    return out or "unknown (not a git checkout)"


def write_results():
    for rel in RESULTS:
        text = (REPO / rel).read_text(encoding="utf-8")
        title, _, rest = text.partition("\n")
        note = (f"*This page is the committed file `{rel}`, last changed {_last_changed(rel)}; "
                "the dates inside are those of the runs it reports.*")
        with mkdocs_gen_files.open(rel, "w") as f:
            f.write(f"{title}\n\n{note}\n{rest}")


def write_validation():
    """Fill each `%last-changed PATH%` of the validation page with that file's commit date."""
    text = (REPO / "docs" / "validation.md").read_text(encoding="utf-8")
    text = re.sub(r"%last-changed (\S+)%", lambda m: _last_changed(m.group(1)), text)
    with mkdocs_gen_files.open("validation.md", "w") as f:
        f.write(text)


def write_notebooks():
    for figure in sorted((REPO / "notebooks" / "figures").glob("*.png")):
        with mkdocs_gen_files.open(f"notebooks/figures/{figure.name}", "wb") as f:
            f.write(figure.read_bytes())
    for name, content in notebooks.executed(REPO).items():
        with mkdocs_gen_files.open(f"notebooks/{name}", "w") as f:
            f.write(content)


write_api()
write_results()
write_validation()
write_notebooks()
