"""`store_dce` and `inspect_dce`: find out which arrays the compiler removed
as dead code.

`store_dce` routes each array through a `jax.pure_callback` that records the
array's shape and dtype on the host when it runs. A callback whose result is
unused is removed along with the rest of the dead code, so an array never
recorded is one that was eliminated. The records live in a module-level
registry, keyed by the `name` given and then by call site (one entry per
trace of a `store_dce` call), until the process ends.
"""

import functools
import threading
from collections.abc import Hashable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._module._is_array import is_array
from .._module._pformat import _short_array, tree_pprint
from .._transform._filters import combine, partition

__all__ = ["inspect_dce", "store_dce"]

_T = TypeVar("_T")

_STORE_OUTSIDE_JIT = """\
`store_dce` was called outside of `jax.jit`, where nothing is compiled and so \
nothing can be dead-code-eliminated. Call it inside the jitted function, on \
the values whose fate you want to know:
    @jax.jit
    def f(x):
        a, b = pytreemod.debug.store_dce((x + 1, x * 2))
        return a
then call `f` and, outside of jit, `pytreemod.debug.inspect_dce()`."""

_INSPECT_INSIDE_JIT = (
    "`inspect_dce` was called inside a traced function; the records it prints "
    "are only written when a compiled function runs. Call it outside of "
    "`jax.jit`, after calling the function that uses `store_dce`."
)

_ELIMINATED = "<DCE'd>"


class _Entry:
    """What one traced `store_dce` call knows: the structure it was given,
    and (filled in as the compiled code runs) each surviving leaf's
    `(shape, dtype)`, by leaf number."""

    __slots__ = ("treedef", "static", "alive")

    def __init__(self, treedef: Any, static: Any):
        self.treedef = treedef
        self.static = static
        self.alive: dict[int, tuple[tuple[int, ...], Any]] = {}


class _Shown:
    """A leaf that prints as the given text."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


_entries: dict[Hashable, list[_Entry]] = {}
_lock = threading.Lock()


def _record(entry: _Entry, i: int, value: Any) -> Any:
    entry.alive[i] = (tuple(value.shape), value.dtype)
    return value


def _inside_trace() -> bool:
    # Inside `jax.jit`, any new computation is traced, even on constants.
    return isinstance(jnp.zeros(()) + 1, jax.core.Tracer)


def store_dce(x: _T, name: Hashable = None) -> _T:
    """Return `x` unchanged, and record which of its arrays survive dead code
    elimination when the jitted function around it runs.

    Must be called inside `jax.jit` (or `filter_jit`). After the compiled
    function has run, `inspect_dce` prints, for each `store_dce` call, the
    shape and dtype of each array that was computed and `<DCE'd>` for each one
    the compiler removed because nothing used it. Non-array leaves are kept
    as they are and not tracked.

    Args:
        x: any pytree.
        name: any hashable label for this call site; pass the same to
            `inspect_dce` to see only the calls with this label.

    Returns:
        `x`, unchanged.

    Raises:
        RuntimeError: if called outside of a traced function.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @jax.jit
        ... def f(x):
        ...     used, unused = pytreemod.debug.store_dce((x + 1, x * 2), "doc")
        ...     return used
        >>> _ = f(jnp.arange(3))
        >>> pytreemod.debug.inspect_dce("doc")
        Found 1 call to `pytreemod.debug.store_dce` with name 'doc'.
        Entry 0:
        (i32[3], <DCE'd>)
    """
    if not _inside_trace():
        raise RuntimeError(_STORE_OUTSIDE_JIT)
    arrays, static = partition(x, is_array)
    leaves, treedef = jtu.tree_flatten(arrays)
    entry = _Entry(treedef, static)
    with _lock:
        _entries.setdefault(name, []).append(entry)
    leaves = [
        jax.pure_callback(
            functools.partial(_record, entry, i),
            jax.ShapeDtypeStruct(leaf.shape, leaf.dtype),
            leaf,
            vmap_method="expand_dims",
        )
        for i, leaf in enumerate(leaves)
    ]
    return combine(jtu.tree_unflatten(treedef, leaves), static)


def inspect_dce(name: Hashable = None) -> None:
    """Print what `store_dce` recorded: for each of its calls with this
    `name`, the tree it was given, with each array shown as its shape and
    dtype if it was computed and as `<DCE'd>` if the compiler removed it.

    Call it outside of any jitted function, after running the function that
    calls `store_dce`. An array whose function has been traced but not yet run
    shows as `<DCE'd>` too.

    Args:
        name: the label that was passed to `store_dce` (`None` by default).

    Returns:
        Nothing; the report is printed to standard output.

    Raises:
        RuntimeError: if called inside a traced function.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @jax.jit
        ... def f(x):
        ...     out = pytreemod.debug.store_dce({"a": x, "b": 2.0 * x}, "example")
        ...     return out["b"]
        >>> _ = f(jnp.ones(2))
        >>> pytreemod.debug.inspect_dce("example")
        Found 1 call to `pytreemod.debug.store_dce` with name 'example'.
        Entry 0:
        {'a': <DCE'd>, 'b': f32[2]}
    """
    if _inside_trace():
        raise RuntimeError(_INSPECT_INSIDE_JIT)
    with _lock:
        entries = list(_entries.get(name, ()))
    calls = "call" if len(entries) == 1 else "calls"
    named = "" if name is None else f" with name {name!r}"
    print(f"Found {len(entries)} {calls} to `pytreemod.debug.store_dce`{named}.")
    for i, entry in enumerate(entries):
        shown = []
        for j in range(entry.treedef.num_leaves):
            found = entry.alive.get(j)
            shown.append(_Shown(_ELIMINATED if found is None else _short_array(*found)))
        print(f"Entry {i}:")
        tree_pprint(combine(jtu.tree_unflatten(entry.treedef, shown), entry.static))
