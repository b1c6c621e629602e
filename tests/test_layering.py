"""The layer rule of DESIGN.md: imports point down the layer order only, and
nothing in pytreemod imports a peer library."""

import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "pytreemod"
# Lower number = lower layer. Everything not listed sits on top of all three.
# `_errors` (error_if, Enumeration) sits on layers 1-2 and below `_state`.
LAYERS = {"_module": 1, "_transform": 2, "_errors": 2.5, "_state": 3}
TOP = 4
PEERS = {"equinox", "flax"}


def _layer_of(parts: tuple[str, ...]) -> int:
    """The layer of a module given its dotted path inside `pytreemod`."""
    if not parts:
        return TOP  # `pytreemod` itself re-exports everything
    return LAYERS.get(parts[0], TOP)


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """Every import in `path` as (line, absolute module name)."""
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if module_parts[-1] == "__init__":
        module_parts = module_parts[:-1]
        package = module_parts
    else:
        package = module_parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ((node.module,) if node.module else ()))
                if node.module is None:
                    found += [(node.lineno, f"{name}.{a.name}") for a in node.names]
                    continue
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _violations(path: pathlib.Path) -> list[str]:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    own = _layer_of(parts[:-1] if parts[-1] == "__init__" else parts)
    if parts == ("__init__",):
        own = TOP
    bad = []
    for line, name in _imports(path):
        top = name.split(".")[0]
        if top in PEERS:
            bad.append(f"{path.name}:{line} imports the peer library {name}")
        if top == "pytreemod":
            target = _layer_of(tuple(name.split(".")[1:]))
            if target > own:
                bad.append(f"{path.name}:{line} imports {name}, a higher layer")
    return bad


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    assert _violations(path) == []


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    # The test above could pass vacuously if the checker never fired.
    fake = tmp_path / "pytreemod" / "_module"
    fake.mkdir(parents=True)
    bad = fake / "_bad.py"
    bad.write_text("from .._state import x\nimport equinox\nfrom ..nn import y\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "pytreemod")
    found = _violations(bad)
    assert len(found) == 3
    assert "higher layer" in found[0] and "peer library" in found[1]


def test_tests_do_not_import_peers():
    for path in sorted(PACKAGE.parent.joinpath("tests").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in PEERS, f"{path.name} imports {name}"
