"""`filter_grad` and `filter_value_and_grad`: gradients with respect to the
floating-point arrays of the first argument, whatever else it holds."""

from collections.abc import Callable
from typing import Any, Literal, TypeVar, overload

import jax
import jax.numpy as jnp
from typing_extensions import ParamSpec

from .._module._field import field
from .._module._is_array import is_array_like
from .._module._module import Module
from .._module._partial import Partial, module_update_wrapper
from ._autodiff import check_pair, describe, split_first_argument

__all__ = ["filter_grad", "filter_value_and_grad"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_NO_ARGUMENT = """\
Functions wrapped with `filter_{{grad, value_and_grad}}` must have their first
argument passed by position, not keyword. `{name}` differentiates with respect
to the first positional argument, but the function was called with {got}.
Pass the pytree to differentiate (the model, say) first and by position:
    grads = {name}(loss)(model, x, y)
To differentiate several things, pass them together as a tuple:
    grads_a, grads_b = {name}(loss)((a, b), x, y)"""

_NOT_A_PAIR = """\
`{name}(..., has_aux=True)` needs the function to return a pair
`(value, aux)`, but it returned {got}. Return `value, aux` from the function,
or drop `has_aux=True` if it returns the value alone."""

_NOT_A_SCALAR = """\
`{name}` needs the function to return a scalar {what}, but it returned {got}.
Reduce the output to a single number, for example with `jnp.mean(...)` or
`jnp.sum(...)`.{hint}"""

_AUX_HINT = (
    " If the function returns `(value, aux)`, pass `has_aux=True`, as in "
    "`{name}(loss, has_aux=True)`."
)

_NO_ARGNUMS = (
    "`{name}` does not take `argnums`: it always differentiates with respect to "
    "the first argument. Put everything to differentiate into it, as a tuple: "
    "`{name}(lambda ab, x: f(*ab, x))((a, b), x)`."
)

_NOT_CALLABLE = (
    "`{name}` needs a callable to differentiate; got {got!r} of type `{type}`."
)


def _check_value(value: Any, name: str, has_aux: bool) -> None:
    """Raise a clear error if `value` cannot be differentiated."""
    hint = "" if has_aux else _AUX_HINT.format(name=name)
    if not is_array_like(value):
        raise TypeError(
            _NOT_A_SCALAR.format(
                name=name, what="array", got=describe(value), hint=hint
            )
        )
    shape = jnp.shape(value)
    if shape != ():
        raise TypeError(
            _NOT_A_SCALAR.format(
                name=name, what="array", got=f"an array of shape {shape}", hint=hint
            )
        )
    dtype = jnp.result_type(value)
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(
            _NOT_A_SCALAR.format(
                name=name,
                what="of floating-point dtype",
                got=f"a value of dtype {dtype}",
                hint=" Cast it with `.astype(jnp.float32)` if it is meant to be "
                "differentiable.",
            )
        )


class _ValueAndGrad(Module):
    """The callable that `filter_value_and_grad` and `filter_grad` return.

    It is a Module, so the wrapped function (a bound method, say) is part of its
    pytree, and it binds like a method when used as a decorator in a class body.
    """

    _fun: Callable[..., Any]
    _has_aux: bool = field(static=True)
    _with_value: bool = field(static=True)
    # Extra keywords for `jax.value_and_grad` (`allow_int=`, ...), as sorted
    # pairs so that equal wrappers built anew compare and hash equal.
    _gradkwargs: tuple[tuple[str, Any], ...] = field(static=True, default=())

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self._fun

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = "filter_value_and_grad" if self._with_value else "filter_grad"
        diff_x, call = split_first_argument(self._fun, args, kwargs, _NO_ARGUMENT, name)
        has_aux = self._has_aux

        def differentiable(diff: Any) -> Any:
            out = call(diff)
            if has_aux:
                check_pair(out, _NOT_A_PAIR, name=name)
                _check_value(out[0], name, has_aux)
            else:
                _check_value(out, name, has_aux)
            return out

        value, grads = jax.value_and_grad(
            differentiable, has_aux=has_aux, **dict(self._gradkwargs)
        )(diff_x)
        if self._with_value:
            return value, grads
        if has_aux:
            return grads, value[1]
        return grads

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # As a decorator on a method, bind the instance as the first argument,
        # so that `model.method(x)` differentiates with respect to `model`.
        if instance is None:
            return self
        return Partial(self, instance)


def _make(
    fun: Any, has_aux: bool, with_value: bool, name: str, gradkwargs: dict[str, Any]
) -> Any:
    if not callable(fun):
        raise TypeError(
            _NOT_CALLABLE.format(name=name, got=fun, type=type(fun).__name__)
        )
    if "argnums" in gradkwargs:
        raise TypeError(_NO_ARGNUMS.format(name=name))
    extra = tuple(sorted(gradkwargs.items()))
    wrapper = _ValueAndGrad(fun, bool(has_aux), with_value, extra)
    return module_update_wrapper(wrapper, fun)


@overload
def filter_value_and_grad(
    *, has_aux: Literal[False] = False, **gradkwargs: Any
) -> Callable[[Callable[_P, _T]], Callable[_P, tuple[_T, Any]]]: ...
@overload
def filter_value_and_grad(
    *, has_aux: Literal[True], **gradkwargs: Any
) -> Callable[
    [Callable[_P, tuple[_T, Any]]], Callable[_P, tuple[tuple[_T, Any], Any]]
]: ...
@overload
def filter_value_and_grad(
    fun: Callable[_P, _T], *, has_aux: Literal[False] = False, **gradkwargs: Any
) -> Callable[_P, tuple[_T, Any]]: ...
@overload
def filter_value_and_grad(
    fun: Callable[_P, tuple[_T, Any]], *, has_aux: Literal[True], **gradkwargs: Any
) -> Callable[_P, tuple[tuple[_T, Any], Any]]: ...
def filter_value_and_grad(
    fun: Callable[..., Any] | None = None,
    *,
    has_aux: bool = False,
    **gradkwargs: Any,
) -> Any:
    """Make a function that returns both `fun`'s value and its gradient with
    respect to the floating-point arrays of its first argument.

    Like `filter_grad`, which see, but the new function returns
    `(value, grads)`, or `((value, aux), grads)` when `has_aux=True`.

    Args:
        fun: the function to differentiate; it must return a scalar. Leave it
            out to get a decorator: `@filter_value_and_grad(has_aux=True)`.
        has_aux: if `True`, `fun` returns a pair `(value, aux)` and only `value`
            is differentiated; `aux` is passed back as it is.
        **gradkwargs: passed on to `jax.value_and_grad` (`allow_int=`,
            `holomorphic=`, ...), as in Equinox. `argnums` is not accepted.

    Returns:
        A function with `fun`'s arguments that returns `(value, grads)`, where
        `grads` has the structure of the first argument and holds `None` at
        every leaf that is not a floating-point array.

    Raises:
        TypeError: when called without a positional argument, or when `fun` does
            not return a scalar (or, with `has_aux=True`, a pair).

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def loss(params, scale):
        ...     return scale * jnp.sum(params["w"] ** 2)
        >>> value, grads = pytreemod.filter_value_and_grad(loss)(
        ...     {"w": jnp.array([1.0, 2.0]), "name": "w"}, 0.5
        ... )
        >>> value, grads
        (Array(2.5, dtype=float32), {'name': None, 'w': Array([1., 2.], dtype=float32)})
    """
    if fun is None:
        return lambda f: _make(f, has_aux, True, "filter_value_and_grad", gradkwargs)
    return _make(fun, has_aux, True, "filter_value_and_grad", gradkwargs)


@overload
def filter_grad(
    *, has_aux: Literal[False] = False, **gradkwargs: Any
) -> Callable[[Callable[_P, Any]], Callable[_P, Any]]: ...
@overload
def filter_grad(
    *, has_aux: Literal[True], **gradkwargs: Any
) -> Callable[[Callable[_P, tuple[Any, _T]]], Callable[_P, tuple[Any, _T]]]: ...
@overload
def filter_grad(
    fun: Callable[_P, Any], *, has_aux: Literal[False] = False, **gradkwargs: Any
) -> Callable[_P, Any]: ...
@overload
def filter_grad(
    fun: Callable[_P, tuple[Any, _T]], *, has_aux: Literal[True], **gradkwargs: Any
) -> Callable[_P, tuple[Any, _T]]: ...
def filter_grad(
    fun: Callable[..., Any] | None = None,
    *,
    has_aux: bool = False,
    **gradkwargs: Any,
) -> Any:
    """Make a function that returns the gradient of `fun` with respect to the
    floating-point arrays of its first argument.

    The first argument may be any pytree (a Module, a dict, a tuple of several
    things, ...): its floating-point JAX and NumPy arrays are differentiated, and
    its other leaves (integer arrays, Python numbers, strings, functions) are
    passed through unchanged and get `None` as gradient. The other arguments are
    passed through as they are and not differentiated.

    Args:
        fun: the function to differentiate; it must return a scalar. Leave it
            out to get a decorator: `@filter_grad(has_aux=True)`.
        has_aux: if `True`, `fun` returns a pair `(value, aux)`; `value` is
            differentiated, and the new function returns `(grads, aux)`.
        **gradkwargs: passed on to `jax.value_and_grad` (`allow_int=`,
            `holomorphic=`, ...), as in Equinox. `argnums` is not accepted.

    Returns:
        A function with `fun`'s arguments that returns `grads` (or
        `(grads, aux)`): a pytree with the structure of the first argument,
        holding a gradient at each floating-point array and `None` elsewhere.

    Raises:
        TypeError: when called without a positional argument, or when `fun` does
            not return a scalar (or, with `has_aux=True`, a pair).

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @pytreemod.filter_grad
        ... def loss(params, x):
        ...     weight, activation = params
        ...     return jnp.sum(activation(weight * x))
        >>> loss((jnp.array([1.0, -2.0]), jnp.abs), jnp.array([3.0, 3.0]))
        (Array([ 3., -3.], dtype=float32), None)
    """
    if fun is None:
        return lambda f: _make(f, has_aux, False, "filter_grad", gradkwargs)
    return _make(fun, has_aux, False, "filter_grad", gradkwargs)
