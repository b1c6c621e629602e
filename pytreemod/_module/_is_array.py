"""Predicates that say which pytree leaves are arrays."""

from typing import Any, TypeGuard

import jax
import jax.numpy as jnp
import numpy as np

# `jax.Array` covers concrete arrays and tracers; NumPy scalars count as arrays
# because they carry a dtype, like zero-dimensional arrays.
_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)
_ARRAY_LIKE_TYPES = (jax.Array, np.ndarray, np.generic, bool, int, float, complex)


def is_array(element: Any) -> TypeGuard[jax.Array | np.ndarray | np.generic]:
    """Return `True` if `element` is a JAX array, a NumPy array or a NumPy scalar.

    These are the leaves that the filtered transforms trace by default.

    Args:
        element: any object.

    Returns:
        Whether `element` is an array.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> is_array(jnp.ones(3)), is_array(np.float32(1.0)), is_array(1.0)
        (True, True, False)
    """
    return isinstance(element, _ARRAY_TYPES)


def is_array_like(element: Any) -> bool:
    """Return `True` if `element` is an array or a Python `bool`, `int`, `float`
    or `complex`: anything `jnp.asarray` turns into an array without copying
    a structure.

    Example:
        >>> is_array_like(1.0), is_array_like("a")
        (True, False)
    """
    return isinstance(element, _ARRAY_LIKE_TYPES)


def is_inexact_array(element: Any) -> bool:
    """Return `True` if `element` is an array of floating or complex dtype.

    These are the leaves that `filter_grad` differentiates by default.

    Example:
        >>> import jax.numpy as jnp
        >>> is_inexact_array(jnp.ones(3)), is_inexact_array(jnp.arange(3))
        (True, False)
    """
    return isinstance(element, _ARRAY_TYPES) and jnp.issubdtype(
        element.dtype, jnp.inexact
    )


def is_inexact_array_like(element: Any) -> bool:
    """Return `True` if `element` is an inexact array, or a Python `float` or
    `complex`.

    Example:
        >>> is_inexact_array_like(1.0), is_inexact_array_like(1)
        (True, False)
    """
    if isinstance(element, (float, complex)):
        return True
    return is_inexact_array(element)
