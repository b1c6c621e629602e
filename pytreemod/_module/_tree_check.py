"""`tree_check`: refuse pytrees that contain themselves or share a node."""

from typing import Any

import jax

from ._tree_flatten_one_level import flatten_one_level_with_path

_CYCLE_ERROR = (
    (
        "PyTree node of type `{kind}` is self-referential; that is to say it appears "
        "somewhere within its own PyTree structure.\n"
    )
    + """\
The {kind} at
    {inner}
is the same object as its ancestor at
    {outer}
A pytree must be a tree, or flattening it never ends. Probably a container was
appended to something inside itself, or a Module was given a field that refers
back to it; store the value itself instead of the structure holding it."""
)

_SHARED_NODE_ERROR = (
    ("PyTree node of type `{kind}` appears in the PyTree multiple times.\n")
    + """\
The same object is at
    {first}
and at
    {second}
After flattening and unflattening (for example when it crosses a `filter_jit`
boundary, or in an optimiser update) the two places become two independent
copies, so a change to one would no longer reach the other. Either
1. give each place its own {kind}, if they are meant to be independent; or
2. keep it in one field and use that field twice in the code that calls it
   (e.g. `self.block(self.block(x))`), to share it explicitly."""
)


def _where(path: tuple[Any, ...]) -> str:
    return "pytree" + jax.tree_util.keystr(path)


def tree_check(pytree: Any) -> None:
    """Check that `pytree` is really a tree: no cycles, no shared nodes.

    Flattening follows references, so a structure that contains itself can
    never be flattened, and a node (a Module, list, tuple, dict, ... that has
    children) reached along two paths becomes two separate copies once the
    pytree is flattened and rebuilt. Both are refused, as in Equinox. Leaves,
    arrays included, and nodes without children (`None`, `()`, a Module
    without dynamic fields) may appear any number of times.

    Args:
        pytree: the pytree to check.

    Returns:
        `None`, if the pytree is fine.

    Raises:
        ValueError: on a cycle, or on a node met twice; the message gives the
            key paths of both places.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.ones(2)
        >>> tree_check({"a": x, "b": [x, None]}) is None
        True
        >>> loop = [1]
        >>> loop.append(loop)
        >>> tree_check(loop)
        Traceback (most recent call last):
        ...
        ValueError: PyTree node of type `list` is immediately self-referential; ...
    """
    ancestors: dict[int, tuple[Any, ...]] = {}
    seen: dict[int, tuple[Any, ...]] = {}
    keep_alive: list[Any] = []  # so that no two nodes visited share an id

    def visit(node: Any, path: tuple[Any, ...]) -> None:
        children, treedef = flatten_one_level_with_path(node)
        if treedef.num_nodes == 1:  # a leaf, or a node without children
            return
        node_id = id(node)
        kind = type(node).__name__
        if node_id in ancestors:
            raise ValueError(
                _CYCLE_ERROR.format(
                    inner=_where(path), outer=_where(ancestors[node_id]), kind=kind
                )
            )
        if node_id in seen:
            raise ValueError(
                _SHARED_NODE_ERROR.format(
                    kind=kind, first=_where(seen[node_id]), second=_where(path)
                )
            )
        seen[node_id] = path
        keep_alive.append(node)
        ancestors[node_id] = path
        for child_path, child in children:
            visit(child, path + child_path)
        del ancestors[node_id]

    visit(pytree, ())
