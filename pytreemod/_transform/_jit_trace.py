"""What `filter_jit` hands to `jax.jit`: a function of the array leaves only,
which rebuilds the call, runs it, and returns its output as a `Planned`: the
output arrays as children, and as node data a plan that rebuilds the output
from them (the output treedef, with every non-array leaf held as node data of
a leafless `Baked` node).

That is what keeps the non-array outputs right: they are node data of the
output treedef, which `jax.jit` stores with each trace in its own cache, keyed
on everything JAX keys on (shapes, dtypes, weak types, shardings and the
config contexts: x64, matmul precision, default device, ...). No table of
pytreemod's holds them, so none can hand back what a fresh trace would not.

Why a `Planned` and not the output itself: JAX's C++ dispatch (the fast
path) is used only when the re-flattened output is all arrays, so the
non-array values must stay inside a node that flattens to none of them.
`Planned.unflatten` rebuilds the user's output (`filter_jit` calls it).
"""

import warnings
from collections.abc import Callable
from typing import Any

import jax

from ._retrace import TraceHistory, TraceRecord
from ._static import ARRAY, kinds_of, merge_leaves

__all__ = ["OWNER", "Planned", "bake", "make_traced", "quietly"]

_SILENCED_DONATION = "Some donated buffers were not usable"


class _Owner:
    """Stands for the cache's owner function among a function's static
    leaves, so that the cache does not keep that function alive."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OWNER"


OWNER: Any = _Owner()


class Baked:
    """A non-array output leaf, held as node data of the output treedef."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


jax.tree_util.register_pytree_node(
    Baked, lambda baked: ((), baked.value), lambda value, _: value
)


class _SlowPlan:
    """Rebuilds an output whose nodes reject placeholder children: the output
    treedef and its non-array leaves, merged with the arrays per call."""

    __slots__ = ("treedef", "kinds", "static")

    def __init__(self, treedef: Any, kinds: tuple[Any, ...], static: tuple[Any, ...]):
        self.treedef = treedef
        self.kinds = kinds
        self.static = static

    def unflatten(self, arrays: Any) -> Any:
        return self.treedef.unflatten(merge_leaves(self.kinds, self.static, arrays))


class Planned:
    """A traced function's output arrays and the plan that rebuilds the
    output from them; `unflatten()` gives the output."""

    __slots__ = ("arrays", "plan")

    def __init__(self, arrays: Any, plan: Any):
        self.arrays = arrays
        self.plan = plan

    def unflatten(self) -> Any:
        return self.plan.unflatten(self.arrays)


jax.tree_util.register_pytree_node(
    Planned,
    lambda planned: (planned.arrays, planned.plan),
    lambda plan, arrays: Planned(arrays, plan),
)


def bake(out: Any) -> Planned:
    """Split `out` into its arrays and a plan that rebuilds it."""
    leaves, treedef = jax.tree_util.tree_flatten(out)
    kinds, _ = kinds_of(leaves)
    if all(kind is ARRAY for kind in kinds):
        return Planned(leaves, treedef)
    pairs = list(zip(leaves, kinds, strict=True))
    arrays = [leaf for leaf, kind in pairs if kind is ARRAY]
    baked = [leaf if kind is ARRAY else Baked(leaf) for leaf, kind in pairs]
    try:
        plan: Any = jax.tree_util.tree_structure(treedef.unflatten(baked))
    except Exception:  # a node that rejects placeholder children
        static = tuple(leaf for leaf, kind in pairs if kind is not ARRAY)
        plan = _SlowPlan(treedef, kinds, static)
    return Planned(arrays, plan)


def make_traced(
    fun_part: tuple[Any, Any, Any, int],
    args_part: tuple[Any, Any, Any],
    owner: Callable[[], Any],
    history: TraceHistory,
    names: dict[str, Any],
) -> Callable[..., Any]:
    """The function `jax.jit` compiles for one set of static values: it takes
    the function's arrays then the arguments' arrays.

    `fun_part` is `(treedef, kinds, static leaves, number of arrays)` of the
    wrapped function (its owner replaced by `OWNER`, restored here from
    `owner()`); `args_part` is `(treedef, kinds, static leaves)` of
    `(args, kwargs)`."""
    fun_def, fun_kinds, fun_static, num_fun = fun_part
    treedef, kinds, static = args_part

    def traced(*arrays: Any) -> Any:
        own = owner()
        fun_leaves = merge_leaves(
            fun_kinds,
            tuple(own if leaf is OWNER else leaf for leaf in fun_static),
            arrays[:num_fun],
        )
        fun = fun_def.unflatten(fun_leaves)
        args, kwargs = treedef.unflatten(merge_leaves(kinds, static, arrays[num_fun:]))
        if jax.config.jax_disable_jit:  # called directly, on every call
            return bake(fun(*args, **kwargs))
        tree = (fun, args, kwargs)
        record = TraceRecord(
            jax.tree_util.tree_structure(tree),
            fun_kinds + kinds,
            fun_static + static,  # with `OWNER`: records keep nothing alive
            tuple(map(jax.typeof, arrays)),
        )
        history.on_trace(record, tree)
        return bake(fun(*args, **kwargs))

    traced.__name__ = names["__name__"]
    traced.__qualname__ = names["__qualname__"]
    return traced


def quietly(jitted: Callable[..., Any]) -> Callable[..., Any]:
    """`jitted` (a compiled function, or its `.lower`), called with JAX's
    warning about unusable donations silenced (donate='all' and
    'all-except-first')."""

    def call(*arrays: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SILENCED_DONATION)
            return jitted(*arrays)

    return call
