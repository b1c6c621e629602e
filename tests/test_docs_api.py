"""Every public name of `pytreemod`, `pytreemod.nn`, `pytreemod.debug` and
`pytreemod.sharding` is on a page of the API reference (docs/api/), once, and
has a docstring; every page is in mkdocs.yml's nav. (`mkdocs build --strict`
in CI checks that each name resolves and each link works.)"""

import pathlib
import re
import types

import pytest

import pytreemod
import pytreemod.debug
import pytreemod.nn
import pytreemod.policy
import pytreemod.select
import pytreemod.sharding
import pytreemod.surgery

ROOT = pathlib.Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api"


def _public(module: types.ModuleType) -> list[str]:
    return [
        f"{module.__name__}.{name}"
        for name in dir(module)
        if not name.startswith("_")
        and not isinstance(getattr(module, name), types.ModuleType)
    ]


PUBLIC = [
    name
    for module in (
        pytreemod,
        pytreemod.nn,
        pytreemod.debug,
        pytreemod.policy,
        pytreemod.select,
        pytreemod.sharding,
        pytreemod.surgery,
    )
    for name in _public(module)
]


def _documented() -> list[str]:
    names = []
    for page in sorted(API.rglob("*.md")):
        names += re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), re.MULTILINE)
    return names


def test_every_public_name_is_on_an_api_page_once():
    documented = _documented()
    missing = sorted(set(PUBLIC) - set(documented))
    assert not missing, f"add these to a page under docs/api/: {missing}"
    unknown = sorted(set(documented) - set(PUBLIC))
    assert not unknown, f"docs/api/ documents names that are not public: {unknown}"
    twice = sorted({n for n in documented if documented.count(n) > 1})
    assert not twice, f"documented on more than one page: {twice}"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_a_docstring(name):
    module, _, attr = name.rpartition(".")
    obj = getattr(__import__(module, fromlist=[attr]), attr)
    assert (getattr(obj, "__doc__", None) or "").strip(), f"{name} has no docstring"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    docs = ROOT / "docs"
    for page in sorted(docs.rglob("*.md")):
        relative = page.relative_to(docs).as_posix()
        assert f": {relative}\n" in nav, f"{relative} is not in mkdocs.yml's nav"
