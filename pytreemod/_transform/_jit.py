"""`filter_jit`: `jax.jit` for functions of any pytrees, with a per-call cost
close to `jax.jit` on the bare arrays.

The function is split into arrays and static rest once, when `filter_jit` is
applied (as Equinox does). The call path (see README.md in this folder):

    leaves, treedef = tree_flatten((args, kwargs))             # C++
    layout = layouts[treedef, tuple(map(type, leaves))]        # where arrays sit
    entry = layout.entries[layout.static_of(leaves)]           # by static values
    out = entry.call(*fun_arrays, *layout.arrays_of(leaves))   # jax.jit fast path
    return entry.out_plan.unflatten(out)                       # C++

`static_of` and `arrays_of` are `operator.itemgetter`s built when the layout
is first seen. Each entry owns a `jax.jit` of a function over the array
leaves only, so JAX's C++ dispatch checks their shapes and dtypes (and
retraces on new ones by itself). The non-array outputs of a trace are baked
into the output treedef as node data (`_Baked`), so rebuilding the output is
one unflatten. Everything else (donation, names, the output plan, retrace
explanations) happens once per layout, entry or trace, never per call.
"""

import threading
import types
import warnings
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar, overload

import jax
from typing_extensions import ParamSpec

from .._module._module import BoundMethod, Module
from ._caches import track
from ._first_arguments import FirstArguments
from ._retrace import TraceHistory, TraceRecord, describe_difference, top_level_parts
from ._runtime_error import as_runtime_error
from ._static import ARRAY, EqKey, find_bad_static, getter, kinds_of, merge_leaves

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
    "`donate` must be one of 'all', 'all-except-first', 'warn', "
    "'warn-except-first', 'none'; got {donate!r}"
)

_NOT_CALLABLE = (
    "`filter_jit` needs a callable (a function, a bound method or a callable "
    "Module); got {fun!r} of type {type_name}. To use it as a decorator with "
    "options, write `@filter_jit(donate=...)`."
)

_BAD_STATIC = """\
`{path}` is a static value of this call ({reason}), so filter_jit cannot \
compare it with `==` to decide whether to reuse a compiled function. Static \
values are the non-array leaves and the `field(static=True)` fields. Either
  1. make it a regular field (not `static=True`), so that its arrays are \
traced, or
  2. convert it to a hashable value, e.g. a tuple: `tuple(table.tolist())`, if \
it really is configuration."""

_COMPILED_MISMATCH = """\
This compiled function was lowered for other arguments. Compared with those:
{lines}
Call it with arguments of the same structure, static values, shapes and \
dtypes, or lower and compile again: `filter_jit(f).lower(...).compile()`."""

_SILENCED_DONATION = "Some donated buffers were not usable"

# `filter_jit(donate=...)` without a function: return a decorator.
_NO_FUNCTION: Any = object()


class _Baked:
    """A non-array output leaf, held as node data in the output treedef so
    that unflattening gives back the value itself."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


jax.tree_util.register_pytree_node(
    _Baked, lambda baked: ((), baked.value), lambda value, _: value
)


class _SlowPlan:
    """Rebuilds an output whose nodes cannot hold `_Baked` children: keeps the
    output treedef and its non-array leaves apart and merges per call."""

    __slots__ = ("treedef", "kinds", "static")

    def __init__(self, treedef: Any, kinds: tuple[Any, ...], static: tuple[Any, ...]):
        self.treedef = treedef
        self.kinds = kinds
        self.static = static

    def unflatten(self, dynamic: Any) -> Any:
        return self.treedef.unflatten(
            merge_leaves(self.kinds, self.static, tuple(dynamic))
        )


def _same_value(a: Any, b: Any) -> bool:
    return a is b or (type(a) is type(b) and bool(a == b))


def _same_plan(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an output value without a usable `==`: assume it changed
        return False


def _avals_key(arrays: Any) -> tuple[Any, ...]:
    avals = map(jax.typeof, arrays)
    return tuple((aval.shape, aval.dtype, aval.weak_type) for aval in avals)


class _Entry:
    """One cache entry: the compiled function for one argument structure and
    one set of static values, and how to rebuild its outputs."""

    __slots__ = ("call", "jitted", "out_plan", "first_plan", "plans", "lock")

    def __init__(self) -> None:
        self.call: Callable[..., Any] = _unset
        self.jitted: Any = None
        # The output plan when it is the same for every trace of this entry;
        # `None` once two traces disagree, and `plans` (keyed by the traced
        # leaves' shapes and dtypes) is used instead.
        self.out_plan: Any = None
        self.first_plan: Any = None
        self.plans: dict[tuple[Any, ...], Any] = {}
        self.lock = threading.Lock()

    def record_output(self, avals: tuple[Any, ...], plan: Any) -> None:
        with self.lock:
            self.plans[avals] = plan
            if self.first_plan is None:
                self.first_plan = self.out_plan = plan
            elif self.out_plan is not None and not _same_plan(self.first_plan, plan):
                self.out_plan = None

    def rebuild(self, arrays: tuple[Any, ...], out: Any) -> Any:
        return self.plans[_avals_key(arrays)].unflatten(out)


def _unset(*args: Any) -> Any:  # pragma: no cover - replaced at construction
    raise AssertionError("cache entry used before it was built")


def _output_plan(out: Any) -> tuple[list[Any], Any]:
    """Split a traced function's output into its arrays and a plan that
    rebuilds the output from them."""
    leaves, treedef = jax.tree_util.tree_flatten(out)
    kinds, _ = kinds_of(leaves)
    arrays = [leaf for leaf, kind in zip(leaves, kinds, strict=True) if kind is ARRAY]
    if len(arrays) == len(leaves):
        return arrays, treedef
    baked = [
        leaf if kind is ARRAY else _Baked(leaf)
        for leaf, kind in zip(leaves, kinds, strict=True)
    ]
    try:
        plan = jax.tree_util.tree_structure(treedef.unflatten(baked))
    except Exception:  # a node that rejects placeholder children
        static = tuple(
            leaf for leaf, kind in zip(leaves, kinds, strict=True) if kind is not ARRAY
        )
        plan = _SlowPlan(treedef, kinds, static)
    return arrays, plan


def _quietly(jitted: Callable[..., Any]) -> Callable[..., Any]:
    """Call `jitted` with JAX's warning about unusable donations silenced
    (donate='all' and 'all-except-first')."""

    def call(*arrays: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SILENCED_DONATION)
            return jitted(*arrays)

    return call


class _Layout:
    """Where the array and static leaves sit, for one treedef and one kind per
    leaf, and the compiled entries for this layout, keyed by static values."""

    __slots__ = ("treedef", "kinds", "static_of", "arrays_of", "entries")

    def __init__(self, treedef: Any, kinds: tuple[Any, ...]):
        self.treedef = treedef
        self.kinds = kinds
        arrays = [i for i, kind in enumerate(kinds) if kind is ARRAY]
        static = [i for i, kind in enumerate(kinds) if kind is not ARRAY]
        self.static_of = getter(static)
        self.arrays_of = getter(arrays)
        self.entries: dict[Any, _Entry] = {}


class _FunSplit:
    """The function's own leaves, split into arrays and static rest, and the
    layouts of the arguments it has been called with. Shared by the pytree
    copies of a `filter_jit` function whose functions have this structure and
    these static values."""

    __slots__ = ("treedef", "kinds", "static", "num_arrays", "layouts", "by_kinds")

    def __init__(self, treedef: Any, kinds: tuple[Any, ...], static: tuple[Any, ...]):
        self.treedef = treedef
        self.kinds = kinds
        self.static = static
        self.num_arrays = sum(kind is ARRAY for kind in kinds)
        # (treedef, leaf types) -> layout; several type tuples (a NumPy or a
        # JAX array in one place) can share a layout, found by kinds.
        self.layouts: dict[tuple[Any, Any], _Layout] = {}
        self.by_kinds: dict[tuple[Any, Any], _Layout] = {}


class _Cache:
    """Everything a `filter_jit` function keeps between calls. Shared by the
    function and its pytree copies (which may differ in the function's
    leaves)."""

    __slots__ = (
        "splits",
        "lock",
        "history",
        "names",
        "donate_first",
        "donate_rest",
        "quiet",
        "firsts",
        "__weakref__",
    )

    def __init__(self, fun: Any, donate: str):
        self.splits: dict[Any, _FunSplit] = {}
        self.firsts = FirstArguments()
        self.lock = threading.Lock()
        self.donate_first, self.donate_rest, self.quiet = _DONATE_MODES[donate]
        self.names = _names_of(fun)
        self.history = TraceHistory(self.names["__name__"])
        track(self)

    def clear(self) -> None:
        with self.lock:
            for split in self.splits.values():
                split.layouts.clear()
                split.by_kinds.clear()
        self.firsts.clear()
        self.history.clear()

    def split_fun(self, fun: Any) -> tuple[_FunSplit, tuple[Any, ...]]:
        """Split the function into its arrays and a shared `_FunSplit`."""
        _check_static((fun, (), {}))
        leaves, treedef = jax.tree_util.tree_flatten(fun)
        kinds, _ = kinds_of(leaves)
        arrays = tuple(
            leaf for leaf, k in zip(leaves, kinds, strict=True) if k is ARRAY
        )
        static = tuple(
            leaf for leaf, k in zip(leaves, kinds, strict=True) if k is not ARRAY
        )
        key: Any = (treedef, kinds, static)
        try:
            hash(key)
        except TypeError:
            key = (treedef, kinds, EqKey(static))
        with self.lock:
            split = self.splits.get(key)
            if split is None:
                split = self.splits[key] = _FunSplit(treedef, kinds, static)
        return split, arrays

    def lookup(
        self, split: _FunSplit, treedef: Any, leaves: list[Any], tree: tuple
    ) -> tuple[_Layout, _Entry]:
        """The slow lookup, for a call that missed or whose static values
        could not be hashed or compared: find or build the layout and entry
        (under the lock), or explain what is wrong with the static values.
        `treedef` and `leaves` are those of `(args, kwargs)`; `tree` is
        `(fun, args, kwargs)`."""
        try:
            return self._lookup(split, treedef, leaves, tree)
        except _BadStaticError:
            raise
        except (TypeError, ValueError) as error:
            bad = _bad_static_error(*tree)
            if bad is not None:
                raise bad from error
            raise

    def _lookup(
        self, split: _FunSplit, treedef: Any, leaves: list[Any], tree: tuple
    ) -> tuple[_Layout, _Entry]:
        types_key = (treedef, tuple(map(type, leaves)))
        layout = split.layouts.get(types_key)
        if layout is None:
            # Checked before anything is stored: a treedef holding an array
            # would break every later comparison with it.
            _check_static(tree)
            kinds, stable = kinds_of(leaves)
            with self.lock:
                layout = split.by_kinds.get((treedef, kinds))
                if layout is None:
                    layout = split.by_kinds[treedef, kinds] = _Layout(treedef, kinds)
                if stable:
                    split.layouts[types_key] = layout
        static = layout.static_of(leaves)
        key: Any = static
        try:
            hash(static)
        except TypeError:
            key = EqKey(static)
        entry = layout.entries.get(key)
        if entry is None:
            _check_static(tree)
            with self.lock:
                entry = layout.entries.get(key)
                if entry is None:
                    entry = self._new_entry(split, layout, static)
                    layout.entries[key] = entry
        return layout, entry

    def _donate_argnums(self, split: _FunSplit, layout: _Layout) -> tuple[int, ...]:
        if not (self.donate_first or self.donate_rest):
            return ()
        args_def, _ = layout.treedef.children()
        arg_defs = args_def.children()
        end_first = arg_defs[0].num_leaves if arg_defs else 0
        donate = [self.donate_rest] * split.num_arrays
        donate += [
            self.donate_first if i < end_first else self.donate_rest
            for i, kind in enumerate(layout.kinds)
            if kind is ARRAY
        ]
        return tuple(n for n, yes in enumerate(donate) if yes)

    def _new_entry(
        self, split: _FunSplit, layout: _Layout, static: tuple[Any, ...]
    ) -> _Entry:
        entry = _Entry()
        history = self.history
        fun_def, fun_kinds, fun_static = split.treedef, split.kinds, split.static
        num_fun = split.num_arrays
        treedef, kinds = layout.treedef, layout.kinds

        def traced(*arrays: Any) -> list[Any]:
            fun_leaves = merge_leaves(fun_kinds, fun_static, arrays[:num_fun])
            fun = fun_def.unflatten(fun_leaves)
            args, kwargs = treedef.unflatten(
                merge_leaves(kinds, static, arrays[num_fun:])
            )
            if not jax.config.jax_disable_jit:  # else this runs on every call
                tree = (fun, args, kwargs)
                record = TraceRecord(
                    jax.tree_util.tree_structure(tree),
                    fun_kinds + kinds,
                    fun_static + static,
                    tuple(map(jax.typeof, arrays)),
                )
                history.on_trace(record, tree)
            out_arrays, plan = _output_plan(fun(*args, **kwargs))
            entry.record_output(_avals_key(arrays), plan)
            return out_arrays

        traced.__name__ = self.names["__name__"]
        traced.__qualname__ = self.names["__qualname__"]
        donate = self._donate_argnums(split, layout)
        entry.jitted = jax.jit(traced, donate_argnums=donate)
        entry.call = _quietly(entry.jitted) if self.quiet and donate else entry.jitted
        return entry


def _names_of(fun: Any) -> dict[str, Any]:
    target = getattr(fun, "__func__", fun)
    name = getattr(target, "__name__", None) or type(fun).__name__
    names = {
        "__name__": name,
        "__qualname__": getattr(target, "__qualname__", name),
        "__module__": getattr(target, "__module__", type(fun).__module__),
    }
    doc = getattr(fun, "__doc__", None)
    if doc is not None:
        names["__doc__"] = doc
    return names


class _BadStaticError(TypeError):
    """A static value that cannot be compared; the message says which."""


def _check_static(tree: tuple[Any, Any, Any]) -> None:
    bad = _bad_static_error(*tree)
    if bad is not None:
        raise bad


def _bad_static_error(fun: Any, args: tuple, kwargs: dict) -> TypeError | None:
    """The error for the first static value in `(fun, args, kwargs)` that
    cannot be compared with `==`, if there is one."""
    for name, subtree in top_level_parts(fun, args, kwargs):
        found = find_bad_static(subtree, name)
        if found is not None:
            path, reason = found
            return _BadStaticError(_BAD_STATIC.format(path=path, reason=reason))
    return None


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

    def __init__(self, fun: Callable[_P, _T], cache: _Cache):
        self._fun = fun
        self._cache = cache
        self._split, self._fun_arrays = cache.split_fun(fun)
        self._layouts = self._split.layouts
        self.__dict__.update(cache.names)

    @property
    def __wrapped__(self) -> Callable[_P, _T]:
        return self._fun

    def __call__(self, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        firsts = self._cache.firsts
        flat = firsts.flats.get(id(args[0])) if args else None
        if flat is not None and flat.ref() is args[0]:
            rest, rest_def = jax.tree_util.tree_flatten((args[1:], kwargs))
            leaves = [*flat.leaves, *rest]
            key: tuple = (flat.treedef, rest_def, tuple(map(type, leaves)))
        else:
            leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
            key = (treedef, tuple(map(type, leaves)))
            if args and isinstance(args[0], Module):
                firsts.note(args[0])
        try:
            layout = self._layouts[key]
            entry = layout.entries[layout.static_of(leaves)]
        except (KeyError, TypeError, ValueError):
            layout, entry = self._lookup(key, leaves, args, kwargs)
        arrays = (*self._fun_arrays, *layout.arrays_of(leaves))
        try:
            out = entry.call(*arrays)
        except jax.errors.JaxRuntimeError as error:
            raise as_runtime_error(error) from None
        plan = entry.out_plan
        if plan is None:
            return entry.rebuild(arrays, out)
        return plan.unflatten(out)

    def _lookup(
        self, key: tuple, leaves: list[Any], args: tuple, kwargs: dict
    ) -> tuple[_Layout, _Entry]:
        if len(key) == 2:
            treedef = key[0]
        else:  # the first argument's flatten was remembered
            treedef = jax.tree_util.tree_structure((args, kwargs))
        layout, entry = self._cache.lookup(
            self._split, treedef, leaves, (self._fun, args, kwargs)
        )
        if len(key) == 3 and self._layouts.get((treedef, key[2])) is layout:
            self._layouts[key] = layout
        return layout, entry

    def lower(self, /, *args: _P.args, **kwargs: _P.kwargs) -> "Lowered":
        """Trace and lower for these arguments, without running.

        Returns:
            A `Lowered` with `.as_text()` (the StableHLO) and `.compile()`.
        """
        tree = (self._fun, args, kwargs)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        layout, entry = self._cache.lookup(self._split, treedef, leaves, tree)
        arrays = (*self._fun_arrays, *layout.arrays_of(leaves))
        with warnings.catch_warnings():
            if self._cache.quiet:
                warnings.filterwarnings("ignore", message=_SILENCED_DONATION)
            lowered = entry.jitted.lower(*arrays)
        return Lowered(lowered, self._fun, _record(tree), entry)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return _BoundJit(self, instance)

    def __repr__(self) -> str:
        return f"filter_jit({self._fun!r})"


def _flatten_wrapper(wrapper: _JitWrapper) -> tuple[tuple[Any], _Cache]:
    return (wrapper._fun,), wrapper._cache


def _flatten_wrapper_with_keys(wrapper: _JitWrapper) -> tuple[Any, _Cache]:
    return ((jax.tree_util.GetAttrKey("__wrapped__"), wrapper._fun),), wrapper._cache


def _unflatten_wrapper(cache: _Cache, children: Any) -> _JitWrapper:
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

    def lower(self, /, *args: Any, **kwargs: Any) -> "Lowered":
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


class Lowered:
    """A `filter_jit` function lowered for one set of arguments: what
    `filter_jit(f).lower(*args, **kwargs)` returns."""

    def __init__(self, lowered: Any, fun: Any, record: TraceRecord, entry: _Entry):
        self._lowered = lowered
        self._fun = fun
        self._record = record
        self._entry = entry

    def as_text(self, *args: Any, **kwargs: Any) -> str:
        """The lowered program as text (StableHLO by default); arguments as for
        `jax.stages.Lowered.as_text`."""
        return self._lowered.as_text(*args, **kwargs)

    def compile(self, *args: Any, **kwargs: Any) -> "Compiled":
        """Compile the lowered program; arguments as for
        `jax.stages.Lowered.compile`."""
        return Compiled(
            self._lowered.compile(*args, **kwargs),
            self._fun,
            self._record,
            self._entry,
        )


class Compiled:
    """A `filter_jit` function compiled for one set of arguments. Call it with
    arguments of the same structure, static values, shapes and dtypes."""

    def __init__(self, compiled: Any, fun: Any, record: TraceRecord, entry: _Entry):
        self._compiled = compiled
        self._fun = fun
        self._record = record
        self._entry = entry

    def as_text(self) -> str | None:
        """The compiled program as text, as `jax.stages.Compiled.as_text`."""
        return self._compiled.as_text()

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        tree = (self._fun, args, kwargs)
        record = _record(tree)
        if not _matches(self._record, record):
            lines = describe_difference(self._record, record, tree)
            raise TypeError(
                _COMPILED_MISMATCH.format(lines="\n".join("  " + x for x in lines))
            )
        leaves = jax.tree_util.tree_leaves(tree)
        arrays = [
            leaf for leaf, k in zip(leaves, record.kinds, strict=True) if k is ARRAY
        ]
        out = self._compiled(*arrays)
        plan = self._entry.plans.get(_avals_key(arrays), self._entry.first_plan)
        return plan.unflatten(out)


def _record(tree: tuple[Any, Any, Any]) -> TraceRecord:
    """What a call with `tree = (fun, args, kwargs)` would be traced with."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    kinds, _ = kinds_of(leaves)
    pairs = list(zip(leaves, kinds, strict=True))
    static = tuple(leaf for leaf, kind in pairs if kind is not ARRAY)
    avals = tuple(jax.typeof(leaf) for leaf, kind in pairs if kind is ARRAY)
    return TraceRecord(treedef, kinds, static, avals)


def _matches(old: TraceRecord, new: TraceRecord) -> bool:
    try:
        same_static = (
            old.treedef == new.treedef
            and old.kinds == new.kinds
            and all(map(_same_value, old.static, new.static))
        )
    except Exception:  # values whose `==` fails cannot match
        return False
    return same_static and all(
        a.shape == b.shape and a.dtype == b.dtype
        for a, b in zip(old.avals, new.avals, strict=True)
    )


@overload
def filter_jit(
    *, donate: Donate = "none"
) -> Callable[[Callable[_P, _T]], _JitWrapper[_P, _T]]: ...


@overload
def filter_jit(
    fun: Callable[_P, _T], /, *, donate: Donate = "none"
) -> _JitWrapper[_P, _T]: ...


def filter_jit(fun: Any = _NO_FUNCTION, /, *, donate: Donate = "none") -> Any:
    """Compile a function with `jax.jit`, tracing every array in its arguments
    and holding everything else static.

    Every JAX array, NumPy array and NumPy scalar (`pytreemod.is_array`) in the
    arguments, anywhere in their pytrees, is traced; every other leaf (Python
    numbers, strings, functions, ...) and every `field(static=True)` is static:
    compared by `==` (and hashed where it can be) to pick a compiled version.
    The function is split the same way, once, when `filter_jit` is applied
    (as in Equinox), so a Module's arrays are traced, not baked in. The same
    structure, static values, shapes and dtypes never trace twice. Outputs
    come back as the function returned them, non-array leaves included.
    Like `jax.jit`, a call returns as soon as the work is dispatched.

    Usable as `filter_jit(f)`, `@filter_jit` and `@filter_jit(donate=...)`, on
    functions, bound methods, callable Modules, and on methods in a class body.

    Args:
        fun: the function to compile.
        donate: which traced arrays to donate (let XLA reuse their memory for
            the outputs; a donated array cannot be used again):
            `"all"`: all of them, the function's own included; `"all-except-first"`:
            all but those of the first argument; `"warn"` and `"warn-except-first"`:
            the same, but keep JAX's warnings about donations it could not use
            (the first two silence them); `"none"` (the default): none.

    Returns:
        The compiled function; its `.lower(*args, **kwargs)` returns a lowered
        program with `.as_text()` and `.compile()`. With `fun` left out, a
        decorator.

    Raises:
        ValueError: if `donate` is not one of the values above.
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
    if donate not in _DONATE_MODES:
        raise ValueError(_BAD_DONATE.format(donate=donate))
    if fun is _NO_FUNCTION:
        return lambda f: filter_jit(f, donate=donate)
    if not callable(fun):
        raise TypeError(_NOT_CALLABLE.format(fun=fun, type_name=type(fun).__name__))
    if isinstance(fun, types.MethodType) and isinstance(fun.__self__, Module):
        # `model.__call__` (dunder methods are not wrapped by Module) is a plain
        # bound method, an opaque leaf; as a `BoundMethod` the model's arrays
        # are traced instead of baked in as constants.
        fun = BoundMethod(fun.__func__, fun.__self__)
    return _JitWrapper(fun, _Cache(fun, donate))
