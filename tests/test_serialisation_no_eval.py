"""Loading never unpickles or evaluates anything: not in the source, and not
at run time, even for a file that holds a pickle."""

import ast
import builtins
import io
import pathlib
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod

SOURCES = pathlib.Path(pytreemod.__file__).parent / "_serialisation"
# Names whose use could run code from a file (`np.load` accepts pickles and
# parses headers with `ast.literal_eval`).
BUILTINS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN = {
    "pickle",
    "marshal",
    "shelve",
    "literal_eval",
    "read_array",
    "read_array_header_1_0",
    "read_array_header_2_0",
}


def _uses(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        name = None
        if isinstance(node, ast.Name):
            name = node.id
            if name in BUILTINS:
                found.append(f"line {node.lineno}: {name}")
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if name == "load" and isinstance(node.value, ast.Name):
                name = f"{node.value.id}.load"  # `np.load`, `pickle.load`
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found += [a.name for a in node.names if a.name in FORBIDDEN]
        elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append(f"line {node.lineno}: allow_pickle not False")
        if name in FORBIDDEN or name in ("np.load", "numpy.load"):
            found.append(f"line {node.lineno}: {name}")
    return found


@pytest.mark.parametrize("path", sorted(SOURCES.glob("*.py")), ids=lambda p: p.name)
def test_the_source_never_evaluates_or_unpickles(path):
    assert _uses(path) == []


def _refuse(*args, **kwargs):
    raise AssertionError("loading called a function that runs code from the file")


def test_loading_calls_nothing_that_evaluates(tmp_path, monkeypatch):
    model = [jnp.ones(3), np.arange(2), 1.5]
    like = [jnp.zeros(3), np.zeros(2, np.int64), 0.0]
    pytreemod.save(tmp_path / "m.ckpt", model, metadata={"a": 1})
    pytreemod.tree_serialise_leaves(tmp_path / "m.eqx", model)
    pickled = io.BytesIO()
    np.save(pickled, np.array([print], dtype=object), allow_pickle=True)
    (tmp_path / "pickle.eqx").write_bytes(pickled.getvalue())
    # Once with nothing patched, so that lazy imports (which compile and exec
    # modules) are done before the real run.
    _load_all(None, tmp_path, model, like)
    with monkeypatch.context() as patched:
        _load_all(patched, tmp_path, model, like)


def _load_all(patched, tmp_path, model, like):
    for module, name in [
        (builtins, "eval"),
        (builtins, "exec"),
        (builtins, "compile"),
        (ast, "literal_eval"),
        (pickle, "loads"),
        (pickle, "load"),
        (np, "load"),
        (np.lib.format, "read_array"),
    ]:
        if patched is not None:
            patched.setattr(module, name, _refuse)
    assert pytreemod.tree_equal(pytreemod.load(tmp_path / "m.ckpt", like), model)
    assert pytreemod.load_metadata(tmp_path / "m.ckpt") == {"a": 1}
    loaded = pytreemod.tree_deserialise_leaves(tmp_path / "m.eqx", like)
    assert pytreemod.tree_equal(loaded, model)
    with pytest.raises(ValueError, match="objects and structured dtypes are never"):
        pytreemod.tree_deserialise_leaves(tmp_path / "pickle.eqx", [np.zeros(1)])
