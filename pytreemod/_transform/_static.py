"""The static/dynamic split of the leaves of a call: which are traced.

A call's leaves are split by type: arrays (`pytreemod.is_array`) are traced,
everything else is static. `kinds_of` gives each leaf's kind: `ARRAY` for a
traced leaf, the leaf's type for a static one (so that `1`, `1.0` and `True`,
equal and equally hashed, stay apart). Types are classified once and
remembered, because `isinstance` against `jax.Array` is slow (its metaclass
looks at the instance). `getter` and `merge_leaves` take the two kinds apart
and put them back together.
"""

from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import jax
import numpy as np

__all__ = ["ARRAY", "ARRAY_TYPES", "getter", "kinds_of", "merge_leaves"]

# The same types as `pytreemod.is_array`.
ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)


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
    if issubclass(leaf_type, ARRAY_TYPES):
        kind = ARRAY
    elif isinstance(leaf, jax.core.Tracer):
        return (ARRAY if isinstance(leaf, ARRAY_TYPES) else leaf_type), False
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
