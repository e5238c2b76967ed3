"""The built documentation site, read as a reader would: Chromium opens the index, an API page
and a notebook page, and each shows its main content (and, where the page has them, figures
that loaded).

Not part of the default run (marker `docs`): it needs the built site and a browser.

    .venv/bin/mkdocs build --strict
    HHJAX_DOCS_REQUIRED=1 HHJAX_DOCS_SCREENSHOTS=out/docs .venv/bin/python -m pytest -m docs -n 0

Settings: `HHJAX_DOCS_SITE` (default `site/`), `HHJAX_CHROMIUM` (default `/usr/bin/chromium`,
Debian's package; no browser is downloaded), `HHJAX_DOCS_SCREENSHOTS` (a folder for one PNG per
page; default: pytest's temporary folder). With `HHJAX_DOCS_REQUIRED=1` a missing site, browser
or playwright fails the test instead of skipping it.
"""

import functools
import http.server
import os
import pathlib
import re
import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.docs

REPO = pathlib.Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("HHJAX_DOCS_REQUIRED") == "1"


def _missing(what):
    if REQUIRED:
        pytest.fail(f"{what} (HHJAX_DOCS_REQUIRED=1)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def site_url():
    site = pathlib.Path(os.environ.get("HHJAX_DOCS_SITE", REPO / "site"))
    if not (site / "index.html").is_file():
        _missing(f"no built site at {site}; run `mkdocs build --strict` first")
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[docs]')")
    chromium = os.environ.get("HHJAX_CHROMIUM", "/usr/bin/chromium")
    if not pathlib.Path(chromium).is_file():
        _missing(f"no Chromium at {chromium} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = os.environ.get("HHJAX_DOCS_SCREENSHOTS")
    path = pathlib.Path(folder) if folder else tmp_path_factory.mktemp("docs-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(browser, url, shots, name):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("response", lambda r: errors.append(r.url) if r.status >= 400 and
            r.url.startswith(url.split("/", 3)[0] + "//127.0.0.1") else None)
    # Not "load": the page's MathJax comes from a CDN, which a machine offline never answers.
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(
        "Array.from(document.images).every(img => img.complete)", timeout=30_000
    )
    figures = page.locator("article img")
    if figures.count():  # the screenshot shows the first figure, not only the page's top
        figures.first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)  # the header's title settles after a scroll
    page.screenshot(path=str(shots / f"{name}.png"))
    return page, errors


def _main_text(page):
    return page.inner_text("article")


def _loaded_images(page):
    """Sizes of the images in the main content that decoded to a picture."""
    return page.eval_on_selector_all(
        "article img", "imgs => imgs.filter(i => i.naturalWidth > 0)"
        ".map(i => [i.naturalWidth, i.naturalHeight])"
    )


def test_index_shows_getting_started_and_a_figure(browser, site_url, shots):
    page, errors = _open(browser, f"{site_url}/", shots, "index")
    text = _main_text(page)
    assert "Getting started" in text
    assert "hhjax.simulate(p, stim" in text  # the README's example, included
    assert 'pip install -e ".[docs]"' in text
    assert len(_loaded_images(page)) >= 1
    assert not errors, errors
    page.close()


def test_api_page_documents_simulate(browser, site_url, shots):
    page, errors = _open(browser, f"{site_url}/api/hhjax/", shots, "api_hhjax")
    entry = page.locator('[id="hhjax.simulate"]')
    assert entry.count() == 1
    text = _main_text(page)
    assert "Arguments:" in text and "Trajectory" in text
    # the cross-reference in simulate's docstring resolved to a link on the site
    assert page.locator('article a[href*="#hhjax.Trajectory"]').count() >= 1
    assert not errors, errors
    page.close()


def test_notebook_page_shows_its_figures(browser, site_url, shots):
    page, errors = _open(browser, f"{site_url}/notebooks/01_seed_tutorials/", shots,
                         "notebook_01")
    text = _main_text(page)
    assert "The seed tutorials, reproduced with hhjax" in text
    images = _loaded_images(page)
    assert len(images) >= 1 and all(w > 100 and h > 100 for w, h in images)
    assert not errors, errors
    page.close()


def test_every_public_name_has_an_api_entry(site_url):
    """Each name of each public module's `__all__` has an anchor on its module's API page."""
    import importlib

    site = pathlib.Path(os.environ.get("HHJAX_DOCS_SITE", REPO / "site"))
    pages = {"hhjax": "hhjax", "hhjax.models": "models", "hhjax.fitting": "fitting",
             "hhjax.io": "io", "hhjax.plot": "plot"}
    missing = []
    for module, page in pages.items():
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        missing += [f"{module}.{name}" for name in importlib.import_module(module).__all__
                    if f'id="{module}.{name}"' not in html]
    assert not missing, missing


# Every Python example in the guides runs, top to bottom within its page, as a reader would
# paste it, from a fresh folder; a page whose data are absent (the shared ABF recordings) is
# skipped, or fails under HHJAX_DOCS_REQUIRED=1.
GUIDES = sorted((REPO / "docs" / "guides").glob("*.md"))


@pytest.mark.parametrize("guide", GUIDES, ids=[g.stem for g in GUIDES])
def test_guide_examples_run(guide, tmp_path):
    text = guide.read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    if not code:
        pytest.skip("no Python example")
    if "../shared/data/abf" in code and not (REPO.parent / "shared" / "data" / "abf").is_dir():
        _missing("../shared/data/abf is not present")
    env = dict(os.environ, MPLBACKEND="Agg")
    # A reader's working directory is a clone with `shared/` beside it; here a fresh folder
    # with the same neighbour, so that nothing an example writes lands in the repository.
    cwd = tmp_path / "clone"
    cwd.mkdir()
    if (REPO.parent / "shared").is_dir():
        (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    toml = re.findall(r"```toml\n(.*?)```", text, re.S)
    if toml:  # the page's sweep, run by its command before the Python that reads it
        (cwd / "sweep.toml").write_text(toml[0], encoding="utf-8")
        hhjax = pathlib.Path(sys.executable).with_name("hhjax")
        subprocess.run([str(hhjax), "sweep", "sweep.toml", "--out", "runs/a", "--quiet"],
                       cwd=cwd, env=env, check=True, timeout=600)
    run = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, f"{guide.name}:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
