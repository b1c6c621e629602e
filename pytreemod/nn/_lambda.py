"""`Lambda`, which makes a plain function usable as a layer."""

from collections.abc import Callable
from typing import Any

import jax

from .._module._module import Module


class Lambda(Module):
    """Wrap a function as a layer: `Lambda(fn)(x, key=...)` is `fn(x)`.

    The only thing it adds is the ignored `key` argument that layers take, so
    that a function such as `jax.nn.relu` can sit in a `Sequential`. `fn` is a
    field like any other: if it is itself a pytree (a `Module`, say), its
    arrays are parameters of the `Lambda`.

    Args:
        fn: the function to wrap.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> relu = ptm.nn.Lambda(jax.nn.relu)
        >>> relu(jnp.array([-1.0, 2.0]), key=None)
        Array([0., 2.], dtype=float32)
    """

    fn: Callable[[Any], Any]

    def __call__(self, x: Any, *, key: jax.Array | None = None) -> Any:
        """Return `fn(x)`.

        Args:
            x: the input.
            key: ignored; accepted so that every layer can be called alike.

        Returns:
            Whatever `fn(x)` returns.
        """
        del key
        return self.fn(x)
