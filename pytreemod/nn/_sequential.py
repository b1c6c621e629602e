"""`Sequential`: layers applied one after another, with the `State` passed
to those that take it."""

import inspect
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import jax
import jax.random as jr

from .._module._module import Module
from .._state._state import State
from ._stateful import StatefulLayer


class _NoState:
    """The default of `Sequential.__call__(state=...)`: no state was given."""

    def __repr__(self) -> str:
        return "<no state>"


_NO_STATE: Any = _NoState()

_MISSING_STATE_ERROR = """\
Sequential layer {position} ({layer}) is stateful, but the Sequential was
called without a state. Make the model with its state and pass it along:
    model, state = pytreemod.nn.make_with_state(Model)(...)
    y, state = model.sequential(x, state)"""

# Module class -> whether its `__call__` has a `state` parameter. Inspecting a
# signature is slow, so it happens once per class, not once per call.
_TAKES_STATE: "weakref.WeakKeyDictionary[type, bool]" = weakref.WeakKeyDictionary()


def _call_takes_state(cls: type) -> bool:
    try:
        return _TAKES_STATE[cls]
    except KeyError:
        pass
    try:
        parameters = inspect.signature(cls.__call__).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes = "state" in parameters
    _TAKES_STATE[cls] = takes
    return takes


def _takes_state(layer: Any) -> bool:
    """Whether `Sequential` calls `layer` as `y, state = layer(x, state=...)`:
    a `StatefulLayer` that says it is stateful, or any other Module whose
    `__call__` has a `state` parameter."""
    if isinstance(layer, StatefulLayer):
        return layer.is_stateful()
    return isinstance(layer, Module) and _call_takes_state(type(layer))


class Sequential(StatefulLayer):
    """Layers applied in order: the output of each is the input of the next.

    Layers that take a `State` (a `StatefulLayer`, or a Module whose
    `__call__` has a `state` parameter) are called as
    `x, state = layer(x, state=state, key=key)`; the others as
    `x = layer(x, key=key)`. Wrap plain functions in `pytreemod.nn.Lambda`.
    Indexing gives a layer, slicing a smaller `Sequential`.

    Args:
        layers: the layers, in order.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> model = pytreemod.nn.Sequential([
        ...     pytreemod.nn.Lambda(jnp.negative),
        ...     pytreemod.nn.Lambda(jax.nn.relu),
        ... ])
        >>> model(jnp.array([1.0, -2.0]))
        Array([0., 2.], dtype=float32)
        >>> len(model), model[1:]
        (2, Sequential(layers=(Lambda(fn=<function relu>),)))
    """

    layers: tuple[Any, ...]

    def __init__(self, layers: Sequence[Callable[..., Any]]) -> None:
        self.layers = tuple(layers)

    def is_stateful(self) -> bool:
        """Whether any layer takes a state.

        Returns:
            `True` if some layer is called with the state.

        Example:
            >>> import jax.numpy as jnp
            >>> import pytreemod
            >>> seq = pytreemod.nn.Sequential([pytreemod.nn.Lambda(jnp.sin)])
            >>> seq.is_stateful()
            False
        """
        return any(_takes_state(layer) for layer in self.layers)

    @overload
    def __call__(self, x: Any, *, key: jax.Array | None = None) -> Any: ...

    @overload
    def __call__(
        self, x: Any, state: State, *, key: jax.Array | None = None
    ) -> tuple[Any, State]: ...

    def __call__(
        self, x: Any, state: Any = _NO_STATE, *, key: jax.Array | None = None
    ) -> Any:
        """Run the layers in order.

        Args:
            x: the input of the first layer.
            state: a `State`, passed through the layers that take one. Leave
                it out for a Sequential without such layers.
            key: a `jax.random` key, split into one subkey per layer; `None`
                gives every layer `key=None`.

        Returns:
            The last layer's output; `(output, state)` if `state` was given.

        Raises:
            ValueError: if a layer takes a state and none was given.
        """
        layers = self.layers
        if key is None:
            keys: Any = (None,) * len(layers)
        else:
            keys = jr.split(key, len(layers))
        for position, (layer, layer_key) in enumerate(zip(layers, keys, strict=True)):
            if _takes_state(layer):
                if state is _NO_STATE:
                    raise ValueError(
                        _MISSING_STATE_ERROR.format(
                            position=position, layer=type(layer).__name__
                        )
                    )
                x, state = layer(x, state=state, key=layer_key)
            else:
                x = layer(x, key=layer_key)
        if state is _NO_STATE:
            return x
        return x, state

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return Sequential(self.layers[i])
        if isinstance(i, int):
            return self.layers[i]
        raise TypeError(
            "A Sequential is indexed by an int (a layer) or a slice (a smaller "
            f"Sequential); got {type(i).__name__}."
        )

    def __iter__(self) -> Iterator[Any]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)
