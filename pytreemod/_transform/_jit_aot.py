"""Ahead-of-time compilation of `filter_jit` functions:
`filter_jit(f).lower(*args, **kwargs)` gives a `Lowered`, whose `.compile()`
gives a `Compiled`.

Both wrap JAX's own stages of the entry's `jax.jit` object. A `Compiled` is
called with the same kind of arguments as the `filter_jit` function and
checks first that they match the ones it was lowered for (structure, static
values, shapes and dtypes), saying what differs if not; the plan in JAX's
output treedef rebuilds the output, non-array leaves included.
"""

from collections.abc import Callable
from typing import Any

import jax

from ._jit_trace import quietly
from ._retrace import TraceRecord, describe_difference
from ._static import ARRAY, kinds_of

__all__ = ["Compiled", "Lowered", "lower", "record_of"]

_COMPILED_MISMATCH = """\
This compiled function was lowered for other arguments. Compared with those:
{lines}
Call it with arguments of the same structure, static values, shapes and \
dtypes, or lower and compile again: `filter_jit(f).lower(...).compile()`."""


def record_of(tree: tuple[Any, Any, Any]) -> TraceRecord:
    """What a call with `tree = (fun, args, kwargs)` would be traced with."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    kinds, _ = kinds_of(leaves)
    pairs = list(zip(leaves, kinds, strict=True))
    static = tuple(leaf for leaf, kind in pairs if kind is not ARRAY)
    avals = tuple(jax.typeof(leaf) for leaf, kind in pairs if kind is ARRAY)
    return TraceRecord(treedef, kinds, static, avals)


def _same_value(a: Any, b: Any) -> bool:
    return a is b or (type(a) is type(b) and bool(a == b))


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


Bind = Callable[[tuple, dict], tuple[tuple, dict]]


def lower(
    jitted: Any, arrays: tuple[Any, ...], quiet: bool, tree: tuple, bind: Bind
) -> "Lowered":
    """Lower the entry `jitted` for `arrays`, the leaves of the call `tree`
    (`(fun, args, kwargs)`, arguments bound by `bind`)."""
    lowered = (quietly(jitted.lower) if quiet else jitted.lower)(*arrays)
    return Lowered(lowered, tree[0], record_of(tree), bind)


class Lowered:
    """A `filter_jit` function lowered for one set of arguments: what
    `filter_jit(f).lower(*args, **kwargs)` returns.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> double = pytreemod.filter_jit(lambda x, n: x * n)
        >>> compiled = double.lower(jnp.ones(2), 2).compile()
        >>> compiled(jnp.arange(2.0), 2)
        Array([0., 2.], dtype=float32)
    """

    def __init__(self, lowered: Any, fun: Any, record: TraceRecord, bind: Bind):
        self._lowered = lowered
        self._fun = fun
        self._record = record
        self._bind = bind

    def as_text(self, *args: Any, **kwargs: Any) -> str:
        """The lowered program as text (StableHLO by default); arguments as for
        `jax.stages.Lowered.as_text`."""
        return self._lowered.as_text(*args, **kwargs)

    def compile(self, *args: Any, **kwargs: Any) -> "Compiled":
        """Compile the lowered program; arguments as for
        `jax.stages.Lowered.compile` (e.g. `compiler_options=`)."""
        compiled = self._lowered.compile(*args, **kwargs)
        return Compiled(compiled, self._fun, self._record, self._bind)


class Compiled:
    """A `filter_jit` function compiled for one set of arguments. Call it with
    arguments of the same structure, static values, shapes and dtypes.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> compiled = pytreemod.filter_jit(jnp.sin).lower(jnp.zeros(3)).compile()
        >>> compiled(jnp.zeros(3))
        Array([0., 0., 0.], dtype=float32)
    """

    def __init__(self, compiled: Any, fun: Any, record: TraceRecord, bind: Bind):
        self._compiled = compiled
        self._fun = fun
        self._record = record
        self._bind = bind

    def as_text(self) -> str | None:
        """The compiled program as text, as `jax.stages.Compiled.as_text`."""
        return self._compiled.as_text()

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            args, kwargs = self._bind(args, kwargs)
        tree = (self._fun, args, kwargs)
        record = record_of(tree)
        if not _matches(self._record, record):
            lines = describe_difference(self._record, record, tree)
            raise TypeError(
                _COMPILED_MISMATCH.format(lines="\n".join("  " + x for x in lines))
            )
        leaves = jax.tree_util.tree_leaves(tree)
        kinds = record.kinds
        out = self._compiled(
            *[leaf for leaf, k in zip(leaves, kinds, strict=True) if k is ARRAY]
        )
        return out.unflatten()
