"""`filter_custom_jvp`: `jax.custom_jvp` for functions of arbitrary pytrees, with
the non-differentiable arguments found by type instead of `nondiff_argnums`."""

import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.custom_derivatives import SymbolicZero

from .._module._is_array import is_array
from ._filters import _is_none, _Static, combine, partition

__all__ = ["filter_custom_jvp"]

_T = TypeVar("_T")

_NO_JVP = """\
`{name}` is a `filter_custom_jvp` function whose JVP rule is not defined yet.
Define it before differentiating (or calling) the function:
    @{name}.def_jvp
    def {name}_jvp(primals, tangents, **kwargs):
        ...
        return out, tangent_out"""

_KEYWORD_TANGENT = """\
`filter_custom_jvp` treats keyword arguments as non-differentiable, but a
keyword argument of `{name}` was differentiated (it depends on something being
differentiated). Pass the values to differentiate as positional arguments."""

_BAD_RULE_OUTPUT = """\
The JVP rule of `{name}` must return a pair `(out, tangent_out)`, with
`tangent_out` of the structure of `out` (`None` allowed for zero tangents),
but it returned {got}."""


def _tangent_or_none(tangent: Any, primal: Any) -> Any:
    """`None` for a zero tangent or a primal that cannot have one."""
    if isinstance(tangent, SymbolicZero):
        return None
    if not jnp.issubdtype(jnp.result_type(primal), jnp.inexact):
        # Integer primals can come with `float0` tangents that are not symbolic.
        return None
    return tangent


def _none_to_zero(tangent: Any, primal: Any) -> Any:
    if tangent is None:
        return SymbolicZero(jax.typeof(primal).to_tangent_aval())
    return tangent


class filter_custom_jvp(Generic[_T]):
    """Give a function of arbitrary pytrees a custom JVP (forward-mode) rule.

    Like `jax.custom_jvp`, but the arguments may hold anything: arrays are
    passed to JAX and everything else is static, so there is no need for
    `nondiff_argnums`. The rule sees `None` as the tangent of every argument
    leaf that is not differentiated: a leaf that is not a floating-point
    array, or one that does not depend on what is being differentiated.
    Keyword arguments are never differentiated. The function must return a
    pytree of arrays.

    Define the rule with `.def_jvp`; it is called as
    `rule(primals, tangents, **kwargs)`, where `primals` is the tuple of
    positional arguments and `tangents` has its structure, and it returns
    `(out, tangent_out)`, where `tangent_out` may hold `None` for zero tangents.

    Args:
        fn: the function.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @pytreemod.filter_custom_jvp
        ... def apply(x, fn):
        ...     return fn(x)
        >>> @apply.def_jvp
        ... def apply_jvp(primals, tangents):
        ...     x, fn = primals
        ...     tx, _ = tangents  # `fn` is not an array: its tangent is None
        ...     return apply(x, fn), 10.0 * tx  # a deliberately wrong rule
        >>> jax.grad(apply)(jnp.array(1.0), jnp.sin)
        Array(10., dtype=float32, weak_type=True)
    """

    def __init__(self, fn: Callable[..., _T]):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.fn_jvp: Callable[..., Any] | None = None
        name = getattr(fn, "__name__", "the function")

        def primal(box: _Static, dynamic: Any) -> Any:
            args, kwargs = combine(dynamic, box.value)
            return fn(*args, **kwargs)

        def rule(box: _Static, primals: Any, tangents: Any) -> Any:
            (dynamic,) = primals
            (dynamic_tangents,) = tangents
            t_args, t_kwargs = jtu.tree_map(_tangent_or_none, dynamic_tangents, dynamic)
            if jtu.tree_leaves(t_kwargs):
                raise ValueError(_KEYWORD_TANGENT.format(name=name))
            args, kwargs = combine(dynamic, box.value)
            assert self.fn_jvp is not None
            result = self.fn_jvp(args, t_args, **kwargs)
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(
                    _BAD_RULE_OUTPUT.format(
                        name=name, got=f"a `{type(result).__name__}`"
                    )
                )
            out, t_out = result
            t_out = jtu.tree_map(_none_to_zero, t_out, out, is_leaf=_is_none)
            return out, t_out

        self._custom = jax.custom_jvp(primal, nondiff_argnums=(0,))
        self._rule = rule
        self._name = name

    def def_jvp(self, fn_jvp: Callable[..., Any]) -> Callable[..., Any]:
        """Set the JVP rule `fn_jvp(primals, tangents, **kwargs)`, which returns
        `(out, tangent_out)`. Returns `fn_jvp`, so it works as a decorator.

        Example:
            >>> import jax.numpy as jnp
            >>> import pytreemod
            >>> square = pytreemod.filter_custom_jvp(lambda x: x * x)
            >>> rule = square.def_jvp(lambda p, t: (square(*p), 2 * p[0] * t[0]))
            >>> x, tx = jnp.array(3.0, dtype=jnp.float32), jnp.ones(())
            >>> pytreemod.filter_jvp(square, (x,), (tx,))
            (Array(9., dtype=float32), Array(6., dtype=float32))
        """
        self.fn_jvp = fn_jvp
        self._custom.defjvp(self._rule, symbolic_zeros=True)
        return fn_jvp

    def __call__(self, *args: Any, **kwargs: Any) -> _T:
        if self.fn_jvp is None:
            raise TypeError(_NO_JVP.format(name=self._name))
        dynamic, static = partition((args, kwargs), is_array)
        return self._custom(_Static(static), dynamic)
