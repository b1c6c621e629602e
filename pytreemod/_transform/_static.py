"""The static/dynamic split of `filter_jit`'s arguments, and its cache keys.

A call's leaves are split by type: arrays (`pytreemod.is_array`) are traced,
everything else is static. `kinds_of` gives each leaf's kind: `ARRAY` for a
traced leaf, the leaf's type for a static one (so that `1`, `1.0` and `True`,
equal and equally hashed, stay apart). Types are classified once and
remembered, because `isinstance` against `jax.Array` is slow (its metaclass
looks at the instance).

`filter_jit` looks a call up in two steps. First by `(treedef, leaf types)`,
which finds a `Layout`: the positions of the static and array leaves, as
C-level `operator.itemgetter`s. Then by the static leaves, which finds the
compiled entry. A treedef hashes without its node data (Module static
fields) and compares that data with `==`, so unhashable static fields work
as they are; static leaves that cannot be hashed (a config object defining
`__eq__` only) are looked up through `EqKey`, hashed by type where needed
and compared by `==`.
"""

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import jax
import numpy as np

from .._module._tree_flatten_one_level import flatten_one_level_with_path

__all__ = [
    "ARRAY",
    "EqKey",
    "find_bad_static",
    "getter",
    "kinds_of",
    "merge_leaves",
]

# The same types as `pytreemod.is_array`.
_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)


class _ArrayKind:
    """The kind of a traced leaf, in place of its type in a `kinds` tuple."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ARRAY"

    def __reduce__(self) -> str:
        return "ARRAY"


ARRAY = _ArrayKind()

# Leaf type -> kind, for types whose every instance is classified alike.
# Tracer types are never stored: whether a tracer counts as a `jax.Array`
# depends on its abstract value, so those are checked one by one. The table
# holds one entry per type seen and is emptied if it ever gets large.
_KIND_OF_TYPE: dict[type, Any] = {}
_MAX_TYPES = 4096


def _kind(leaf: Any) -> tuple[Any, bool]:
    """`(kind, whether every leaf of this type has that kind)`."""
    leaf_type = type(leaf)
    kind = _KIND_OF_TYPE.get(leaf_type)
    if kind is not None:
        return kind, True
    if issubclass(leaf_type, _ARRAY_TYPES):
        kind = ARRAY
    elif isinstance(leaf, jax.core.Tracer):
        return (ARRAY if isinstance(leaf, _ARRAY_TYPES) else leaf_type), False
    else:
        kind = leaf_type
    if len(_KIND_OF_TYPE) >= _MAX_TYPES:
        _KIND_OF_TYPE.clear()
    _KIND_OF_TYPE[leaf_type] = kind
    return kind, True


def kinds_of(leaves: Sequence[Any]) -> tuple[tuple[Any, ...], bool]:
    """The kind of each leaf (`ARRAY` if it is traced, else its type), and
    whether the kinds follow from the leaf types alone (no tracers)."""
    pairs = [_kind(leaf) for leaf in leaves]
    return tuple(kind for kind, _ in pairs), all(stable for _, stable in pairs)


def getter(positions: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A function picking `positions` out of a list of leaves, as a tuple:
    `operator.itemgetter` (C) where it returns a tuple, i.e. for 2 or more."""
    if len(positions) >= 2:
        return itemgetter(*positions)
    if len(positions) == 1:
        (position,) = positions
        return lambda leaves: (leaves[position],)
    return lambda leaves: ()


def merge_leaves(
    kinds: tuple[Any, ...], static: tuple[Any, ...], dynamic: tuple[Any, ...]
) -> list[Any]:
    """Interleave static and dynamic leaves back into one list, by `kinds`."""
    dynamic_iter: Iterator[Any] = iter(dynamic)
    static_iter: Iterator[Any] = iter(static)
    return [
        next(dynamic_iter) if kind is ARRAY else next(static_iter) for kind in kinds
    ]


def _hash_or_type(value: Any) -> Any:
    try:
        return hash(value)
    except TypeError:
        return id(type(value))


class EqKey:
    """A cache key for static leaves that cannot all be hashed: hashed by
    what can be hashed (the type, for the rest), compared by `==`."""

    __slots__ = ("static", "_hash")

    def __init__(self, static: tuple[Any, ...]):
        self.static = static
        self._hash = hash(tuple(map(_hash_or_type, static)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EqKey):
            return NotImplemented
        for mine, theirs in zip(self.static, other.static, strict=True):
            if mine is not theirs and not _plain_equal(mine, theirs):
                return False
        return True


def _plain_equal(a: Any, b: Any) -> bool:
    result = a == b
    if type(result) is bool or type(result) is np.bool_:
        return bool(result)
    raise TypeError(
        f"comparing static values with `==` gave a {type(result).__name__}, not a bool"
    )


# --- finding static values that cannot be compared --------------------------

_MAX_DEPTH = 8


def _why_bad(value: Any, depth: int = 0) -> str | None:
    """Why `value` cannot serve as a static value (compared by `==` to a plain
    bool), or `None` if it can. Looks inside containers and dataclasses."""
    if isinstance(value, _ARRAY_TYPES) and not isinstance(value, np.generic):
        return f"it is an array ({type(value).__name__})"
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, (tuple, list, set, frozenset)):
        parts: Any = value
    elif isinstance(value, dict):
        parts = value.values()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts = [getattr(value, f.name, None) for f in dataclasses.fields(value)]
    else:
        parts = None
    if parts is not None:
        for part in parts:
            reason = _why_bad(part, depth + 1)
            if reason is not None:
                return reason
        return None
    try:
        result = value == value
    except Exception as error:  # any failure makes it unusable as a static value
        return f"`==` on it raised {type(error).__name__}: {error}"
    if type(result) is not bool and type(result) is not np.bool_:
        return f"`==` on it gives a {type(result).__name__}, not a bool"
    return None


def _static_fields(node: Any) -> list[tuple[str, Any]]:
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [
            (f.name, getattr(node, f.name, None))
            for f in dataclasses.fields(node)
            if f.metadata.get("static", False)
        ]
    return []


def find_bad_static(tree: Any, path: str = "") -> tuple[str, str] | None:
    """Find a static value in `tree` (a static field of a node, or a non-array
    leaf) that `==` cannot compare. Returns `(key path, reason)` or `None`.

    Only run when a call misses the cache (or a comparison failed), never on
    the fast path.
    """
    children, treedef = flatten_one_level_with_path(tree)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # a leaf
        if isinstance(tree, _ARRAY_TYPES):
            return None
        reason = _why_bad(tree)
        return None if reason is None else (path, reason)
    for name, value in _static_fields(tree):
        reason = _why_bad(value)
        if reason is not None:
            return f"{path}.{name}", reason
    node_data = treedef.node_data()
    if not _static_fields(tree) and node_data is not None:
        reason = _why_bad(node_data[1])
        if reason is not None:
            return f"{path} (pytree metadata of {type(tree).__name__})", reason
    for key_path, child in children:
        found = find_bad_static(child, path + jax.tree_util.keystr(key_path))
        if found is not None:
            return found
    return None
