"""What a `filter_jit` call is looked up by: arguments bound to the signature,
the static values checked, and treedefs that stay right under mutation.

A call is found in two steps (see `_jit_cache.py`): by `(treedef, leaf
types)`, which gives a `Layout` (where the array and static leaves sit), then
by the tuple of static leaves. So a key is complete when these three things
are: the treedef (with its node data: Module static fields), the type of every
leaf, and the value of every static leaf.

- **Binding.** Keyword arguments are bound to the function's parameters first,
  as Equinox does (`inspect.Signature.bind`, no defaults filled in): `g(x, x)`,
  `g(x, b=x)` and `g(a=x, b=x)` are one structure. A call with no keyword
  arguments is already in that form and skips the binding.
- **Static leaves must be hashable**, as with `jax.jit`: a value whose hash is
  its contents can be mutated in place only by defining `__hash__` against
  that, so keying on it is as safe as JAX's own static arguments.
  `static_error` names the first one that is not, by its path.
- **Node data may be unhashable** (Equinox allows a `list` or `dict` in a
  `field(static=True)`): a treedef hashes without its node data and compares
  it with `==`. The treedef stored in the cache is then a `snapshot`, with
  copies of that data, so that mutating the user's list in place makes the
  next call compare unequal and trace again, instead of matching a stored
  treedef that shares the mutated list.
"""

import copy
import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._module._tree_flatten_one_level import flatten_one_level_with_path
from ._retrace import static_field_names, top_level_parts
from ._static import ARRAY_TYPES

__all__ = ["Binder", "StaticValueError", "snapshot", "static_error"]

_BAD_STATIC = """\
`{path}` is a static value of this call ({reason}). filter_jit compiles one \
version per distinct static value, so it must be hashable and compare with \
`==` to a bool, as a `jax.jit` static argument must. Static values are the \
non-array leaves and the `field(static=True)` fields. Either
  1. make it hashable (a tuple instead of a list, a frozenset instead of a \
set, `frozen=True` on a dataclass), if it really is configuration; or
  2. pass the arrays inside it as arguments (or make it a regular field, not \
`static=True`), so that they are traced."""


_UNCOPYABLE = """\
A static field of a `{node}` holds an unhashable value that cannot be copied \
({error}). filter_jit compares unhashable static fields with a copy taken \
when it traces, so that mutating them in place traces again. Make the value \
hashable (a tuple, a frozenset, a frozen dataclass), or make the field a \
regular (not `static=True`) one."""


class StaticValueError(ValueError, TypeError):
    """A static value of a `filter_jit` call that cannot key a compiled
    function (unhashable, an array, or an `==` that is not a bool). A
    `ValueError`, as JAX raises for unhashable static arguments, and a
    `TypeError`, as pytreemod raised before."""


class Binder:
    """Binds keyword arguments to a function's signature, once per call that
    has any: `bind(args, kwargs)` gives the arguments in Equinox's normal
    form (every argument that can be positional is positional)."""

    __slots__ = ("signature",)

    def __init__(self, fun: Callable[..., Any]):
        try:
            self.signature: inspect.Signature | None = inspect.signature(fun)
        except (TypeError, ValueError):  # no signature (some builtins): as called
            self.signature = None

    def bind(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.signature is None:
            return args, kwargs
        bound = self.signature.bind(*args, **kwargs)
        return bound.args, bound.kwargs


# --- checking static values ---------------------------------------------------

_MAX_DEPTH = 8


def _compare_problem(value: Any) -> str | None:
    try:
        result = value == value
    except Exception as error:  # any failure makes it unusable as a static value
        return f"`==` on it raised {type(error).__name__}: {error}"
    if type(result) is not bool and type(result) is not np.bool_:
        return f"`==` on it gives a {type(result).__name__}, not a bool"
    return None


def _field_problem(value: Any, depth: int = 0) -> str | None:
    """Why `value` cannot be the value of a static field (which may be
    unhashable, but must not hold arrays and must compare to a bool)."""
    if isinstance(value, ARRAY_TYPES) and not isinstance(value, np.generic):
        return f"it is an array ({type(value).__name__})"
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, (tuple, list, set, frozenset)):
        parts: Any = value
    elif isinstance(value, dict):
        parts = value.values()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts = [getattr(value, f.name, None) for f in dataclasses.fields(value)]
    else:
        return _compare_problem(value)
    for part in parts:
        reason = _field_problem(part, depth + 1)
        if reason is not None:
            return reason
    return None


def _leaf_problem(value: Any) -> str | None:
    """Why a non-array leaf cannot be a static value, or `None`."""
    reason = _field_problem(value)
    if reason is not None:
        return reason
    try:
        hash(value)
    except TypeError:
        return f"it is an unhashable {type(value).__name__}"
    return None


def _static_fields(node: Any) -> list[tuple[str, Any]]:
    return [(name, getattr(node, name, None)) for name in static_field_names(node)]


def _find_problem(tree: Any, path: str) -> tuple[str, str] | None:
    children, treedef = flatten_one_level_with_path(tree)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # a leaf
        if isinstance(tree, ARRAY_TYPES):
            return None
        reason = _leaf_problem(tree)
        return None if reason is None else (path, reason)
    fields = _static_fields(tree)
    for name, value in fields:
        reason = _field_problem(value)
        if reason is not None:
            return f"{path}.{name}", reason
    node_data = treedef.node_data()
    if not fields and node_data is not None:
        reason = _field_problem(node_data[1])
        if reason is not None:
            return f"{path} (pytree metadata of {type(tree).__name__})", reason
    for key_path, child in children:
        found = _find_problem(child, path + jax.tree_util.keystr(key_path))
        if found is not None:
            return found
    return None


def static_error(fun: Any, args: tuple, kwargs: dict) -> StaticValueError | None:
    """The error for the first static value of a call that cannot key a
    compiled function, named by its path in the user's terms, or `None`.
    Run when a call misses the cache, never on the fast path."""
    for name, subtree in top_level_parts(fun, args, kwargs):
        found = _find_problem(subtree, name)
        if found is not None:
            path, reason = found
            return StaticValueError(_BAD_STATIC.format(path=path, reason=reason))
    return None


# --- treedefs that do not share mutable node data ---------------------------


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _all_hashable(treedef: Any) -> bool:
    data = treedef.node_data()
    if data is not None and not _hashable(data[1]):
        return False
    return all(map(_all_hashable, treedef.children()))


def _copied(treedef: Any) -> Any:
    data = treedef.node_data()
    if data is None:  # a leaf
        return treedef
    node_type, aux = data
    if not _hashable(aux):
        try:
            aux = copy.deepcopy(aux)
        except Exception as error:  # an uncopyable value (a lock, a file...)
            raise StaticValueError(
                _UNCOPYABLE.format(
                    node=node_type.__name__, error=f"{type(error).__name__}: {error}"
                )
            ) from None
    children = [_copied(child) for child in treedef.children()]
    return jax.tree_util.PyTreeDef.from_node_data_and_children(
        jax.tree_util.default_registry, (node_type, aux), children
    )


def snapshot(treedef: Any) -> Any:
    """`treedef` itself if all its node data are hashable; else an equal
    treedef whose unhashable node data are deep copies, so that it stops
    comparing equal once the user mutates the originals in place."""
    if _all_hashable(treedef):
        return treedef
    return _copied(treedef)
