"""`make_with_state` and `delete_init_state`: split a freshly built model into
the model (indices keep only their keys) and its `State` (the values).

Keys are strings derived from where each index sits in the model
(`"Model.layers[1].index"`), not from object identity, so two models built
separately with the same architecture have equal treedefs and interchangeable
States. An index reached at several places (a shared layer) is keyed once, by
the first place, so it stays one entry.
"""

from collections.abc import Callable
from typing import Any, TypeVar

import jax
from typing_extensions import ParamSpec

from ._index import (
    INIT_DELETED,
    StateIndex,
    is_init_deleted,
    is_state_index,
    replace_index,
)
from ._state import State

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _key_indices(model: Any) -> Any:
    """`model` with every index's marker replaced by its key-path string. The
    same index (same marker) met again reuses the first key."""
    prefix = type(model).__name__
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(
        model, is_leaf=is_state_index
    )
    keyed: dict[Any, StateIndex] = {}
    leaves = []
    for path, leaf in path_leaves:
        if isinstance(leaf, StateIndex):
            new = keyed.get(leaf.marker)
            if new is None:
                key = prefix + jax.tree_util.keystr(path)
                new = keyed[leaf.marker] = replace_index(
                    leaf, marker=key, init=leaf.init
                )
            leaf = new
        leaves.append(leaf)
    return treedef.unflatten(leaves)


def delete_init_state(model: _T) -> _T:
    """A copy of `model` whose `StateIndex`es no longer hold their initial
    values, to free that memory once the values are in a `State`.

    `make_with_state` already does this; call it yourself only if you build
    the State with `State(model)`.

    Args:
        model: any pytree.

    Returns:
        The same pytree with each index's initial value replaced by a marker
        (and no array leaves of its own).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> model = [pytreemod.nn.StateIndex(jnp.zeros(3))]
        >>> state = pytreemod.nn.State(model)
        >>> model = pytreemod.nn.delete_init_state(model)
        >>> jax.tree_util.tree_leaves(model)
        []
        >>> state.get(model[0])
        Array([0., 0., 0.], dtype=float32)
    """

    def delete(leaf: Any) -> Any:
        if isinstance(leaf, StateIndex) and not is_init_deleted(leaf.init):
            return replace_index(leaf, marker=leaf.marker, init=INIT_DELETED)
        return leaf

    return jax.tree_util.tree_map(delete, model, is_leaf=is_state_index)


def make_with_state(make_model: Callable[_P, _T]) -> Callable[_P, tuple[_T, State]]:
    """Wrap a model constructor so that it returns `(model, state)`: the model
    with its `StateIndex`es keyed and emptied, and the `State` holding their
    initial values.

    Each index is keyed by its place in the model (`"Model.norm.index"`), so
    two models built separately with the same architecture have the same
    treedef (a jitted step does not retrace for the second) and
    interchangeable States. An index reached at several places (a shared
    layer) is one entry.

    Args:
        make_model: a callable returning a pytree, usually a Module class.

    Returns:
        A function taking `make_model`'s arguments and returning
        `(model, state)`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> class Counter(pytreemod.Module):
        ...     index: pytreemod.nn.StateIndex
        ...     def __init__(self, start):
        ...         self.index = pytreemod.nn.StateIndex(jnp.array(start))
        >>> model, state = pytreemod.nn.make_with_state(Counter)(5)
        >>> state
        State(
          'Counter.index': weak_i32[],
        )
        >>> state.get(model.index)
        Array(5, dtype=int32, weak_type=True)
    """

    def make(*args: _P.args, **kwargs: _P.kwargs) -> tuple[_T, State]:
        model = _key_indices(make_model(*args, **kwargs))
        state = State(model)
        return delete_init_state(model), state

    return make
