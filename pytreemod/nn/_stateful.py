"""`StatefulLayer`: the marker base class of layers called with a `State`."""

from collections.abc import Callable

from .._module._abstract import AbstractClassVar
from .._module._module import Module


class StatefulLayer(Module):
    """Base class of layers that take and return a `State`:
    `y, state = layer(x, state)`.

    `pytreemod.nn.Sequential` calls a `StatefulLayer` whose `is_stateful()`
    is `True` as `layer(x, state=state, key=key)`, and any other layer as
    `layer(x, key=key)`. Subclasses implement `__call__`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> class AddCount(pytreemod.nn.StatefulLayer):
        ...     index: pytreemod.nn.StateIndex
        ...     def __init__(self):
        ...         self.index = pytreemod.nn.StateIndex(jnp.array(0.0))
        ...     def __call__(self, x, state, *, key=None):
        ...         count = state.get(self.index)
        ...         return x + count, state.set(self.index, count + 1)
        >>> layer, state = pytreemod.nn.make_with_state(AddCount)()
        >>> layer.is_stateful()
        True
        >>> y, state = layer(jnp.ones(()), state)
        >>> y, state = layer(jnp.ones(()), state)
        >>> y
        Array(2., dtype=float32)
    """

    __call__: AbstractClassVar[Callable]

    def is_stateful(self) -> bool:
        """Whether to call this layer with a state, as
        `y, state = layer(x, state)`.

        Returns:
            `True` here; a layer that only sometimes holds state (because of
            the sublayers it was given) overrides this.

        Example:
            >>> import pytreemod
            >>> pytreemod.nn.Sequential([]).is_stateful()
            False
        """
        return True
