"""`tree_at`: a copy of a pytree with some of its nodes replaced.

How the nodes that `where` selects are found: the tree is rebuilt once with a
fresh `_Marker` at every leaf and at every node without children (`None`,
`()`, ...), so that equal values, and CPython's shared `()` and `None`, still
get objects of their own. Every rebuilt inner node is a new object too. `where`
runs on that marked tree, and whatever it returns is looked up by identity,
which gives the position (the path of child indices) of each selected node.
Then the original tree is rebuilt along those paths only; every subtree off
them is returned as the very same object.
"""

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ._tree_flatten_one_level import tree_flatten_one_level

_Path = tuple[int, ...]

_WHERE_HELP = """\
`where` must only select parts of the pytree it is given, by attribute access
and indexing:
    tree_at(lambda m: m.layers[0].weight, model, new_weight)
    tree_at(lambda m: (m.encoder, m.decoder.bias), model, (enc, bias))
Probably it computed a new value (`m.weight.T`, `m.weight + 1`), built a
nested container (only the outer tuple or list may be new), reached into a
leaf (or a node that `is_leaf` makes a leaf), or selected a static field
(`field(static=True)` values belong to the structure, not the leaves: build a
new Module instead)."""

_NOT_A_NODE_ERROR = "`where` returned {got}, which is not a node of `pytree`.\n"

_WHERE_FAILED_ERROR = (
    "`where` failed with {error}. It is called on a stand-in copy of `pytree` "
    "whose leaves are placeholders, so it can select nodes but not compute with "
    "them.\n"
)

_OVERLAP_ERROR = (
    "`where` selected {what}: `tree_at` replaces each selected node once, so "
    "the selected nodes must be distinct and none may contain another. Select "
    "the outer node only and build its replacement yourself."
)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


class _Marker:
    """Stands in for the node at `path` while `where` runs."""

    __slots__ = ("path",)

    def __init__(self, path: _Path):
        self.path = path

    def __repr__(self) -> str:
        return f"<tree_at placeholder for node {self.path}>"


def _describe(obj: Any) -> str:
    text = repr(obj)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"an object of type {type(obj).__name__} ({text})"


def _mark(
    node: Any,
    path: _Path,
    is_leaf: Callable[[Any], bool] | None,
    found: dict[int, tuple[Any, _Path]],
) -> Any:
    """Rebuild `node` with markers; record `id -> (object, path)` of every
    node of the result in `found` (which also keeps them alive, so that no
    two share an id)."""
    children: list[Any] = []
    treedef = None
    if is_leaf is None or not is_leaf(node):
        children, treedef = tree_flatten_one_level(node)
    if treedef is None or not children or jax.tree_util.treedef_is_leaf(treedef):
        marked: Any = _Marker(path)
    else:
        marked = treedef.unflatten(
            [
                _mark(child, (*path, i), is_leaf, found)
                for i, child in enumerate(children)
            ]
        )
    found[id(marked)] = (marked, path)
    return marked


def _position(obj: Any, found: dict[int, tuple[Any, _Path]]) -> _Path | None:
    entry = found.get(id(obj))
    if entry is None or entry[0] is not obj:
        return None
    return entry[1]


def _rebuild(
    node: Any,
    path: _Path,
    new_values: dict[_Path, Any],
    on_the_way: set[_Path],
) -> Any:
    if path in new_values:
        return new_values[path]
    if path not in on_the_way:
        return node
    children, treedef = tree_flatten_one_level(node)
    return treedef.unflatten(
        [
            _rebuild(child, (*path, i), new_values, on_the_way)
            for i, child in enumerate(children)
        ]
    )


def _node_at(tree: Any, path: _Path) -> Any:
    for i in path:
        tree = tree_flatten_one_level(tree)[0][i]
    return tree


def tree_at(
    where: Callable[[Any], Any],
    pytree: Any,
    replace: Any = _MISSING,
    replace_fn: Callable[[Any], Any] = _MISSING,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Return a copy of `pytree` with the nodes that `where` selects replaced.

    This is how to "modify" an immutable Module: the result is a new pytree,
    the input is unchanged, and every part that is not replaced is the very
    same object as before.

    Args:
        where: a function from `pytree` to one of its nodes, or to a tuple or
            list of its nodes, e.g. `lambda m: m.layers[0].weight` or
            `lambda m: (m.weight, m.bias)`. A node may be a leaf or a whole
            subtree, `None` fields included. Nodes are told apart by position,
            not value, so two equal leaves in different places are distinct.
        pytree: the pytree to copy.
        replace: the new value, if `where` returns a single node; a sequence of
            as many new values as selected nodes, if it returns a sequence.
        replace_fn: instead of `replace`, a function that is given each
            selected node and returns its new value.
        is_leaf: an optional predicate: nodes for which it returns `True` are
            treated as leaves (they can be selected, but not what is inside).

    Returns:
        The new pytree.

    Raises:
        ValueError: if not exactly one of `replace` and `replace_fn` is given;
            if `where` returns something that is not a node of `pytree`, or
            selects a node twice or a node and something inside it; if
            `replace` has the wrong number of values.

    Example:
        >>> import jax.numpy as jnp
        >>> tree = {"w": jnp.zeros(2), "b": None, "n": [1, 1]}
        >>> tree_at(lambda t: t["n"][1], tree, 5)["n"]
        [1, 5]
        >>> tree_at(lambda t: (t["b"], t["n"]), tree, ("x", ()))["b"]
        'x'
        >>> tree_at(lambda t: t["w"], tree, replace_fn=lambda w: w + 1)["w"]
        Array([1., 1.], dtype=float32)
    """
    has_replace, has_fn = replace is not _MISSING, replace_fn is not _MISSING
    if has_replace == has_fn:
        which = "both" if has_replace else "neither"
        raise ValueError(
            "Pass exactly one of `replace` (the new value) and `replace_fn` (a "
            f"function of the old value) to `tree_at`; got {which}."
        )

    found: dict[int, tuple[Any, _Path]] = {}
    marked = _mark(pytree, (), is_leaf, found)
    try:
        selected = where(marked)
    except (AttributeError, TypeError) as e:
        raise ValueError(
            _WHERE_FAILED_ERROR.format(error=f"{type(e).__name__}: {e}") + _WHERE_HELP
        ) from e

    single = _position(selected, found)
    if single is not None:
        paths = [single]
    elif isinstance(selected, (tuple, list)):
        paths = []
        for item in selected:
            path = _position(item, found)
            if path is None:
                raise ValueError(
                    _NOT_A_NODE_ERROR.format(got=_describe(item)) + _WHERE_HELP
                )
            paths.append(path)
    else:
        raise ValueError(
            _NOT_A_NODE_ERROR.format(got=_describe(selected)) + _WHERE_HELP
        )

    ordered = sorted(paths)
    for a, b in itertools.pairwise(ordered):
        if a == b:
            raise ValueError(_OVERLAP_ERROR.format(what="the same node twice"))
        if b[: len(a)] == a:
            raise ValueError(
                _OVERLAP_ERROR.format(what="a node and also a node inside it")
            )

    if has_fn:
        values = [replace_fn(_node_at(pytree, path)) for path in paths]
    elif single is not None:
        values = [replace]
    else:
        if not isinstance(replace, Sequence) or isinstance(replace, str):
            raise ValueError(
                f"`where` selected {len(paths)} nodes (it returned a sequence), so "
                f"`replace` must be a sequence of {len(paths)} new values; got "
                f"{_describe(replace)}."
            )
        if len(replace) != len(paths):
            raise ValueError(
                f"`replace` must have one value per node that `where` selected: "
                f"expected {len(paths)}, got {len(replace)}."
            )
        values = list(replace)

    new_values = dict(zip(paths, values, strict=True))
    on_the_way = {path[:n] for path in paths for n in range(len(path))}
    return _rebuild(pytree, (), new_values, on_the_way)
