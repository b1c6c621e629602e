"""`filter_eval_shape`: the shapes and dtypes a function would produce, for
any arguments, without running it or allocating its arrays."""

from collections.abc import Callable
from typing import Any

import jax

from .._module._is_array import is_array
from ._filters import combine, partition

__all__ = ["filter_eval_shape"]


def _is_shaped(x: Any) -> bool:
    return is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def filter_eval_shape(fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Work out what `fun(*args, **kwargs)` returns, like `jax.eval_shape`, but
    for arguments and outputs that may hold any Python objects.

    Array arguments (and `jax.ShapeDtypeStruct`s standing in for arrays) are
    traced abstractly; everything else is passed as it is. Nothing is
    computed and no output array is allocated, so this is how to get the
    skeleton of a model that would be too big to build.

    Args:
        fun: the function to evaluate abstractly.
        *args: its positional arguments: any pytrees.
        **kwargs: its keyword arguments: any pytrees.

    Returns:
        The output of `fun`, with a `jax.ShapeDtypeStruct` in place of every
        array and every other leaf as `fun` returned it.

    Raises:
        TypeError: if `fun` is not callable.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def init(n, activation):
        ...     return {"w": jnp.ones((n, n)), "act": activation}
        >>> pytreemod.filter_eval_shape(init, 4, "relu")
        {'act': 'relu', 'w': ShapeDtypeStruct(shape=(4, 4), dtype=float32)}
    """
    if not callable(fun):
        raise TypeError(
            "`filter_eval_shape(fun, *args, **kwargs)` needs a callable first; got "
            f"{fun!r} of type `{type(fun).__name__}`."
        )
    dynamic, static = partition((fun, args, kwargs), _is_shaped)
    static_out = []

    # A fresh function per call: `jax.eval_shape` caches on the function, and
    # the non-array outputs are only captured while tracing.
    def traced(dynamic: Any) -> Any:
        f, a, k = combine(dynamic, static)
        out_dynamic, out_static = partition(f(*a, **k), is_array)
        static_out.append(out_static)
        return out_dynamic

    out_dynamic = jax.eval_shape(traced, dynamic)
    return combine(out_dynamic, static_out[0])
