"""`StateIndex`: the key under which one stateful value lives in a `State`.

A `StateIndex` is a Module with two fields: `marker` (static, the key) and
`init` (the initial value, a pytree of arrays). A fresh index gets a unique
`_Unkeyed` marker; `make_with_state` swaps it for a string derived from where
the index sits in the model, and `delete_init_state` swaps `init` for the
`INIT_DELETED` sentinel once the value has moved into the `State`.
"""

import functools
import itertools
import types
from typing import Any, Generic, NamedTuple, TypeVar

from .._module._field import field
from .._module._module import Module

_Value = TypeVar("_Value")

_FUNCTION_TYPES = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    functools.partial,
)

_FUNCTION_INIT_ERROR = """\
`StateIndex(init)` takes the initial value itself, not a function that makes
it; got {init!r}. Write
    self.index = StateIndex(jnp.zeros(3))
instead of
    self.index = StateIndex(lambda: jnp.zeros(3))
"""

_counter = itertools.count()


class _Unkeyed:
    """The marker of an index not yet keyed by `make_with_state`: unique, equal
    only to itself, and readable in error messages."""

    __slots__ = ("number",)

    def __init__(self) -> None:
        self.number = next(_counter)

    def __repr__(self) -> str:
        return f"<StateIndex #{self.number}, not made by make_with_state>"


class _InitDeleted(NamedTuple):
    """Stands in for the initial value of an index after `delete_init_state`.
    An empty namedtuple: it has no leaves, all instances flatten to the same
    treedef, and JAX flattens it in C++ without calling back into Python
    (it is in every flatten of a stateful model)."""


INIT_DELETED = _InitDeleted()


def is_init_deleted(init: Any) -> bool:
    """Whether an index's `init` was removed by `delete_init_state`. A type
    check, not identity: unflattening rebuilds the sentinel."""
    return isinstance(init, _InitDeleted)


class StateIndex(Module, Generic[_Value]):
    """The key of one stateful value (a running statistic, a counter, a cache)
    kept in a `pytreemod.nn.State` rather than in the immutable model.

    Put a `StateIndex` in a field of a layer; `make_with_state` moves its
    initial value into the `State` and keys it by the field's place in the
    model, and `state.get(index)` / `state.set(index, value)` read and write
    it. `StateIndex[T]` is generic in the value type, so `state.get(index)` is
    typed `T`.

    Args:
        init: the initial value: an array, or any pytree of arrays. Its
            structure, shapes and dtypes are fixed: `state.set` checks new
            values against them.

    Raises:
        ValueError: if `init` is a function (pass the value it would return).

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> class Counter(pytreemod.Module):
        ...     index: pytreemod.nn.StateIndex
        ...     def __init__(self):
        ...         self.index = pytreemod.nn.StateIndex(jnp.array(0))
        ...     def __call__(self, x, state):
        ...         count = state.get(self.index)
        ...         return x + count, state.set(self.index, count + 1)
        >>> model, state = pytreemod.nn.make_with_state(Counter)()
        >>> model.index.marker
        'Counter.index'
        >>> y, state = model(jnp.array(10.0, dtype=jnp.float32), state)
        >>> y, state.get(model.index)
        (Array(10., dtype=float32), Array(1, dtype=int32, weak_type=True))
    """

    # A unique `_Unkeyed` object until `make_with_state` replaces it with a
    # string such as "Model.layers[1].index"; static, so it is in the treedef.
    marker: Any = field(static=True)
    init: Any

    def __init__(self, init: _Value) -> None:
        if isinstance(init, _FUNCTION_TYPES):
            raise ValueError(_FUNCTION_INIT_ERROR.format(init=init))
        self.marker = _Unkeyed()
        self.init = init


def is_state_index(x: Any) -> bool:
    """Whether `x` is a `StateIndex` (for `is_leaf=` when walking a model)."""
    return isinstance(x, StateIndex)


def replace_index(index: StateIndex, *, marker: Any, init: Any) -> StateIndex:
    """A copy of `index` with a new marker and init. Builds the copy the way
    `tree_unflatten` does (no `__init__`), so subclasses keep their type."""
    new = object.__new__(type(index))
    new.__dict__.update(index.__dict__)
    new.__dict__["marker"] = marker
    new.__dict__["init"] = init
    return new
