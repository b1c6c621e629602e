"""`filter_pmap`: run a function on several devices at once, like `jax.pmap`,
over arguments that may hold anything.

`jax.pmap` still works in JAX 0.10 but is legacy there (it is built on
`jax.jit` and `jax.shard_map`, and JAX recommends those); `filter_pmap` is kept
for Equinox compatibility. Unlike `jax.vmap`, `jax.pmap` compiles and caches,
so the non-array part of the arguments cannot simply be closed over: it is
made into a hashable key, and one `jax.pmap` object is kept per key (and per
choice of input axes and options) in a small cache. Every array leaf, mapped or
not, is a traced input; non-array outputs travel back through the pmapped
function's output treedef, inside a leafless `_Static` pytree, so that they
stay right when JAX reuses a compiled function.
"""

import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal, NamedTuple, overload

import jax
import jax.tree_util as jtu
import numpy as np

from .._module._is_array import is_array
from .._module._module import Module
from .._module._partial import Partial, module_update_wrapper
from ._caches import track
from ._jit_trace import quietly
from ._vmap import (
    check_mapped_leaves,
    check_no_keywords,
    check_options,
    if_array,
    join_output,
    named_in_axes,
    resolve_axes,
    split_output,
)

__all__ = ["filter_pmap"]

_MISSING: Any = object()
# The default `in_axes` and `out_axes`: split arrays along axis 0.
_ARRAYS_ON_AXIS_0 = if_array(0)
_DONATE_OPTIONS = ("all", "warn", "none")
# Fills the place of an array in the hashable key of the non-array leaves.
_ARRAY = object()
# How many compiled `jax.pmap` objects to keep.
_CACHE_SIZE = 64

_NOTHING_MAPPED = """\
`filter_pmap` has nothing to split over the devices: no input is mapped (every
leaf of the arguments got axis `None` from `in_axes`) and `axis_size` was not
given. Either
  1. map at least one array input, e.g. `in_axes=pytreemod.if_array(0)`; or
  2. pass `axis_size=n` to run the same computation on n devices."""

_UNHASHABLE_STATIC = """\
`filter_pmap` compiles once per value of the non-array parts of the function
and its arguments, so those must be hashable, but the leaf at `{path}` is an
unhashable `{type}`. Either
  1. make it hashable (a tuple instead of a list, a frozenset instead of a
     set); or
  2. make it an array, so that it is traced instead."""


@jtu.register_pytree_node_class
class _Static:
    """A pytree with no leaves whose treedef carries `value`: how non-array
    outputs get out of a compiled function."""

    def __init__(self, value: Any):
        self.value = value

    def tree_flatten(self) -> tuple[tuple, Any]:
        return (), self.value

    @classmethod
    def tree_unflatten(cls, value: Any, children: Sequence[Any]) -> "_Static":
        return cls(value)


class _Key(NamedTuple):
    """Everything about a call that is not an array: one compiled function
    per distinct key."""

    fun_def: Any
    args_def: Any
    static_leaves: tuple  # `_ARRAY` where the leaf is an array
    # Their types too, so that `1`, `1.0` and `True` (equal, with equal
    # hashes) do not share a compiled function.
    static_types: tuple
    out_axes_def: Any
    out_axes_leaves: tuple


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _pmapped(
    key: _Key,
    in_axes: tuple[int | None, ...],
    axis_name: Hashable | None,
    axis_size: int | None,
    donate: str,
    pmapkwargs: tuple[tuple[str, Any], ...],
) -> Callable[..., Any]:
    """Build the `jax.pmap` of the function described by `key`; it takes the
    array leaves (and a dummy mapped array) and returns (mapped outputs,
    unmapped output arrays, `_Static` of the rest)."""
    array_index = [i for i, x in enumerate(key.static_leaves) if x is _ARRAY]
    num_fun_leaves = key.fun_def.num_leaves
    out_axes = key.out_axes_def.unflatten(key.out_axes_leaves)

    def body(arrays: list[Any], dummy: Any) -> tuple[list, list, _Static]:
        del dummy
        leaves = list(key.static_leaves)
        for i, x in zip(array_index, arrays, strict=True):
            leaves[i] = x
        fun = key.fun_def.unflatten(leaves[:num_fun_leaves])
        args = key.args_def.unflatten(leaves[num_fun_leaves:])
        mapped, unmapped, *rest = split_output(fun(*args), out_axes)
        return mapped, unmapped, _Static(rest)

    return jax.pmap(
        body,
        axis_name=axis_name,
        in_axes=(list(in_axes), 0),
        out_axes=(0, None, None),
        axis_size=axis_size,
        **dict(pmapkwargs),
        donate_argnums=() if donate == "none" else (0,),
    )


class _PmapCache:
    """Lets `pytreemod.clear_caches()` empty the cache of `jax.pmap` objects."""

    def clear(self) -> None:
        _pmapped.cache_clear()


_PMAP_CACHE = _PmapCache()
track(_PMAP_CACHE)


def _hashable_key(
    fun: Any, args: tuple, out_axes: Any, leaves: list[Any], num_fun_leaves: int
) -> _Key:
    static_leaves = tuple(_ARRAY if is_array(x) else x for x in leaves)
    out_axes_leaves, out_axes_def = jtu.tree_flatten(
        out_axes, is_leaf=lambda x: x is None
    )
    key = _Key(
        jtu.tree_structure(fun),
        jtu.tree_structure(args),
        static_leaves,
        tuple(map(type, static_leaves)),
        out_axes_def,
        tuple(out_axes_leaves),
    )
    try:
        hash(key)
    except TypeError:
        _raise_unhashable(fun, args, leaves, num_fun_leaves)
        raise
    return key


def _raise_unhashable(
    fun: Any, args: tuple, leaves: list[Any], num_fun_leaves: int
) -> None:
    for index, leaf in enumerate(leaves):
        if is_array(leaf):
            continue
        try:
            hash(leaf)
        except TypeError:
            if index < num_fun_leaves:
                path, _ = jtu.tree_flatten_with_path(fun)[0][index]
                where = "fun" + jtu.keystr(path)
            else:
                path, _ = jtu.tree_flatten_with_path(args)[0][index - num_fun_leaves]
                where = "args" + jtu.keystr(path)
            raise TypeError(
                _UNHASHABLE_STATIC.format(path=where, type=type(leaf).__name__)
            ) from None


class PmapCompiled:
    """A `filter_pmap` function compiled ahead of time for one set of
    arguments: call it with arguments of the same structure, static values,
    shapes and dtypes."""

    def __init__(self, compiled: Any, wrapper: "_PmapWrapper"):
        self._compiled = compiled
        self._wrapper = wrapper

    def as_text(self) -> str | None:
        """The compiled program as text, as `jax.stages.Compiled.as_text`."""
        return self._compiled.as_text()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _, inputs = self._wrapper._prepare(args, kwargs)
        mapped, unmapped, static = self._compiled(*inputs)
        return join_output(mapped, unmapped, *static.value)


class PmapLowered:
    """A `filter_pmap` function lowered for one set of arguments: what
    `filter_pmap(f).lower(*args)` returns."""

    def __init__(self, lowered: Any, wrapper: "_PmapWrapper"):
        self._lowered = lowered
        self._wrapper = wrapper

    def as_text(self, *args: Any, **kwargs: Any) -> str:
        """The lowered program as text; arguments as for
        `jax.stages.Lowered.as_text`."""
        return self._lowered.as_text(*args, **kwargs)

    def compile(self, *args: Any, **kwargs: Any) -> PmapCompiled:
        """Compile the lowered program; arguments as for
        `jax.stages.Lowered.compile`."""
        return PmapCompiled(self._lowered.compile(*args, **kwargs), self._wrapper)


def _hashable_options(pmapkwargs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """`jax.pmap`'s options as a hashable key (sequences such as `devices`
    become tuples)."""
    return tuple(
        (name, tuple(value) if isinstance(value, list) else value)
        for name, value in sorted(pmapkwargs.items())
    )


class _PmapWrapper(Module):
    """What `filter_pmap(fun)` returns: a Module holding `fun` and the
    options."""

    fun: Callable[..., Any]
    in_axes: Any
    out_axes: Any
    axis_name: Hashable | None
    axis_size: int | None
    donate: str
    pmapkwargs: tuple[tuple[str, Any], ...]

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.fun

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pmapped, inputs = self._prepare(args, kwargs)
        call = quietly(pmapped) if self.donate == "all" else pmapped
        mapped, unmapped, static = call(*inputs)
        return join_output(mapped, unmapped, *static.value)

    def lower(self, *args: Any, **kwargs: Any) -> "PmapLowered":
        """Trace and lower for these arguments, without running.

        Returns:
            A `PmapLowered` with `.as_text()` and `.compile()`; the compiled
            function is called with arguments like these.
        """
        pmapped, inputs = self._prepare(args, kwargs)
        lower = quietly(pmapped.lower) if self.donate == "all" else pmapped.lower
        return PmapLowered(lower(*inputs), self)

    def _prepare(
        self, args: tuple, kwargs: dict
    ) -> tuple[Callable[..., Any], tuple[list[Any], Any]]:
        """The `jax.pmap` object for this call and its inputs: the array
        leaves of the function and arguments, and a dummy mapped array."""
        check_no_keywords(kwargs, "filter_pmap")
        in_axes = named_in_axes(self.fun, self.in_axes, args)
        arg_leaves = jtu.tree_leaves(args)
        arg_axes = resolve_axes(in_axes, args, "in_axes", "args")
        size = check_mapped_leaves(
            args, arg_leaves, arg_axes, self.axis_size, "filter_pmap"
        )
        if size is None:
            raise ValueError(_NOTHING_MAPPED)
        fun_leaves = jtu.tree_leaves(self.fun)
        leaves = fun_leaves + arg_leaves
        axes = [None] * len(fun_leaves) + arg_axes
        key = _hashable_key(self.fun, args, self.out_axes, leaves, len(fun_leaves))
        arrays = [x for x in leaves if is_array(x)]
        array_axes = tuple(a for x, a in zip(leaves, axes, strict=True) if is_array(x))
        options = (self.axis_name, self.axis_size, self.donate, self.pmapkwargs)
        pmapped = _pmapped(key, array_axes, *options)
        # `jax.pmap` needs a mapped input to know the size when nothing else is.
        return pmapped, (arrays, np.zeros((size,), np.int8))

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # Used as a method decorator: bind the instance as the first argument.
        if instance is None:
            return self
        return Partial(self, instance)


@overload
def filter_pmap(
    *,
    in_axes: Any = _ARRAYS_ON_AXIS_0,
    out_axes: Any = _ARRAYS_ON_AXIS_0,
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    donate: Literal["all", "warn", "none"] = "none",
    **pmapkwargs: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


@overload
def filter_pmap(
    fun: Callable[..., Any],
    *,
    in_axes: Any = _ARRAYS_ON_AXIS_0,
    out_axes: Any = _ARRAYS_ON_AXIS_0,
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    donate: Literal["all", "warn", "none"] = "none",
    **pmapkwargs: Any,
) -> Callable[..., Any]: ...


def filter_pmap(
    fun: Any = _MISSING,
    *,
    in_axes: Any = _ARRAYS_ON_AXIS_0,
    out_axes: Any = _ARRAYS_ON_AXIS_0,
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    donate: Literal["all", "warn", "none"] = "none",
    **pmapkwargs: Any,
) -> Any:
    """Run `fun` in parallel on several devices, like `jax.pmap`, but accepting
    any Python objects as arguments and outputs.

    `jax.pmap` is legacy in JAX 0.10 (JAX now recommends `jax.jit` with sharded
    inputs, see `filter_shard`, or `jax.shard_map`); `filter_pmap` remains for
    code written against Equinox. By default every array is split over the
    devices along axis 0 and everything else is passed to every device
    unchanged; non-array parts of the arguments are static (hashed, and a new
    value compiles again).

    Args:
        fun: the function, called as `fun(*args)` (no keyword arguments).
            Leave it out to use `filter_pmap(...)` as a decorator.
        in_axes: as for `filter_vmap`: a prefix of the positional arguments
            (or a dict from argument names to specs) of ints, `None`, or
            callables `leaf -> int | None`.
        out_axes: the same for the outputs.
        axis_name: a name for the device axis, for collectives such as
            `jax.lax.psum(x, axis_name)`.
        axis_size: the number of devices; needed only when no input is mapped.
        donate: `"all"` to donate every input array's buffer (and hide JAX's
            warning about buffers it could not use), `"warn"` to donate but
            keep that warning, `"none"` (the default) to donate nothing.
        **pmapkwargs: passed on to `jax.pmap` (e.g. `devices=`, `backend=`).

    Returns:
        The parallelised function (a Module).

    Raises:
        ValueError: as `filter_vmap`, and if nothing is mapped and no
            `axis_size` is given.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> n = jax.local_device_count()
        >>> @pytreemod.filter_pmap(axis_name="d")
        ... def total(x, how):
        ...     return jax.lax.psum(x, "d") if how == "sum" else x
        >>> total(jnp.ones(n), "sum").tolist() == [float(n)] * n
        True
    """
    if fun is _MISSING:
        return functools.partial(
            filter_pmap,
            in_axes=in_axes,
            out_axes=out_axes,
            axis_name=axis_name,
            axis_size=axis_size,
            donate=donate,
            **pmapkwargs,
        )
    check_options(fun, in_axes, out_axes, axis_name, axis_size, "filter_pmap")
    if donate not in _DONATE_OPTIONS:
        raise ValueError(
            f"`donate` must be one of 'all', 'warn', 'none'; got {donate!r}"
        )
    wrapper = _PmapWrapper(
        fun,
        in_axes,
        out_axes,
        axis_name,
        axis_size,
        donate,
        _hashable_options(pmapkwargs),
    )
    return module_update_wrapper(wrapper)
