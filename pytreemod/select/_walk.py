"""Every node of a pytree, top down, with its key path: what a selection reads.

A *node* is any subtree: the root, each Module, list, dict, ..., and each leaf.
`walk` yields them parent first, so that a selection can pass down to a
subtree what was decided at its root ("selecting a submodule selects all its
leaves").
"""

from collections.abc import Iterator
from typing import Any, NamedTuple

import jax.tree_util as jtu

from .._module._tree_flatten_one_level import flatten_one_level_with_path

__all__ = ["Node", "key_name", "walk"]


class Node(NamedTuple):
    """One subtree of a pytree: its key path (JAX's keys), its value, its
    depth, and whether JAX treats it as a leaf."""

    path: tuple[Any, ...]
    value: Any
    is_leaf: bool
    parent: int  # index in walk order of the parent node; -1 for the root

    @property
    def path_str(self) -> str:
        return jtu.keystr(self.path)


def key_name(key: Any) -> Any:
    """The name a key path entry gives its child: a field or attribute name,
    a dict key, or a sequence index."""
    for attribute in ("name", "key", "idx"):
        if hasattr(key, attribute):
            return getattr(key, attribute)
    return key


def walk(tree: Any) -> Iterator[Node]:
    """Every node of `tree`, parent before children, in flattening order (so
    the leaves come in the order of `jax.tree_util.tree_leaves`)."""
    stack: list[tuple[tuple[Any, ...], Any, int]] = [((), tree, -1)]
    index = 0
    while stack:
        path, value, parent = stack.pop()
        children, treedef = flatten_one_level_with_path(value)
        leaf = treedef.num_nodes == 1 and treedef.num_leaves == 1
        yield Node(path, value, leaf, parent)
        if not leaf:
            for (key,), child in reversed(children):
                stack.append(((*path, key), child, index))
        index += 1
