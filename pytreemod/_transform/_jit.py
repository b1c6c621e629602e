"""`filter_jit`: `jax.jit` for functions of any pytrees, with a per-call cost
close to `jax.jit` on the bare arrays.

The call path, top to bottom (`_JitWrapper.__call__`):

    args, kwargs = bind(args, kwargs)                        # only with keywords
    leaves, treedef = tree_flatten((args, kwargs))           # C++
    layout = layouts[treedef, tuple(map(type, leaves))]      # where arrays sit
    entry = layout.entries[layout.static_of(leaves)]         # by static values
    out = entry.call(*fun_arrays, *layout.arrays_of(leaves))  # jax.jit, C++
    return out.plan.unflatten(out.arrays)                    # C++

The wrapped function was split into its arrays (`fun_arrays`) and static part
when `filter_jit` was applied; `layouts` belong to that static part, shared
by every `filter_jit` of an equal function (`_jit_cache.py` says what each
level is keyed on). Each entry is a `jax.jit` of a function of the array
leaves only, whose output treedef carries the non-array outputs
(`_jit_trace.py`), so JAX's own C++ dispatch checks shapes, dtypes and config
contexts and retraces by itself; the plan it returns rebuilds the output.
Everything else (static checks, donation, retrace explanations) happens on a
miss or while tracing. `lower`/`compile` are in `_jit_aot.py`.
"""

import types
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar, overload

import jax
from typing_extensions import ParamSpec

from .._module._module import BoundMethod, Module
from ._jit_aot import Lowered, lower
from ._jit_cache import Cache, cache_for, names_of
from ._runtime_error import as_runtime_error

__all__ = ["filter_jit"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

Donate = Literal["all", "all-except-first", "warn", "warn-except-first", "none"]

# donate -> (donate the first argument's arrays, donate the other arrays (the
# function's own and the other arguments'), silence unusable-donation warnings)
_DONATE_MODES = {
    "all": (True, True, True),
    "all-except-first": (False, True, True),
    "warn": (True, True, False),
    "warn-except-first": (False, True, False),
    "none": (False, False, False),
}

_BAD_DONATE = (
    "`filter_jit(..., donate=...)` must be one of 'all', 'all-except-first', "
    "'warn', 'warn-except-first', or 'none'; got {donate!r}."
)

_BAD_JITKWARGS = (
    "`jitkwargs` cannot contain 'static_argnums', 'static_argnames', "
    "'donate_argnums', 'in_shardings', or 'out_shardings'. filter_jit decides "
    "what is static (every non-array) and what is donated (`donate=`) itself; "
    "for shardings, place the inputs (`jax.device_put`) or use "
    "`pytreemod.filter_shard` inside the function."
)
_FORBIDDEN_JITKWARGS = (
    "static_argnums",
    "static_argnames",
    "donate_argnums",
    "donate_argnames",
    "in_shardings",
    "out_shardings",
)

_NOT_CALLABLE = (
    "`filter_jit` needs a callable (a function, a bound method or a callable "
    "Module); got {fun!r} of type {type_name}. To use it as a decorator with "
    "options, write `@filter_jit(donate=...)`."
)

# `filter_jit(donate=...)` without a function: return a decorator.
_NO_FUNCTION: Any = object()


class _JitWrapper(Generic[_P, _T]):
    """A `filter_jit`-compiled function. Call it like the original; see
    `filter_jit`."""

    __slots__ = (
        "_fun",
        "_cache",
        "_split",
        "_fun_arrays",
        "_layouts",
        "__dict__",
        "__weakref__",
    )

    def __init__(self, fun: Callable[_P, _T], cache: Cache):
        self._fun = fun
        self._cache = cache
        self._split, self._fun_arrays = cache.split_fun(fun)
        self._layouts = self._split.layouts
        self.__dict__.update(names_of(fun))

    @property
    def __wrapped__(self) -> Callable[_P, _T]:
        return self._fun

    def __call__(self, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if kwargs:
            args, kwargs = self._split.bind(self._fun, args, kwargs)  # type: ignore[assignment]
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        try:
            layout = self._layouts[treedef, tuple(map(type, leaves))]
            entry = layout.entries[layout.static_of(leaves)]
        except (KeyError, TypeError, ValueError):  # a miss: new or unhashable
            layout, entry = self._cache.lookup(
                self._split, treedef, leaves, (self._fun, args, kwargs)
            )
        try:
            out = entry.call(*self._fun_arrays, *layout.arrays_of(leaves))
        except (jax.errors.JaxRuntimeError, ValueError) as error:
            # JAX reports an exception raised in a host callback as either
            # (as `equinox.filter_jit` also expects).
            runtime_error = as_runtime_error(error)
            if runtime_error is error:
                raise
            raise runtime_error from None
        return out.plan.unflatten(out.arrays)

    def lower(self, /, *args: _P.args, **kwargs: _P.kwargs) -> Lowered:
        """Trace and lower for these arguments, without running.

        Returns:
            A `Lowered` with `.as_text()` (the StableHLO) and `.compile()`.
        """
        if kwargs:
            args, kwargs = self._bind(args, kwargs)  # type: ignore[assignment]
        tree = (self._fun, args, kwargs)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        layout, entry = self._cache.lookup(self._split, treedef, leaves, tree)
        arrays = (*self._fun_arrays, *layout.arrays_of(leaves))
        return lower(entry.jitted, arrays, self._cache.quiet, tree, self._bind)

    def _bind(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return self._split.bind(self._fun, args, kwargs)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return _BoundJit(self, instance)

    def __repr__(self) -> str:
        return f"filter_jit({self._fun!r})"


def _flatten_wrapper(wrapper: _JitWrapper) -> tuple[tuple[Any], Cache]:
    return (wrapper._fun,), wrapper._cache


def _flatten_wrapper_with_keys(wrapper: _JitWrapper) -> tuple[Any, Cache]:
    return ((jax.tree_util.GetAttrKey("__wrapped__"), wrapper._fun),), wrapper._cache


def _unflatten_wrapper(cache: Cache, children: Any) -> _JitWrapper:
    (fun,) = children
    return _JitWrapper(fun, cache)


jax.tree_util.register_pytree_with_keys(
    _JitWrapper, _flatten_wrapper_with_keys, _unflatten_wrapper, _flatten_wrapper
)


class _BoundJit:
    """A `filter_jit` function defined in a class body, bound to an instance:
    calls it with the instance first. A pytree (the instance is its child),
    like other bound methods of Modules."""

    __slots__ = ("__func__", "__self__")

    def __init__(self, func: _JitWrapper, instance: Any):
        self.__func__ = func
        self.__self__ = instance

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    def lower(self, /, *args: Any, **kwargs: Any) -> Lowered:
        return self.__func__.lower(self.__self__, *args, **kwargs)

    @property
    def __wrapped__(self) -> Any:
        return types.MethodType(self.__func__.__wrapped__, self.__self__)

    @property
    def __name__(self) -> str:
        return self.__func__.__name__

    def __repr__(self) -> str:
        return f"<bound {self.__func__!r} of {type(self.__self__).__name__}>"


jax.tree_util.register_pytree_with_keys(
    _BoundJit,
    lambda b: (((jax.tree_util.GetAttrKey("__self__"), b.__self__),), b.__func__),
    lambda func, children: _BoundJit(func, children[0]),
    lambda b: ((b.__self__,), b.__func__),
)


@overload
def filter_jit(
    *, donate: Donate = "none", **jitkwargs: Any
) -> Callable[[Callable[_P, _T]], _JitWrapper[_P, _T]]: ...


@overload
def filter_jit(
    fun: Callable[_P, _T], *, donate: Donate = "none", **jitkwargs: Any
) -> _JitWrapper[_P, _T]: ...


def filter_jit(
    fun: Any = _NO_FUNCTION, *, donate: Donate = "none", **jitkwargs: Any
) -> Any:
    """Compile a function with `jax.jit`, tracing every array in its arguments
    and holding everything else static.

    Every JAX array, NumPy array and NumPy scalar (`pytreemod.is_array`) in the
    arguments, anywhere in their pytrees, is traced; every other leaf (Python
    numbers, strings, functions, ...) and every `field(static=True)` is static:
    hashed and compared by `==` to pick a compiled version, as `jax.jit`'s
    static arguments are. The function itself is split the same way (as in
    Equinox), so a Module's arrays are traced, not baked in, and an equal
    function wrapped anew (`filter_jit(filter_grad(f))` or
    `filter_jit(model.method)` in a loop) reuses the compiled versions.
    Keyword arguments are bound to the signature first, so `f(x, y)` and
    `f(x, y=y)` are one call. The same structure, static values, shapes,
    dtypes and JAX config contexts never trace twice. Outputs come back as
    the function returned them, non-array leaves included. Like `jax.jit`, a
    call returns as soon as the work is dispatched.

    Usable as `filter_jit(f)`, `@filter_jit` and `@filter_jit(donate=...)`, on
    functions, bound methods, callable Modules, and on methods in a class body.

    Args:
        fun: the function to compile.
        donate: which traced arrays to donate (let XLA reuse their memory for
            the outputs; a donated array cannot be used again):
            `"all"`: all of them, the function's own included; `"all-except-first"`:
            all but those of the first parameter (however it is passed); `"warn"`
            and `"warn-except-first"`: the same, but keep JAX's warnings about
            donations it could not use (the first two silence them); `"none"`
            (the default): none.
        **jitkwargs: passed on to `jax.jit` (e.g. `keep_unused=True`,
            `compiler_options=...`); not those filter_jit decides itself
            (`static_argnums`, `static_argnames`, `donate_argnums`,
            `in_shardings`, `out_shardings`).

    Returns:
        The compiled function; its `.lower(*args, **kwargs)` returns a lowered
        program with `.as_text()` and `.compile()`. With `fun` left out, a
        decorator.

    Raises:
        ValueError: if `donate` is not one of the values above, or
            `jitkwargs` holds one of the names above; at call time, if a static
            value is unhashable (its path is named).
        TypeError: if `fun` is not callable; at call time, if a static value
            cannot be compared with `==` (an array in a static field).

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @pytreemod.filter_jit
        ... def affine(x, scale, name):
        ...     return x * scale, name.upper()
        >>> affine(jnp.arange(3.0), 2.0, "out")
        (Array([0., 2., 4.], dtype=float32), 'OUT')
    """
    if any(name in jitkwargs for name in _FORBIDDEN_JITKWARGS):
        raise ValueError(_BAD_JITKWARGS)
    if donate not in _DONATE_MODES:
        raise ValueError(_BAD_DONATE.format(donate=donate))
    if fun is _NO_FUNCTION:
        return lambda f: filter_jit(f, donate=donate, **jitkwargs)
    if not callable(fun):
        raise TypeError(_NOT_CALLABLE.format(fun=fun, type_name=type(fun).__name__))
    if isinstance(fun, types.MethodType) and isinstance(fun.__self__, Module):
        # `model.__call__` (dunder methods are not wrapped by Module) is a plain
        # bound method, an opaque leaf; as a `BoundMethod` the model's arrays
        # are traced instead of baked in as constants.
        fun = BoundMethod(fun.__func__, fun.__self__)
    return _JitWrapper(fun, cache_for(fun, _DONATE_MODES[donate], jitkwargs))
