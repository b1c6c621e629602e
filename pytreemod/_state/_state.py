"""`State`: the values of a model's `StateIndex`es, kept outside the model.

A `State` is a pytree node whose children are the values, one per key, and
whose auxiliary data is a `_Layout` (the keys, in model order, with a
key -> position dict and a precomputed hash). The layout object travels
through the treedef unchanged, so a `filter_jit` call compares it by identity
and never rebuilds it: flatten and unflatten are two attribute reads/writes.

Invalidation is a flag: `set` and `update` put `None` in place of the old
State's values, and every entry point (including flatten, hence every JAX
transform) checks it.
"""

from collections.abc import Iterable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jax import lax

from .._module._pformat import tree_pformat
from ._index import StateIndex, is_init_deleted, is_state_index

_Value = TypeVar("_Value")

STALE_STATE_ERROR = """\
Attempted to use old state. This State was already used: `state.set(...)`
(or `state.update(...)`) returned a new State and invalidated this one.
Probably you wrote
    x, state2 = layer(x, state1)
    x, state3 = layer(x, state1)   # reuses state1
Pass state2 on instead. To keep an old State on purpose, copy it first
with `jax.tree_util.tree_map(lambda x: x, state)`."""

_MISSING_INDEX_ERROR = """\
This State holds no value for the StateIndex with key {key!r}.
The State holds {held}.
Probably the index was not in the model given to `make_with_state`: a layer
swapped in later (e.g. with `tree_at`), or a model paired with the State of
another model. Make the model and its State together:
    model, state = pytreemod.nn.make_with_state(Model)(...)
or add the new layer's initial value to a fresh State with
`pytreemod.nn.State(model)` before calling `delete_init_state`."""

_DELETED_INIT_ERROR = """\
Do not call `eqx.nn.State(model)` directly. `State(model)` found a StateIndex
(key {key!r}) whose initial value was already moved out by `make_with_state` /
`delete_init_state`. A State can be built only from a model that still holds
its initial values. Keep the State
that `make_with_state` returned, or build the model again:
    model, state = pytreemod.nn.make_with_state(Model)(...)"""

_MISMATCH_ERROR = """\
Old and new values have different structures/shapes/dtypes. A State's values
keep their structure, shapes, dtypes and weak types, so that a jitted step
never retraces; the new value for this key differs from the held one.
  key:  {key!r}
  held: {old}
  new:  {new}
Cast or reshape the new value to match (e.g. `value.astype(old.dtype)`).{weak}"""

_WEAK_HINT = """
The held value is weakly typed (`weak_`: it was made from a Python scalar, as
`jnp.array(0)` is) and the new one is not. Either make the initial value
strongly typed, e.g. `StateIndex(jnp.array(0, dtype=jnp.int32))`, or keep the
new value weakly typed (compute it from the old one and Python scalars)."""


class _Layout:
    """The keys of a `State`, in order, with a key -> position dict. It is the
    treedef's auxiliary data, so it has a cheap `==` and a cached hash."""

    __slots__ = ("keys", "positions", "_hash")

    def __init__(self, keys: tuple[Any, ...]) -> None:
        self.keys = keys
        self.positions = {key: i for i, key in enumerate(keys)}
        self._hash = hash(keys)

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, _Layout) and self.keys == other.keys)

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[Any, ...]:
        # String hashes differ between processes: recompute on unpickling.
        return (_Layout, (self.keys,))

    def __repr__(self) -> str:
        return f"State keys {list(self.keys)!r}"


def _is_weak(x: Any) -> bool:
    if isinstance(x, jax.ShapeDtypeStruct):
        return bool(x.weak_type)
    return bool(getattr(jax.typeof(x), "weak_type", False))


def _struct(value: Any) -> Any:
    def struct(x: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(
            jnp.shape(x), jnp.result_type(x), weak_type=_is_weak(x)
        )

    return jax.tree_util.tree_map(struct, value)


def _describe(value: Any) -> str:
    return tree_pformat(_struct(value), struct_as_array=True)


def _conform(key: Any, old: Any, new: Any) -> Any:
    """Check that `new` has the structure, shapes, dtypes and weak types of
    `old` (the held value), and return it with array leaves.

    The weak type is part of the value's type, as in Equinox: it is in the jit
    cache key, and it decides promotion (`x + value` with a weakly typed int
    `value` stays `x`'s dtype, even under strict promotion). One leniency: a
    weakly typed new leaf (a Python scalar, `value + 1` of a weak value) is
    accepted where the held leaf is strongly typed of the same dtype, and
    stored strongly typed, which changes neither its value nor the cache key.
    The other way round (strong into weak) would change how later arithmetic
    promotes, so it is an error."""
    old_leaves, old_def = jax.tree_util.tree_flatten(old)
    new_leaves, new_def = jax.tree_util.tree_flatten(new)
    weak_mismatch = False
    if old_def == new_def:
        out = []
        for o, n in zip(old_leaves, new_leaves, strict=True):
            n = jnp.asarray(n)
            if n.shape != jnp.shape(o) or n.dtype != jnp.result_type(o):
                break
            if _is_weak(n) != _is_weak(o):
                if _is_weak(o):
                    weak_mismatch = True
                    break
                n = lax.convert_element_type(n, n.dtype)
            out.append(n)
        else:
            return new_def.unflatten(out)
    raise ValueError(
        _MISMATCH_ERROR.format(
            key=key,
            old=_describe(old),
            new=_describe(new),
            weak=_WEAK_HINT if weak_mismatch else "",
        )
    )


def _held(layout: _Layout) -> str:
    if not layout.keys:
        return "no keys"
    return "the keys " + ", ".join(repr(key) for key in layout.keys)


class State:
    """The stateful values of a model (BatchNorm running statistics, counters,
    caches), each addressed by a `StateIndex`, kept outside the immutable
    model and threaded through a step: `y, state = model(x, state)`.

    Usually made by `pytreemod.nn.make_with_state`. A `State` is a pytree (its
    leaves are the values' arrays), so it passes through `filter_jit`,
    `filter_vmap`, `filter_grad` (as aux) and `jax.lax.scan`. `set` and
    `update` return a new State and invalidate the old one: using the old
    one again is an error, which catches the bug of feeding a step a stale
    State.

    Args:
        model: any pytree. The initial value of every `StateIndex` in it is
            collected (an index met at several places is one entry).

    Raises:
        ValueError: if the model's indices no longer hold their initial
            values (it came from `make_with_state`).

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> index = pytreemod.nn.StateIndex(jnp.zeros(2))
        >>> state = pytreemod.nn.State([index])
        >>> state.get(index)
        Array([0., 0.], dtype=float32)
        >>> new_state = state.set(index, jnp.ones(2))
        >>> new_state.get(index)
        Array([1., 1.], dtype=float32)
    """

    __slots__ = ("_layout", "_values")

    _layout: _Layout
    # `None` once this State has been used by `set` or `update`.
    _values: tuple[Any, ...] | None

    def __init__(self, model: Any) -> None:
        keys: list[Any] = []
        values: list[Any] = []
        seen: set[Any] = set()
        for leaf in jax.tree_util.tree_leaves(model, is_leaf=is_state_index):
            if not isinstance(leaf, StateIndex) or leaf.marker in seen:
                continue
            if is_init_deleted(leaf.init):
                raise ValueError(_DELETED_INIT_ERROR.format(key=leaf.marker))
            seen.add(leaf.marker)
            keys.append(leaf.marker)
            values.append(jax.tree_util.tree_map(jnp.asarray, leaf.init))
        self._layout = _Layout(tuple(keys))
        self._values = tuple(values)

    @classmethod
    def _make(cls, layout: _Layout, values: Iterable[Any]) -> "State":
        self = object.__new__(cls)
        self._layout = layout
        self._values = tuple(values)
        return self

    def _live_values(self) -> tuple[Any, ...]:
        values = self._values
        if values is None:
            raise ValueError(STALE_STATE_ERROR)
        return values

    def _position(self, index: Any) -> int:
        if not isinstance(index, StateIndex):
            raise ValueError(
                "Can only use `eqx.nn.StateIndex`s as state keys. A State is "
                "indexed by `pytreemod.nn.StateIndex` objects; got "
                f"{type(index).__name__}."
            )
        layout = self._layout
        position = layout.positions.get(index.marker)
        if position is None:
            raise ValueError(
                _MISSING_INDEX_ERROR.format(key=index.marker, held=_held(layout))
            )
        return position

    def get(self, index: StateIndex[_Value]) -> _Value:
        """The current value for `index`.

        Args:
            index: a `StateIndex` of the model this State was made with.

        Returns:
            The value: a pytree of arrays with the structure of the index's
            initial value.

        Raises:
            ValueError: if this State was already used by `set`/`update`, or
                holds no value for `index`.

        Example:
            >>> import jax.numpy as jnp
            >>> import pytreemod
            >>> index = pytreemod.nn.StateIndex((jnp.zeros(1), jnp.ones(1)))
            >>> pytreemod.nn.State(index).get(index)
            (Array([0.], dtype=float32), Array([1.], dtype=float32))
        """
        values = self._live_values()
        return values[self._position(index)]

    def set(self, index: StateIndex[_Value], value: _Value) -> "State":
        """A new State with `value` for `index`; this State becomes unusable.

        Args:
            index: a `StateIndex` this State holds.
            value: the new value, with the same structure, shapes and dtypes
                as the current one (Python scalars are accepted for 0-d
                arrays of their dtype).

        Returns:
            The new `State`. Keep it, and drop this one: any further use of
            this State raises an error.

        Raises:
            ValueError: if this State was already used, holds no value for
                `index`, or `value` does not match the current value (the
                message shows both).

        Example:
            >>> import jax.numpy as jnp
            >>> import pytreemod
            >>> index = pytreemod.nn.StateIndex(jnp.zeros(()))
            >>> state = pytreemod.nn.State(index)
            >>> state = state.set(index, jnp.array(2.0))
            >>> state.get(index)
            Array(2., dtype=float32)
        """
        values = self._live_values()
        position = self._position(index)
        new = _conform(index.marker, values[position], value)
        new_values = values[:position] + (new,) + values[position + 1 :]
        self._values = None
        return State._make(self._layout, new_values)

    def substate(self, pytree: Any) -> "State":
        """A smaller State holding only the values of the indices in `pytree`
        (for calling one part of a model). This State stays usable.

        Args:
            pytree: any pytree, usually a submodel; its `StateIndex`es are
                collected.

        Returns:
            A new `State` with those entries, in the order they appear.

        Raises:
            ValueError: if an index in `pytree` is not held by this State.

        Example:
            >>> import jax.numpy as jnp
            >>> import pytreemod
            >>> a = pytreemod.nn.StateIndex(jnp.zeros(1))
            >>> b = pytreemod.nn.StateIndex(jnp.ones(2))
            >>> state = pytreemod.nn.State([a, b])
            >>> state.substate(b).get(b)
            Array([1., 1.], dtype=float32)
        """
        values = self._live_values()
        keys: list[Any] = []
        sub_values: list[Any] = []
        for leaf in jax.tree_util.tree_leaves(pytree, is_leaf=is_state_index):
            if isinstance(leaf, StateIndex) and leaf.marker not in keys:
                position = self._position(leaf)
                keys.append(leaf.marker)
                sub_values.append(values[position])
        return State._make(_Layout(tuple(keys)), sub_values)

    def update(self, substate: "State") -> "State":
        """A new State with the values of `substate` (typically from
        `substate(...)`, after a step) written over this one's; this State
        becomes unusable.

        Args:
            substate: a `State` whose keys this State all holds.

        Returns:
            The new `State`.

        Raises:
            ValueError: if `substate` holds keys this State does not, or a
                value that does not match the one held.

        Example:
            >>> import jax.numpy as jnp
            >>> import pytreemod
            >>> a = pytreemod.nn.StateIndex(jnp.zeros(1))
            >>> b = pytreemod.nn.StateIndex(jnp.zeros(1))
            >>> state = pytreemod.nn.State([a, b])
            >>> sub = state.substate(b).set(b, jnp.ones(1))
            >>> state = state.update(sub)
            >>> state.get(b)
            Array([1.], dtype=float32)
        """
        values = self._live_values()
        if not isinstance(substate, State):
            raise ValueError(
                "Can only use `eqx.nn.State`s in `update`. `state.update(substate)` "
                "takes a `State` (e.g. from `state.substate(submodel)`); got "
                f"{type(substate).__name__}."
            )
        sub_values = substate._live_values()
        positions = self._layout.positions
        unknown = [key for key in substate._layout.keys if key not in positions]
        if unknown:
            raise ValueError(
                "Cannot call `state1.update(state2)` unless `state2` is a substate "
                "of `state1`. `state.update(substate)` got a substate holding keys "
                "this State "
                f"does not: {', '.join(repr(k) for k in unknown)}. This State "
                f"holds {_held(self._layout)}. Update a State only with a "
                "substate taken from it (`state.substate(part_of_model)`)."
            )
        new_values = list(values)
        for key, value in zip(substate._layout.keys, sub_values, strict=True):
            position = positions[key]
            new_values[position] = _conform(key, values[position], value)
        self._values = None
        return State._make(self._layout, new_values)

    def __repr__(self) -> str:
        values = self._values
        if values is None:
            return "State(<used: set/update returned a newer State>)"
        if not values:
            return "State()"
        lines = ["State("]
        for key, value in zip(self._layout.keys, values, strict=True):
            text = tree_pformat(value, width=76 - len(repr(key)))
            lines.append(f"  {key!r}: " + text.replace("\n", "\n  ") + ",")
        lines.append(")")
        return "\n".join(lines)


def _flatten(state: State) -> tuple[tuple[Any, ...], _Layout]:
    values = state._values
    if values is None:
        raise ValueError(STALE_STATE_ERROR)
    return values, state._layout


def _flatten_with_keys(state: State) -> tuple[tuple[Any, ...], _Layout]:
    values, layout = _flatten(state)
    keys = (jax.tree_util.DictKey(key) for key in layout.keys)
    return tuple(zip(keys, values, strict=True)), layout


jax.tree_util.register_pytree_with_keys(
    State, _flatten_with_keys, State._make, _flatten
)
