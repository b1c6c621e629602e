"""`tree_flatten_one_level`: the immediate children of a pytree node."""

from collections.abc import Callable
from typing import Any

import jax


def _root_only() -> Callable[[Any], bool]:
    """An `is_leaf` for `jax.tree_util.tree_flatten` that lets the flattening
    open the root node and nothing below it.

    JAX calls `is_leaf` on the root first, then on each child before opening
    it, so "every call but the first" marks exactly the root's children as
    leaves. Comparing by identity instead (`x is not root`) would open a child
    that is the root itself, and loop forever on a cyclic structure.
    """
    calls = 0

    def is_leaf(_: Any) -> bool:
        nonlocal calls
        calls += 1
        return calls > 1

    return is_leaf


SELF_REFERENCE_ERROR = (
    "PyTree node of type `{kind}` is immediately self-referential; that is to say "
    "it appears within its own PyTree structure as an immediate subnode. (For "
    "example `x = []; x.append(x)`.) This is not allowed: flattening it would "
    "never end. Probably a container was appended to itself, or a field was given "
    "the object that holds it."
)


def _check_not_self_referential(
    pytree: Any, children: list[Any], treedef: jax.tree_util.PyTreeDef
) -> None:
    # A leaf is its own only "child": that is not a self-reference.
    if treedef.num_nodes > 1 and any(child is pytree for child in children):
        raise ValueError(SELF_REFERENCE_ERROR.format(kind=type(pytree).__name__))


def flatten_one_level_with_path(
    pytree: Any,
) -> tuple[list[tuple[Any, Any]], jax.tree_util.PyTreeDef]:
    """Like `tree_flatten_one_level`, with the key path of each child:
    `([((key,), child), ...], treedef)`; a leaf gives `[((), leaf)]`."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(pytree, _root_only())
    _check_not_self_referential(pytree, [child for _, child in pairs], treedef)
    return pairs, treedef


def tree_flatten_one_level(pytree: Any) -> tuple[list[Any], jax.tree_util.PyTreeDef]:
    """Flatten only the root node of `pytree`, not what is below it.

    Args:
        pytree: any pytree.

    Returns:
        `(children, treedef)`: the root's immediate children (subtrees, `None`
        included, are returned whole), and a treedef whose leaves stand for
        those children, so that `treedef.unflatten(children)` rebuilds
        `pytree`. For a leaf, `([pytree], leaf treedef)`; for a node without
        children, such as `None` or `()`, `([], treedef)`.

    Raises:
        ValueError: if `pytree` is one of its own children (`x.append(x)`).

    Example:
        >>> children, treedef = tree_flatten_one_level({"a": [1, 2], "b": None})
        >>> children
        [[1, 2], None]
        >>> treedef
        PyTreeDef({'a': *, 'b': *})
        >>> treedef.unflatten(children)
        {'a': [1, 2], 'b': None}
        >>> tree_flatten_one_level(3.0)
        ([3.0], PyTreeDef(*))
    """
    children, treedef = jax.tree_util.tree_flatten(pytree, _root_only())
    _check_not_self_referential(pytree, children, treedef)
    return children, treedef
