"""`backward_nan`: an identity whose backward pass prints the cotangent it
receives and stops on a NaN there.

It is a `filter_custom_vjp` whose forward rule is the identity and whose
backward rule prints (with an ordered `jax.debug.callback`, so reports come
in program order) and then passes the cotangent through `error_if`.
"""

import functools
from collections.abc import Hashable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._errors._error_if import error_if
from .._module._is_array import is_array, is_array_like, is_inexact_array
from .._module._pformat import tree_pformat
from .._transform._custom_vjp import filter_custom_vjp
from .._transform._filters import combine, partition

__all__ = ["backward_nan"]

_T = TypeVar("_T")

_FOUND_NAN = (
    "Encountered NaN. `backward_nan{where}` received a cotangent holding NaN: "
    "the NaN arises in "
    "the backward pass of what comes after this point (the printout above "
    "shows the primals and cotangents). Move `backward_nan` further along the "
    "computation to narrow down where it first appears."
)


def _print_on_host(
    name: Hashable | None, rest: tuple[Any, Any], arrays: tuple[Any, Any]
) -> None:
    primals, cotangents = combine(arrays, rest)
    lines = [
        "   primals=" + tree_pformat(primals, short_arrays=False),
        "cotangents=" + tree_pformat(cotangents, short_arrays=False),
    ]
    if name is not None:
        lines.insert(0, f"{name}:")
    print("\n".join(lines))


@filter_custom_vjp
def _identity(x: Any, name: Hashable | None, terminate: bool) -> Any:
    return x


@_identity.def_fwd
def _identity_fwd(perturbed, x, name, terminate):
    del perturbed
    return x, None


def _as_array(leaf: Any) -> Any:
    return jnp.asarray(leaf) if is_array_like(leaf) else leaf


@_identity.def_bwd
def _identity_bwd(residuals, grad_x, perturbed, x, name, terminate):
    del residuals, perturbed
    # A backward rule further along may hand back a Python scalar as the
    # cotangent (`return jnp.nan` in a custom VJP): JAX takes it as an array,
    # so print it, and check it for NaN, as one.
    grad_x = jtu.tree_map(_as_array, grad_x)
    arrays, rest = partition((x, grad_x), is_array)
    jax.debug.callback(
        functools.partial(_print_on_host, name, rest), arrays, ordered=True
    )
    if terminate:
        inexact = [a for a in jtu.tree_leaves(grad_x) if is_inexact_array(a)]
        if inexact:
            has_nan = jnp.any(jnp.stack([jnp.isnan(a).any() for a in inexact]))
            where = "" if name is None else f"({name!r})"
            grad_x = error_if(grad_x, has_nan, _FOUND_NAN.format(where=where))
    return grad_x


def backward_nan(x: _T, name: Hashable | None = None, terminate: bool = True) -> _T:
    """Return `x` unchanged; on the backward pass, print its primal and
    cotangent and stop if the cotangent holds a NaN.

    For NaNs that appear only in gradients: put `backward_nan` on an
    intermediate value, and reverse mode shows what flows back into it.

    Args:
        x: any pytree. Its floating-point arrays are watched.
        name: an optional label, printed above each report.
        terminate: whether a NaN in the cotangent raises (through
            `pytreemod.error_if`, so as `EquinoxRuntimeError`) rather than
            only being printed.

    Returns:
        `x`, unchanged. As a side effect, each backward pass through it prints
        the primals and cotangents of `x`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def f(x):
        ...     return 3.0 * pytreemod.debug.backward_nan(x, name="x")
        >>> jax.grad(f)(jnp.float32(2.0))
        x:
           primals=Array(2., dtype=float32)
        cotangents=Array(3., dtype=float32)
        Array(3., dtype=float32)
    """
    return _identity(x, name, terminate)
