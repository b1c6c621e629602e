"""`Stacked`: N identical layers held as one Module and applied with a scan.

A deep network of identical blocks, unrolled in a Python loop, traces and
compiles each block again: compile time grows with depth. `Stacked` holds the
blocks as one block whose array leaves carry a leading axis of size N (built
by vmapping the constructor over N keys) and applies them with
`jax.lax.scan`, which traces the block once, so compile time stays that of
one block whatever N is.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import jax.random as jr

from .._module._field import field
from .._module._is_array import is_array
from .._state._index import is_state_index
from .._state._state import State
from .._transform._filters import combine, partition
from .._transform._recording import through_scan
from .._transform._vmap import filter_vmap
from ._stateful import StatefulLayer

_Layer = TypeVar("_Layer")

STACKED_ARGS = """\
`Stacked` is built either from a constructor, a count and a key, or from
existing layers:
    Stacked(lambda k: Block(..., key=k), 48, key=jax.random.key(0))
    Stacked(layers=[block0, block1, block2])
Got {got}."""

STACKED_LAYERS_DIFFER = """\
`Stacked(layers=...)` needs identical layers (the same structure, static
fields, shapes and dtypes) so that their arrays can be stacked.
Layer {i} differs from layer 0 {where}:
  layer 0: {first}
  layer {i}: {other}"""

STACKED_CARRY_CHANGED = """\
Stacked: each layer's output is the next layer's input, so a layer must
return an output of the structure, shapes and dtypes of its input.
  input:  {before}
  output: {after}
Stack only blocks that map a shape to itself (e.g. residual blocks), and
apply the layers that change the shape before or after the stack."""

STACKED_NEEDS_STATE = """\
These stacked layers hold state (a `StateIndex`), but the stack was called
without a `State`. Make the model with its state and pass it along:
    model, state = pytreemod.nn.make_with_state(Model)(...)
    y, state = model.stack(x, state)"""


class _NoState:
    def __repr__(self) -> str:
        return "<no state>"


_NO_STATE: Any = _NoState()


def _structure(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf)),
        tree,
    )


def _describe(leaf: Any) -> str:
    return repr(_structure(leaf)) if is_array(leaf) else repr(leaf)


def _difference(first: Any, other: Any) -> tuple[str, str, str] | None:
    """Where and how `other` differs from `first` in structure, static fields,
    shapes or dtypes, or `None` if they can be stacked."""
    first_leaves, first_def = jax.tree_util.tree_flatten_with_path(first)
    other_leaves, other_def = jax.tree_util.tree_flatten_with_path(other)
    first_paths = [jax.tree_util.keystr(path) for path, _ in first_leaves]
    other_paths = [jax.tree_util.keystr(path) for path, _ in other_leaves]
    if first_paths != other_paths:
        return "in its leaves", ", ".join(first_paths), ", ".join(other_paths)
    for path, (_, a), (_, b) in zip(
        first_paths, first_leaves, other_leaves, strict=True
    ):
        if is_array(a) and is_array(b):
            same = _structure(a) == _structure(b)
        else:
            same = is_array(a) == is_array(b) and (a is b or a == b)
        if not same:
            return f"at {path}", _describe(a), _describe(b)
    if first_def != other_def:
        return "in a static field", str(first_def), str(other_def)
    return None


def _stack(layers: Sequence[Any]) -> Any:
    """One layer whose array leaves stack those of `layers` on a new axis 0."""
    for i, layer in enumerate(layers[1:], start=1):
        difference = _difference(layers[0], layer)
        if difference is not None:
            where, first, other = difference
            raise ValueError(
                STACKED_LAYERS_DIFFER.format(i=i, where=where, first=first, other=other)
            )
    pieces = [partition(layer, is_array) for layer in layers]
    dynamics = [dynamic for dynamic, _ in pieces]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *dynamics)
    return combine(stacked, pieces[0][1])


class Stacked(StatefulLayer, Generic[_Layer]):
    """`num_layers` identical layers, held as one layer with stacked arrays and
    applied in sequence with `jax.lax.scan`.

    `Stacked(make_layer, num_layers, key=key)` calls `make_layer` on
    `num_layers` keys split from `key`, vmapped (`pytreemod.filter_vmap`), so
    `layers` is one layer of the type `make_layer` returns, whose array leaves
    each carry a leading axis of size `num_layers`; its static fields and
    functions are shared. Calling the stack feeds its input through layer 0,
    then layer 1, and so on, like a Python loop over the layers, but traced
    once: a 48-block model compiles in about the time of one block.

    Each layer must map its input to an output of the same shape and dtype
    (the output is the next layer's input). If the stack is called with a
    `State`, each layer is called as `layer(x, state)` and must return
    `(x, state)`, and the state of all the layers is threaded through:
    build the model with `pytreemod.nn.make_with_state` as usual, and each
    layer's `StateIndex` values get the leading axis too.

    Args:
        make_layer: a function from a `jax.random` key to a layer, e.g.
            `lambda k: Block(16, key=k)`.
        num_layers: how many layers (at least 1).
        key: the key the layers' keys are split from (keyword only).
        layers: instead of the three above, a sequence of existing identical
            layers (same structure, static fields, shapes and dtypes) to stack
            (keyword only).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> stack = ptm.nn.Stacked(lambda k: ptm.nn.Linear(4, 4, key=k), 10,
        ...                        key=jax.random.key(0))
        >>> stack.layers.weight.shape  # ten (4, 4) weights
        (10, 4, 4)
        >>> x = jnp.ones(4)
        >>> y = x
        >>> for layer in stack:  # the same as this Python loop
        ...     y = layer(y)
        >>> bool(jnp.allclose(stack(x), y, atol=1e-6))
        True
    """

    # The leading (layer) axis of every array below is unnamed for
    # `pytreemod.sharding`, so the layers' own axis names still fit.
    layers: _Layer = field(axes=(None,))
    num_layers: int = field(static=True)

    def __init__(
        self,
        make_layer: Callable[[jax.Array], _Layer] | None = None,
        num_layers: int | None = None,
        *,
        key: jax.Array | None = None,
        layers: Sequence[_Layer] | None = None,
    ):
        if layers is not None:
            if make_layer is not None or num_layers is not None or key is not None:
                raise ValueError(
                    STACKED_ARGS.format(got="both `layers=` and a constructor")
                )
            layers = list(layers)
            if not layers:
                raise ValueError("`Stacked(layers=...)` needs at least one layer.")
            self.layers = _stack(layers)
            self.num_layers = len(layers)
            return
        if make_layer is None or num_layers is None or key is None:
            missing = [
                name
                for name, value in (
                    ("make_layer", make_layer),
                    ("num_layers", num_layers),
                    ("key", key),
                )
                if value is None
            ]
            raise ValueError(STACKED_ARGS.format(got=f"no {', no '.join(missing)}"))
        if (
            isinstance(num_layers, bool)
            or not isinstance(num_layers, int)
            or num_layers < 1
        ):
            raise ValueError(
                f"`num_layers` must be a positive int; got {num_layers!r}."
            )
        self.layers = filter_vmap(make_layer)(jr.split(key, num_layers))
        self.num_layers = num_layers

    def is_stateful(self) -> bool:
        """Whether the layers hold a `StateIndex`, so that `Sequential` passes
        the stack a `State`.

        Returns:
            `True` if some array of state is kept per layer.

        Example:
            >>> import jax
            >>> import pytreemod as ptm
            >>> stack = ptm.nn.Stacked(lambda k: ptm.nn.Linear(2, 2, key=k), 3,
            ...                        key=jax.random.key(0))
            >>> stack.is_stateful()
            False
        """
        leaves = jax.tree_util.tree_leaves(self.layers, is_leaf=is_state_index)
        return any(is_state_index(leaf) for leaf in leaves)

    def __len__(self) -> int:
        return self.num_layers

    def __getitem__(self, i: int) -> _Layer:
        """The `i`-th layer, as an ordinary (unstacked) layer."""
        if not -self.num_layers <= i < self.num_layers:
            raise IndexError(
                f"layer index {i} is out of range for a Stacked of "
                f"{self.num_layers} layers."
            )
        return jax.tree_util.tree_map(
            lambda leaf: leaf[i] if is_array(leaf) else leaf, self.layers
        )

    def __iter__(self) -> Iterator[_Layer]:
        return (self[i] for i in range(self.num_layers))

    def __call__(
        self,
        x: Any,
        state: Any = _NO_STATE,
        *,
        key: jax.Array | None = None,
        **kwargs: Any,
    ) -> Any:
        """Apply the layers in order.

        Args:
            x: the first layer's input (any pytree of arrays); every layer
                must return an output of the same structure, shapes and
                dtypes.
            state: optional; a `State` holding the layers' state. If the
                layers hold a `StateIndex`, they are called as
                `layer(x, state)` and must return `(x, state)`; otherwise they
                are called without it and it is returned unchanged.
            key: optional; split into one key per layer, each passed as
                `key=` (e.g. for dropout). Without it, no `key` is passed.
            **kwargs: passed unchanged to every layer.

        Returns:
            The last layer's output; or `(output, state)` if `state` was given.
        """
        if state is not _NO_STATE and not isinstance(state, State):
            raise TypeError(
                "`Stacked(...)(x, state)` takes a `pytreemod.nn.State` as `state`; "
                f"got {type(state).__name__}."
            )
        stateful = self.is_stateful()
        if state is _NO_STATE and stateful:
            raise ValueError(STACKED_NEEDS_STATE)
        dynamic, static = partition(self.layers, is_array)
        keys = None if key is None else jr.split(key, self.num_layers)
        x = jax.tree_util.tree_map(jnp.asarray, x)
        before = _structure(x)

        def call(layer: Any, h: Any, *args: Any, k: jax.Array | None) -> Any:
            if k is not None:
                return layer(h, *args, key=k, **kwargs)
            return layer(h, *args, **kwargs)

        def check(h: Any) -> None:
            after = _structure(h)
            if after != before:
                raise ValueError(
                    STACKED_CARRY_CHANGED.format(before=before, after=after)
                )

        if not stateful:

            def step(h: Any, xs: Any) -> tuple[Any, None]:
                dyn, k = xs
                h = call(combine(dyn, static), h, k=k)
                check(h)
                return h, None

            # `through_scan`: what a `surgery.capture` records inside the
            # layers leaves the scan as scan outputs (the body as is if none).
            scan_step, finish = through_scan(step)
            out, ys = jax.lax.scan(scan_step, x, (dynamic, keys))
            finish(ys)
            return out if state is _NO_STATE else (out, state)

        def stateful_step(h: Any, xs: Any) -> tuple[Any, Any]:
            dyn, sub, k = xs
            result = call(combine(dyn, static), h, sub, k=k)
            if not (isinstance(result, tuple) and len(result) == 2):
                raise ValueError(
                    "Stacked: called with a `state`, each layer must return "
                    f"`(output, state)`; got {type(result).__name__}."
                )
            h, sub = result
            check(h)
            return h, sub

        substate = state.substate(self.layers)
        scan_step, finish = through_scan(stateful_step)
        out, ys = jax.lax.scan(scan_step, x, (dynamic, substate, keys))
        new_substate = finish(ys)
        return out, state.update(new_substate)
