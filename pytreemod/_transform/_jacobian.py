"""`filter_jacfwd`, `filter_jacrev` and `filter_hessian`: Jacobians and
Hessians with respect to the floating-point arrays of the first argument."""

from collections.abc import Callable
from typing import Any

import jax

from .._module._field import field
from .._module._is_array import is_array
from .._module._module import Module
from ._autodiff import check_pair, split_first_argument
from ._filters import _Static, combine, partition

__all__ = ["filter_hessian", "filter_jacfwd", "filter_jacrev"]

_NO_ARGUMENT = """\
`{name}` differentiates with respect to the first positional argument, but the
function was called with {got}. Pass the pytree to differentiate first and by
position, as in `{name}(f)(x, *other_args)`."""

_NOT_A_PAIR = """\
`{name}(..., has_aux=True)` needs the function to return a pair `(out, aux)`,
but it returned {got}. Return `out, aux` from the function, or drop
`has_aux=True` if it returns the output alone."""

_NOT_CALLABLE = "`{name}` needs a callable to differentiate; got {got!r}."


class _Jacobian(Module):
    """The callable that `filter_jacfwd` and `filter_jacrev` return; a Module,
    so that the function it wraps is part of its pytree."""

    fun: Callable[..., Any]
    has_aux: bool = field(static=True)
    reverse: bool = field(static=True)

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.fun

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = "filter_jacrev" if self.reverse else "filter_jacfwd"
        diff_x, call = split_first_argument(self.fun, args, kwargs, _NO_ARGUMENT, name)
        has_aux = self.has_aux

        def differentiable(diff: Any) -> Any:
            out = call(diff)
            if not has_aux:
                return out, None
            check_pair(out, _NOT_A_PAIR, name=name)
            out, aux = out
            # JAX wants array outputs only; the rest of `aux` goes round.
            aux_arrays, aux_rest = partition(aux, is_array)
            return out, (aux_arrays, _Static(aux_rest))

        jacobian = jax.jacrev if self.reverse else jax.jacfwd
        jac, aux = jacobian(differentiable, has_aux=True)(diff_x)
        if not has_aux:
            return jac
        aux_arrays, box = aux
        return jac, combine(aux_arrays, box.value)


def _make(fun: Any, has_aux: bool, reverse: bool) -> Any:
    name = "filter_jacrev" if reverse else "filter_jacfwd"
    if not callable(fun):
        raise TypeError(_NOT_CALLABLE.format(name=name, got=fun))
    return _Jacobian(fun, bool(has_aux), reverse)


def filter_jacfwd(fun: Callable[..., Any], has_aux: bool = False) -> Callable[..., Any]:
    """Make a function that returns the Jacobian of `fun` with respect to the
    floating-point arrays of its first argument, computed in forward mode.

    Like `jax.jacfwd`, but the first argument may be any pytree: its
    floating-point arrays are differentiated and its other leaves get `None`.
    The other arguments are passed through and not differentiated. The output
    of `fun` must be a pytree of arrays.

    Args:
        fun: the function to differentiate.
        has_aux: if `True`, `fun` returns a pair `(out, aux)`; only `out` is
            differentiated, and the new function returns `(jacobian, aux)`.

    Returns:
        A function with `fun`'s arguments that returns the Jacobian: for each
        output leaf, a pytree with the structure of the first argument whose
        leaves have shape `out_leaf.shape + in_leaf.shape`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def f(params, x):
        ...     weight, activation = params
        ...     return activation(weight * x)
        >>> pytreemod.filter_jacfwd(f)((jnp.array([1.0, 2.0]), jnp.sin), 0.0)
        (Array([[0., 0.],
               [0., 0.]], dtype=float32), None)
    """
    return _make(fun, has_aux, reverse=False)


def filter_jacrev(fun: Callable[..., Any], has_aux: bool = False) -> Callable[..., Any]:
    """Make a function that returns the Jacobian of `fun` with respect to the
    floating-point arrays of its first argument, computed in reverse mode.

    The same as `filter_jacfwd` (which see) but with `jax.jacrev`, which is
    cheaper when the output is smaller than the input.

    Args:
        fun: the function to differentiate.
        has_aux: if `True`, `fun` returns a pair `(out, aux)`; only `out` is
            differentiated, and the new function returns `(jacobian, aux)`.

    Returns:
        A function with `fun`'s arguments that returns the Jacobian.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def f(params, n):
        ...     return jnp.sum(params["w"] ** n)
        >>> pytreemod.filter_jacrev(f)({"w": jnp.array([1.0, 2.0]), "n": 2}, 2)
        {'n': None, 'w': Array([2., 4.], dtype=float32)}
    """
    return _make(fun, has_aux, reverse=True)


def filter_hessian(
    fun: Callable[..., Any], has_aux: bool = False
) -> Callable[..., Any]:
    """Make a function that returns the Hessian of `fun` with respect to the
    floating-point arrays of its first argument.

    Computed as `filter_jacfwd(filter_jacrev(fun))`, so non-array leaves of the
    first argument get `None` and the other arguments pass through.

    Args:
        fun: the function to differentiate; it should return a scalar.
        has_aux: if `True`, `fun` returns a pair `(out, aux)`, and the new
            function returns `(hessian, aux)`.

    Returns:
        A function with `fun`'s arguments that returns the Hessian.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def f(x, power):
        ...     return jnp.sum(x**power)
        >>> pytreemod.filter_hessian(f)(jnp.array([1.0, 2.0]), 3)
        Array([[ 6.,  0.],
               [ 0., 12.]], dtype=float32)
    """
    return filter_jacfwd(filter_jacrev(fun, has_aux=has_aux), has_aux=has_aux)
