"""Where `filter_jit` finds the compiled function for a call.

    registry        owner function, options  -> Cache
    Cache.fun_layouts  (fun treedef, leaf types) -> Layout of the function
    Cache.splits    (function Layout, static leaves) -> FunSplit
    FunSplit.layouts   (treedef, leaf types)  -> Layout of (args, kwargs)
    Layout.entries  static leaves           -> Entry: one `jax.jit` object

Every level is keyed on exactly what makes the level below it: a `Layout` is
a function of a treedef (node data included, compared with `==`) and the type
of each leaf (so `1`, `1.0` and `True` stay apart, and a NumPy and a JAX array
in one place share a layout); an `Entry` is a function of its layout and the
static leaves (hashable, compared with `==`, as `jax.jit` static arguments).
So a hit gives the same `jax.jit` object a fresh `filter_jit` would build.
What a trace decides (shapes, dtypes, config contexts, non-array outputs) is
only in that `jax.jit`'s own cache (see `_jit_trace.py`).

The registry shares one `Cache` between every `filter_jit` of one function
with the same options: `filter_jit(filter_grad(f))` or
`filter_jit(model.method)` built anew each step hit the entries of the first.
The wrapped callable is split like any argument (its arrays traced, its
static part a key). The owner is the plain function found by unwrapping
(`__wrapped__`, `__func__`, `functools.partial`); the registry holds it weakly
and the cache refers to it only through a weak reference (`OWNER` stands for
it among static leaves), so a function that the user drops goes away with its
compiled versions. Callables with no plain function inside share a bounded
cache per options.
"""

import functools
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

import jax

from ._caches import track
from ._jit_key import Binder, snapshot, static_error
from ._jit_trace import OWNER, make_traced, quietly
from ._retrace import TraceHistory
from ._static import ARRAY, getter, kinds_of

__all__ = ["Cache", "Entry", "FunSplit", "Layout", "cache_for", "names_of"]

# How many function splits one cache keeps before it starts again (a bound on
# callables made anew each step with new static values; a dropped split only
# means a new trace).
_MAX_SPLITS = 512


class Entry:
    """One `jax.jit` object, for one layout and one tuple of static leaves."""

    __slots__ = ("jitted", "call")

    def __init__(self, jitted: Any, call: Callable[..., Any]):
        self.jitted = jitted
        self.call = call


class Layout:
    """Where the array and static leaves sit, for one treedef and one kind
    per leaf, and the entries for it, keyed by the static leaves."""

    __slots__ = ("treedef", "kinds", "static_of", "arrays_of", "num_arrays", "entries")

    def __init__(self, treedef: Any, kinds: tuple[Any, ...]):
        self.treedef = treedef
        self.kinds = kinds
        arrays = [i for i, k in enumerate(kinds) if k is ARRAY]
        self.static_of = getter([i for i, k in enumerate(kinds) if k is not ARRAY])
        self.arrays_of = getter(arrays)
        self.num_arrays = len(arrays)
        self.entries: dict[tuple[Any, ...], Entry] = {}


def _layout(
    layouts: dict[Any, Layout],
    by_kinds: dict[Any, Layout],
    treedef: Any,
    leaves: list[Any],
    lock: threading.Lock,
) -> Layout:
    """Find or make the layout of `leaves` with `treedef` (the slow path)."""
    types_key = (treedef, tuple(map(type, leaves)))
    layout = layouts.get(types_key)
    if layout is not None:
        return layout
    kinds, stable = kinds_of(leaves)
    stored = snapshot(treedef)
    with lock:
        layout = by_kinds.get((stored, kinds))
        if layout is None:
            layout = by_kinds[stored, kinds] = Layout(stored, kinds)
        if stable:  # no tracers: the types alone give the kinds
            layouts[stored, types_key[1]] = layout
    return layout


class FunSplit:
    """The wrapped function's static part (its layout and static leaves, the
    owner as `OWNER`), the layouts of the arguments it was called with, its
    signature binder and its trace history."""

    __slots__ = ("fun_layout", "static", "layouts", "by_kinds", "history", "binder")

    def __init__(self, fun_layout: Layout, static: tuple[Any, ...], name: str):
        self.fun_layout = fun_layout
        self.static = static
        self.layouts: dict[Any, Layout] = {}
        self.by_kinds: dict[Any, Layout] = {}
        self.history = TraceHistory(name)
        self.binder: Binder | None = None

    def bind(self, fun: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        binder = self.binder
        if binder is None:  # the signature follows from the static part
            binder = self.binder = Binder(fun)
        return binder.bind(args, kwargs)


class Cache:
    """Everything `filter_jit` keeps for one owner function and one set of
    options."""

    __slots__ = (
        "owner",
        "donate_first",
        "donate_rest",
        "quiet",
        "jitkwargs",
        "fun_layouts",
        "fun_by_kinds",
        "splits",
        "lock",
        "__weakref__",
    )

    def __init__(
        self,
        owner: Any,
        modes: tuple[bool, bool, bool],
        jitkwargs: dict[str, Any],
    ):
        self.owner: Callable[[], Any] = (
            (lambda: None) if owner is None else weakref.ref(owner)
        )
        self.donate_first, self.donate_rest, self.quiet = modes
        self.jitkwargs = jitkwargs
        self.fun_layouts: dict[Any, Layout] = {}
        self.fun_by_kinds: dict[Any, Layout] = {}
        self.splits: dict[Any, FunSplit] = {}
        self.lock = threading.Lock()
        track(self)

    def clear(self) -> None:
        """Forget every compiled version (live wrappers keep their splits, so
        those are emptied, not only dropped)."""
        with self.lock:
            for split in self.splits.values():
                split.layouts.clear()
                split.by_kinds.clear()
                split.history.clear()
            self.fun_layouts.clear()
            self.fun_by_kinds.clear()
            self.splits.clear()

    # -- the function ---------------------------------------------------------

    def split_fun(self, fun: Any) -> tuple[FunSplit, tuple[Any, ...]]:
        """The function's `FunSplit` and its arrays."""
        leaves, treedef = jax.tree_util.tree_flatten(fun)
        try:
            layout = self.fun_layouts[treedef, tuple(map(type, leaves))]
            key = (layout, self._without_owner(layout.static_of(leaves)))
            split = self.splits[key]
        except (KeyError, TypeError, ValueError):
            layout, split = self._new_split(fun, treedef, leaves)
        return split, layout.arrays_of(leaves)

    def _without_owner(self, static: tuple[Any, ...]) -> tuple[Any, ...]:
        owner = self.owner()
        if owner is None:
            return static
        return tuple(OWNER if leaf is owner else leaf for leaf in static)

    def _new_split(
        self, fun: Any, treedef: Any, leaves: list[Any]
    ) -> tuple[Layout, FunSplit]:
        error = static_error(fun, (), {})
        if error is not None:
            raise error
        layout = _layout(
            self.fun_layouts, self.fun_by_kinds, treedef, leaves, self.lock
        )
        static = self._without_owner(layout.static_of(leaves))
        with self.lock:
            split = self.splits.get((layout, static))
            if split is None:
                if len(self.splits) >= _MAX_SPLITS:
                    self.splits.clear()
                split = FunSplit(layout, static, names_of(fun)["__name__"])
                self.splits[layout, static] = split
        return layout, split

    # -- the arguments --------------------------------------------------------

    def lookup(
        self, split: FunSplit, treedef: Any, leaves: list[Any], tree: tuple
    ) -> tuple[Layout, Entry]:
        """The slow lookup, for a call that missed: check the static values,
        then find or make the layout and entry. `treedef` and `leaves` are
        those of `(args, kwargs)`; `tree` is `(fun, args, kwargs)`."""
        try:
            layout = split.layouts.get((treedef, tuple(map(type, leaves))))
        except (TypeError, ValueError):  # node data whose `==` fails: say which
            self._check(tree)
            raise
        checked = layout is None
        if checked:
            # Checked before anything is stored: a treedef holding an array
            # would break every later comparison with it.
            self._check(tree)
            layout = _layout(split.layouts, split.by_kinds, treedef, leaves, self.lock)
        static = layout.static_of(leaves)
        try:
            entry = layout.entries.get(static)
        except TypeError:  # an unhashable static leaf: say which
            self._check(tree)
            raise
        if entry is None:
            if not checked:
                self._check(tree)
            with self.lock:
                entry = layout.entries.get(static)
                if entry is None:
                    entry = layout.entries[static] = self._new_entry(
                        split, layout, static, tree[0]
                    )
        return layout, entry

    @staticmethod
    def _check(tree: tuple) -> None:
        error = static_error(*tree)
        if error is not None:
            raise error

    def _donate_argnums(self, split: FunSplit, layout: Layout) -> tuple[int, ...]:
        """Which arrays `jax.jit` may donate: the function's own and all but
        the first parameter's with `donate_rest`, the first parameter's with
        `donate_first`. Arguments are bound to the signature by now, so the
        first parameter is `args[0]` however the call named it."""
        if not (self.donate_first or self.donate_rest):
            return ()
        args_def, _ = layout.treedef.children()
        arg_defs = args_def.children()
        end_first = arg_defs[0].num_leaves if arg_defs else 0
        donate = [self.donate_rest] * split.fun_layout.num_arrays
        donate += [
            self.donate_first if i < end_first else self.donate_rest
            for i, kind in enumerate(layout.kinds)
            if kind is ARRAY
        ]
        return tuple(n for n, yes in enumerate(donate) if yes)

    def _new_entry(
        self, split: FunSplit, layout: Layout, static: tuple[Any, ...], fun: Any
    ) -> Entry:
        fun_layout = split.fun_layout
        fun_part = (
            fun_layout.treedef,
            fun_layout.kinds,
            split.static,
            fun_layout.num_arrays,
        )
        names = names_of(fun)
        traced = make_traced(
            fun_part,
            (layout.treedef, layout.kinds, static),
            self.owner,
            split.history,
            names,
        )
        donate = self._donate_argnums(split, layout)
        jitted = jax.jit(traced, donate_argnums=donate, **self.jitkwargs)
        call = quietly(jitted) if self.quiet and donate else jitted
        return Entry(jitted, call)


def names_of(fun: Any) -> dict[str, Any]:
    """`__name__`, `__qualname__`, `__module__` (and `__doc__`) of `fun`, for
    the wrapper and the compiled function."""
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


# --- the registry -------------------------------------------------------------


def _owner_of(fun: Any) -> types.FunctionType | None:
    """The plain function inside `fun`, found through `__wrapped__`,
    `__func__` and `functools.partial`, if there is one."""
    current = fun
    for _ in range(32):
        if type(current) is types.FunctionType:
            return current
        if isinstance(current, functools.partial):
            current = current.func
            continue
        inner = getattr(current, "__func__", None)
        if inner is None:
            inner = getattr(current, "__wrapped__", None)
        if inner is None:
            return None
        current = inner
    return None


# owner -> options -> Cache. Weak in the owner; the caches refer to it weakly.
_BY_OWNER: "weakref.WeakKeyDictionary[Any, dict[Any, Cache]]" = (
    weakref.WeakKeyDictionary()
)
# options -> Cache, for callables without a plain function inside.
_UNOWNED: dict[Any, Cache] = {}
_REGISTRY_LOCK = threading.Lock()


def cache_for(
    fun: Any, modes: tuple[bool, bool, bool], jitkwargs: dict[str, Any]
) -> Cache:
    """The cache shared by every `filter_jit` of `fun`'s owner with these
    options (donation modes and `jax.jit` keywords)."""
    try:
        options: Any = (modes, tuple(sorted(jitkwargs.items())))
        hash(options)
    except TypeError:  # unhashable jax.jit options: a cache of its own
        owner = _owner_of(fun)
        return Cache(owner, modes, jitkwargs)
    owner = _owner_of(fun)
    with _REGISTRY_LOCK:
        if owner is None:
            table = _UNOWNED
        else:
            table = _BY_OWNER.get(owner)
            if table is None:
                table = _BY_OWNER[owner] = {}
        cache = table.get(options)
        if cache is None:
            cache = table[options] = Cache(owner, modes, jitkwargs)
    return cache
