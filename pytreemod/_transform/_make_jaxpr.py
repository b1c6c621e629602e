"""`filter_make_jaxpr`: the jaxpr of a function over arguments that may hold
any Python objects."""

from collections.abc import Callable
from typing import Any, ParamSpec

import jax
import jax.extend.core
import jax.tree_util as jtu

from .._module._is_array import is_array
from .._module._module import Module
from .._module._partial import module_update_wrapper
from ._filters import combine, partition

__all__ = ["filter_make_jaxpr"]

_P = ParamSpec("_P")


def _is_shaped(x: Any) -> bool:
    return is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


class _MakeJaxpr(Module):
    """What `filter_make_jaxpr(fun)` returns."""

    fun: Callable[..., Any]

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.fun

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
        dynamic, static = partition((args, kwargs), _is_shaped)
        flat, treedef = jtu.tree_flatten(dynamic)
        static_out = []

        # A fresh function per call: the non-array outputs are only captured
        # while tracing.
        def traced(*flat: Any) -> Any:
            a, k = combine(treedef.unflatten(flat), static)
            out_dynamic, out_static = partition(self.fun(*a, **k), is_array)
            static_out.append(out_static)
            return out_dynamic

        jaxpr, out_shapes = jax.make_jaxpr(traced, return_shape=True)(*flat)
        return jaxpr, out_shapes, static_out[0]


def filter_make_jaxpr(
    fun: Callable[_P, Any],
) -> Callable[_P, tuple[jax.extend.core.ClosedJaxpr, Any, Any]]:
    """Wrap `fun` so that calling it gives its jaxpr, like `jax.make_jaxpr`,
    for arguments and outputs that may hold any Python objects.

    Array arguments (and `jax.ShapeDtypeStruct`s) become the jaxpr's inputs, in
    `jax.tree_util.tree_leaves` order; everything else, including Python
    numbers, is static: fixed into the jaxpr. Arrays that `fun` holds (if it is
    a Module) become constants of the closed jaxpr.

    Args:
        fun: the function to trace.

    Returns:
        A function taking `fun`'s arguments and returning a tuple of
        `(closed_jaxpr, out_shapes, static_out)`: the `ClosedJaxpr`; the output
        with a `jax.ShapeDtypeStruct` for each array and `None` elsewhere; and
        the output with `None` for each array and the other leaves as
        returned.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def f(x, how):
        ...     return (jnp.sin(x) if how == "sin" else x), how
        >>> jaxpr, shapes, static = pytreemod.filter_make_jaxpr(f)(jnp.ones(2), "sin")
        >>> jaxpr
        { lambda ; a:f32[2]. let b:f32[2] = sin a in (b,) }
        >>> shapes, static
        ((ShapeDtypeStruct(shape=(2,), dtype=float32), None), (None, 'sin'))
    """
    if not callable(fun):
        raise TypeError(
            "`filter_make_jaxpr` needs a callable to trace; got "
            f"{fun!r} of type `{type(fun).__name__}`."
        )
    return module_update_wrapper(_MakeJaxpr(fun))
