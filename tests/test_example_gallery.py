"""The gallery is complete: every script in examples/ is run in full by
examples/make_gallery.py and has a page under docs/examples/ that includes
its source, its committed plot and its full run's figures, and is listed on
the gallery's index page. (`mkdocs build --strict` checks that the included
files exist; this checks that nothing is left off.)"""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "examples"
SCRIPTS = sorted(
    path.stem
    for path in (ROOT / "examples").glob("*.py")
    if not path.stem.startswith("_") and path.stem != "make_gallery"
)


def _make_gallery():
    spec = importlib.util.spec_from_file_location(
        "make_gallery", ROOT / "examples" / "make_gallery.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_gallery_runs_every_example():
    assert len(SCRIPTS) >= 5
    assert sorted(_make_gallery().EXAMPLES) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_example_has_a_complete_page(name):
    page = (DOCS / f"{name}.md").read_text()
    assert f'--8<-- "examples/{name}.py"' in page
    assert f'--8<-- "docs/examples/results/{name}.txt"' in page
    assert f"]({name}.png)" in page
    assert (DOCS / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    figures = (DOCS / "results" / f"{name}.txt").read_text()
    assert f"make_gallery.py {name}`" in figures and "| measure | value |" in figures
    assert f"]({name}.md)" in (DOCS / "index.md").read_text()
    source = (ROOT / "examples" / f"{name}.py").read_text()
    for flag in ("--fast", "--plot", "--json"):
        assert flag in source, f"examples/{name}.py does not take {flag}"
