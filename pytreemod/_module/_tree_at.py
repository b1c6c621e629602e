"""`tree_at`: a copy of a pytree with some of its nodes replaced.

How the nodes that `where` selects are found: the tree is rebuilt once with a
fresh `_LeafWrapper` at every leaf, a fresh `_DistinctTuple` for every `()`
(CPython shares the empty tuple), and a new object for every other inner
node, so that equal values still get objects of their own. `None` stays
`None` (as in Equinox, `where` may test `x is None`), which makes a `None` an
identifiable node only when the tree has a single one. `where` runs on that
stand-in tree, and whatever it returns is looked up by identity, which gives
the position (the path of child indices) of each selected node. Then the
original tree is rebuilt along those paths only; every subtree off them is
returned as the very same object.

The checks on what `where` returns, and their order, follow Equinox, so that
the same misuse raises the same exception type with the same first sentence.
"""

from collections.abc import Callable
from typing import Any

import jax

from ._tree_flatten_one_level import tree_flatten_one_level

_Path = tuple[int, ...]

_WHERE_HELP = """
`where` must only select parts of the pytree it is given, by attribute access
and indexing, and return one of them or a tuple or list of them:
    tree_at(lambda m: m.layers[0].weight, model, new_weight)
    tree_at(lambda m: (m.encoder, m.decoder.bias), model, (enc, bias))
It is called on a stand-in copy of `pytree` whose leaves are placeholders, so
it cannot compute new values (`m.weight.T`, `m.weight + 1`), look inside a
leaf (or a node that `is_leaf` makes a leaf), or return a static field
(`field(static=True)` values belong to the structure, not the leaves: build a
new Module instead)."""

_NEITHER_OR_BOTH_ERROR = (
    "Precisely one of `replace` and `replace_fn` must be specified. Got {which}: "
    "pass `replace` (the new value, or a sequence of new values) or `replace_fn` "
    "(a function of the old value)."
)

_NOT_A_LEAF_ERROR = "Operation undefined, {leaf} is not a leaf of the pytree."

_NOT_A_NODE_ERROR = (
    "`where` does not specify an element or elements of `pytree`. {detail}\n"
)

_NOT_A_SEQUENCE_ERROR = (
    "object of type '{type}' has no len(). `where` returned {got}, which is "
    "neither a node of `pytree` nor a sequence of nodes.\n"
)

_REPLACE_NOT_A_SEQUENCE_ERROR = (
    "object of type '{type}' has no len(). `where` returned a sequence of {n} "
    "nodes, so `replace` must be a sequence of {n} new values, one for each; "
    "got {got}."
)

_WRONG_LENGTH_ERROR = (
    "`where` must return a sequence of leaves of the same length as `replace`. "
    "It selected {n} nodes; `replace` has {m} values."
)

_AMBIGUOUS_NONE_ERROR = """\
`where` does not uniquely identify a single element of `pytree`. It selected a
`None`, and `pytree` has {count} of them: `None` is a node without children,
one shared object, so which one was meant cannot be told. Say that `None`s are
leaves, and then each is a place of its own:
    tree_at(lambda t: t[0], (None, None, 1), True, is_leaf=lambda x: x is None)"""

_WHERE_FAILED_NOTE = (
    "(in `tree_at`) `where` is called on a stand-in copy of `pytree` whose "
    "leaves are placeholders: it can select nodes, not compute with them or "
    "look inside a leaf." + _WHERE_HELP
)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


class _LeafWrapper:
    """Stands in for the leaf at `path` while `where` runs."""

    __slots__ = ("path",)

    def __init__(self, path: _Path):
        self.path = path

    def __repr__(self) -> str:
        return f"<tree_at placeholder for the leaf at {self.path}>"


class _DistinctTuple(tuple):
    """Stands in for an empty tuple: unlike `()`, each one is its own object."""

    __slots__ = ()


_STAND_INS = (_LeafWrapper, _DistinctTuple)


def _describe(obj: Any) -> str:
    text = repr(obj)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"an object of type {type(obj).__name__} ({text})"


class _StandIn:
    """The stand-in tree and where each of its nodes sits."""

    def __init__(self, pytree: Any, is_leaf: Callable[[Any], bool] | None):
        self.is_leaf = is_leaf
        # id -> (object, path) of every node of the stand-in tree; holding the
        # objects keeps them alive, so that no two share an id.
        self.found: dict[int, tuple[Any, _Path]] = {}
        self.none_paths: list[_Path] = []
        self.tree = self._mark(pytree, ())

    def _mark(self, node: Any, path: _Path) -> Any:
        if self.is_leaf is not None and self.is_leaf(node):
            marked: Any = _LeafWrapper(path)
        elif node is None:
            self.none_paths.append(path)
            return None
        else:
            children, treedef = tree_flatten_one_level(node)
            if treedef.num_nodes == 1 and treedef.num_leaves == 1:
                marked = _LeafWrapper(path)
            elif not children:
                marked = _DistinctTuple() if type(node) is tuple else node
                if marked is node:
                    marked = treedef.unflatten([])
                if id(marked) in self.found:
                    # A node type that rebuilds into one shared object.
                    marked = _LeafWrapper(path)
            else:
                marked = treedef.unflatten(
                    [self._mark(child, (*path, i)) for i, child in enumerate(children)]
                )
        self.found[id(marked)] = (marked, path)
        return marked

    def position(self, obj: Any) -> _Path | None:
        """The path of `obj` if it is a node of the stand-in tree, else `None`."""
        if obj is None:
            if len(self.none_paths) > 1:
                raise ValueError(
                    _AMBIGUOUS_NONE_ERROR.format(count=len(self.none_paths))
                )
            return self.none_paths[0] if self.none_paths else None
        entry = self.found.get(id(obj))
        if entry is None or entry[0] is not obj:
            return None
        return entry[1]


def _check_only_stand_in_leaves(selected: Any) -> None:
    for leaf in jax.tree_util.tree_leaves(
        selected, is_leaf=lambda x: isinstance(x, _STAND_INS)
    ):
        if not isinstance(leaf, _STAND_INS):
            raise TypeError(_NOT_A_LEAF_ERROR.format(leaf=leaf) + _WHERE_HELP)


def _selected_paths(
    selected: Any, stand_in: _StandIn, replace: Any, has_replace: bool
) -> tuple[list[_Path], bool]:
    """The paths `where` selected, and whether it returned a single node."""
    single = stand_in.position(selected)
    if single is not None:
        return [single], True
    _check_only_stand_in_leaves(selected)
    try:
        n = len(selected)
    except TypeError:
        raise TypeError(
            _NOT_A_SEQUENCE_ERROR.format(
                type=type(selected).__name__, got=_describe(selected)
            )
            + _WHERE_HELP
        ) from None
    if has_replace:
        try:
            m = len(replace)
        except TypeError:
            raise TypeError(
                _REPLACE_NOT_A_SEQUENCE_ERROR.format(
                    type=type(replace).__name__, n=n, got=_describe(replace)
                )
            ) from None
        if n != m:
            raise ValueError(_WRONG_LENGTH_ERROR.format(n=n, m=m))
    paths = []
    for item in selected:
        path = stand_in.position(item)
        if path is None:
            detail = (
                f"It returned a sequence holding {_describe(item)}, which is not "
                "a node of `pytree` (only the outer tuple or list may be new)."
            )
            raise ValueError(_NOT_A_NODE_ERROR.format(detail=detail) + _WHERE_HELP)
        paths.append(path)
    unique = sorted(set(paths))
    for outer in unique:
        for inner in unique:
            if inner != outer and inner[: len(outer)] == outer:
                detail = (
                    "It selected a node and also a node inside it: each selected "
                    "node is replaced whole, so select the outer node only and "
                    "build its replacement yourself."
                )
                raise ValueError(_NOT_A_NODE_ERROR.format(detail=detail))
    return paths, False


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
        where: a function from `pytree` to one of its nodes, or to a sequence
            (e.g. a tuple or list) of its nodes, e.g.
            `lambda m: m.layers[0].weight` or `lambda m: (m.weight, m.bias)`.
            A node may be a leaf or a whole subtree. Nodes are told apart by
            position, not value, so two equal leaves in different places are
            distinct. A `None` can be selected when it is the only one in
            `pytree`; otherwise pass `is_leaf=lambda x: x is None`.
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
            if `where` returns a sequence holding something that is not a node
            of `pytree`, or a node and something inside it; if it selects a
            `None` that is not the only one; if `replace` has the wrong number
            of values.
        TypeError: if what `where` returns holds values that are not leaves of
            `pytree` (computed or static values), or is neither a node nor a
            sequence; if `replace` is not a sequence when it must be.

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
        raise ValueError(_NEITHER_OR_BOTH_ERROR.format(which=which))

    stand_in = _StandIn(pytree, is_leaf)
    try:
        selected = where(stand_in.tree)
    except (AttributeError, TypeError, IndexError, KeyError) as e:
        if hasattr(e, "add_note"):  # Python 3.11+
            e.add_note(_WHERE_FAILED_NOTE)
        raise
    paths, single = _selected_paths(selected, stand_in, replace, has_replace)

    # As in Equinox, a node selected twice is replaced once (by the last of
    # its values; `replace_fn` is called on it once).
    new_values: dict[_Path, Any]
    if has_fn:
        new_values = {path: None for path in paths}
        for path in new_values:
            new_values[path] = replace_fn(_node_at(pytree, path))
    elif single:
        new_values = {paths[0]: replace}
    else:
        new_values = dict(zip(paths, replace, strict=True))
    on_the_way = {path[:n] for path in new_values for n in range(len(path))}
    return _rebuild(pytree, (), new_values, on_the_way)
