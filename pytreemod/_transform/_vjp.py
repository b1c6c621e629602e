"""`filter_vjp`: reverse-mode derivatives of functions of arbitrary pytrees."""

from collections.abc import Callable
from typing import Any

import jax

from .._module._is_array import is_inexact_array
from ._autodiff import check_pair
from ._filters import combine, partition

__all__ = ["filter_vjp"]

_NOT_A_PAIR = """\
`filter_vjp(..., has_aux=True)` needs the function to return a pair
`(out, aux)`, but it returned {got}. Return `out, aux` from the function, or
drop `has_aux=True` if it returns the output alone."""

_NOT_CALLABLE = "`filter_vjp` needs a callable first argument; got {got!r}."


def filter_vjp(fun: Callable[..., Any], *primals: Any, has_aux: bool = False) -> Any:
    """Evaluate `fun(*primals)` and return a function that computes its
    vector-Jacobian products; the arguments and output may be any pytrees.

    Like `jax.vjp`, but only the floating-point arrays among `primals` are
    differentiated: every other leaf (integer arrays, Python numbers, strings,
    functions) is passed through and gets `None` as cotangent.

    Args:
        fun: the function; called as `fun(*primals)`. It may return any pytree.
        *primals: the arguments at which to evaluate `fun`.
        has_aux: if `True`, `fun` returns a pair `(out, aux)`; only `out` is
            differentiated, and `aux` is returned as it is.

    Returns:
        `(out, vjp_fn)`, or `(out, vjp_fn, aux)` with `has_aux=True`. `vjp_fn`
        takes a cotangent with the structure of `out` (an array at each
        floating-point array of `out`, `None` at every other leaf) and returns a
        tuple with one cotangent per primal, each with its primal's structure
        and `None` at the leaves that are not floating-point arrays.

    Raises:
        TypeError: if `fun` is not callable, or with `has_aux=True` does not
            return a pair.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def f(x, label):
        ...     return {"y": 3.0 * x, "label": label}
        >>> out, vjp_fn = pytreemod.filter_vjp(f, jnp.array([1.0, 2.0]), "a")
        >>> vjp_fn({"y": jnp.array([1.0, 10.0]), "label": None})
        (Array([ 3., 30.], dtype=float32), None)
    """
    if not callable(fun):
        raise TypeError(_NOT_CALLABLE.format(got=fun))
    diff, nondiff = partition(primals, is_inexact_array)

    def diff_fun(*diff_primals: Any) -> Any:
        out = fun(*combine(diff_primals, nondiff))
        aux = None
        if has_aux:
            check_pair(out, _NOT_A_PAIR)
            out, aux = out
        diff_out, nondiff_out = partition(out, is_inexact_array)
        return diff_out, (nondiff_out, aux)

    diff_out, vjp_fn, (nondiff_out, aux) = jax.vjp(diff_fun, *diff, has_aux=True)
    out = combine(diff_out, nondiff_out)
    if has_aux:
        return out, vjp_fn, aux
    return out, vjp_fn
