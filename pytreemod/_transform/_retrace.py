"""Retrace explanations: when a `filter_jit` function traces again, say in the
user's terms what differed from the closest earlier call.

Every trace of a `filter_jit` function appends a `TraceRecord` (treedef, leaf
kinds, static leaves, abstract values of the traced leaves) to the function's
`TraceHistory`; no array is kept. With explanations on, a trace after the
first compares its record with the earlier ones, picks the closest and logs
the differences with key paths named after the function's parameters. All of
this runs while tracing, which is slow anyway; the call path never sees it.

The on/off flag is the one global of `filter_jit`: `explain_retraces(True)`,
or the environment variable `PYTREEMOD_EXPLAIN_RETRACES=1` read at import.
"""

import collections
import dataclasses
import inspect
import logging
import os
import threading
from typing import Any, NamedTuple

import jax

from .._module._tree_flatten_one_level import flatten_one_level_with_path
from ._static import ARRAY

__all__ = [
    "ENV_VAR",
    "TraceHistory",
    "TraceRecord",
    "describe_difference",
    "explain_retraces",
    "static_field_names",
    "top_level_parts",
]

ENV_VAR = "PYTREEMOD_EXPLAIN_RETRACES"
_logger = logging.getLogger("pytreemod")
_explain = os.environ.get(ENV_VAR, "").strip().lower() not in (
    "",
    "0",
    "false",
    "no",
    "off",
)

# How many earlier traces of one function are kept to compare against.
_HISTORY = 64
# How many differences one explanation lists before summarising the rest.
_MAX_LINES = 12

_RETRACE_MESSAGE = """\
filter_jit({name}) is tracing again (trace {count} of this function); every \
trace compiles anew. Compared with the closest earlier call:
{lines}"""

_NOTHING_DIFFERS = (
    "  nothing differs in structure, static values, shapes or dtypes: the "
    "earlier trace was dropped (by `pytreemod.clear_caches()`, "
    "`jax.clear_caches()`, or JAX's own cache limit)."
)


def explain_retraces(enable: bool = True) -> bool:
    """Turn on (or off) explanations of why `filter_jit` functions retrace.

    When on, each time a `filter_jit` function traces again, a warning is
    logged (Python `logging`, logger `"pytreemod"`, level `WARNING`) saying
    what differed from the closest earlier call, one line per difference:
    a static value (`model.layers[3].activation: 'relu' -> 'gelu'`), an array's
    shape or dtype (`x: f32[8] -> f32[16]`) or the tree structure at a path.
    Arguments are named by the function's parameter names where
    `inspect.signature` can tell them, else `args[i]`.

    The environment variable `PYTREEMOD_EXPLAIN_RETRACES=1`, read when
    pytreemod is imported, turns explanations on from the start. Nothing is
    computed unless a function actually retraces.

    Args:
        enable: `True` to explain retraces, `False` to stop.

    Returns:
        The previous setting, so that it can be restored.

    Example:
        >>> import logging, sys
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> to_stdout = logging.StreamHandler(sys.stdout)
        >>> logging.getLogger("pytreemod").addHandler(to_stdout)
        >>> previous = pytreemod.debug.explain_retraces(True)
        >>> @pytreemod.filter_jit
        ... def scale(x, factor):
        ...     return x * factor
        >>> _ = scale(jnp.ones(2), 2.0)
        >>> _ = scale(jnp.ones(2), 3.0)
        filter_jit(scale) is tracing again (trace 2 of this function); ...
          factor: 2.0 -> 3.0
        >>> _ = pytreemod.debug.explain_retraces(previous)
        >>> logging.getLogger("pytreemod").removeHandler(to_stdout)
    """
    global _explain
    previous = _explain
    _explain = bool(enable)
    return previous


class TraceRecord(NamedTuple):
    """What one trace of a `filter_jit` function was traced with."""

    treedef: Any
    kinds: tuple[Any, ...]
    static: tuple[Any, ...]
    avals: tuple[Any, ...]


class TraceHistory:
    """The traces of one `filter_jit` function so far (the last few kept)."""

    __slots__ = ("name", "count", "_records", "_lock")

    def __init__(self, name: str):
        self.name = name
        self.count = 0
        self._records: collections.deque[TraceRecord] = collections.deque(
            maxlen=_HISTORY
        )
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def on_trace(self, record: TraceRecord, tree: tuple[Any, Any, Any]) -> None:
        """Record a trace of `tree = (fun, args, kwargs)`; explain it if it is
        a retrace and explanations are on."""
        with self._lock:
            self.count += 1
            count = self.count
            earlier = list(self._records)
            self._records.append(record)
        if _explain and earlier:
            lines = _closest_difference(earlier, record, tree)
            _logger.warning(
                _RETRACE_MESSAGE.format(
                    name=self.name,
                    count=count,
                    lines="\n".join(lines) if lines else _NOTHING_DIFFERS,
                )
            )


# --- naming: key paths in the user's terms -----------------------------------


class _Names:
    """Names for the top-level parts of `(fun, args, kwargs)`: the function's
    own leaves are `self` (a Module or a bound method's module) or `fun`;
    arguments take their parameter names where the signature tells them."""

    def __init__(self, fun: Any):
        self.positional: list[str] = []
        self.var_positional: str | None = None
        self.fun_is_bound = hasattr(fun, "__self__") and hasattr(fun, "__func__")
        self.fun_name = (
            "self"
            if self.fun_is_bound
            or (dataclasses.is_dataclass(fun) and not isinstance(fun, type))
            else "fun"
        )
        try:
            if self.fun_is_bound:
                parameters = list(inspect.signature(fun.__func__).parameters.values())
                parameters = parameters[1:]
            else:
                parameters = list(inspect.signature(fun).parameters.values())
        except (TypeError, ValueError):
            return
        for parameter in parameters:
            if parameter.kind is parameter.VAR_POSITIONAL:
                self.var_positional = parameter.name
                break
            if parameter.kind not in (
                parameter.POSITIONAL_ONLY,
                parameter.POSITIONAL_OR_KEYWORD,
            ):
                break
            self.positional.append(parameter.name)

    def arg(self, index: int) -> str:
        if index < len(self.positional):
            return self.positional[index]
        if self.var_positional is not None:
            return f"{self.var_positional}[{index - len(self.positional)}]"
        return f"args[{index}]"

    def path(self, key_path: tuple[Any, ...]) -> str:
        """Name a key path into `(fun, args, kwargs)`."""
        part = key_path[0].idx
        if part == 0:
            rest = key_path[1:]
            if (
                self.fun_is_bound
                and rest
                and getattr(rest[0], "name", None) == "__self__"
            ):
                rest = rest[1:]
            return self.fun_name + jax.tree_util.keystr(rest)
        if part == 1:
            return self.arg(key_path[1].idx) + jax.tree_util.keystr(key_path[2:])
        return str(key_path[1].key) + jax.tree_util.keystr(key_path[2:])


def top_level_parts(fun: Any, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    """`(name, subtree)` for the function's leaves and each argument."""
    names = _Names(fun)
    fun_part = fun.__self__ if names.fun_is_bound else fun
    parts = [(names.fun_name, fun_part)]
    parts += [(names.arg(i), arg) for i, arg in enumerate(args)]
    parts += [(str(key), value) for key, value in kwargs.items()]
    return parts


# --- formatting ---------------------------------------------------------------


def _format_aval(aval: Any) -> str:
    try:
        text = aval.str_short(short_dtypes=True)
    except (AttributeError, TypeError):
        return str(aval)
    if getattr(aval, "weak_type", False) and not text.startswith("~"):
        text += " (weakly typed)"
    return text


def _format_static(value: Any, limit: int = 60) -> str:
    if isinstance(value, type):
        return f"<class {value.__qualname__}>"
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if callable(value) and isinstance(name, str):
        return f"<function {name}>"
    try:
        text = repr(value)
    except Exception:  # a broken repr must not hide the explanation
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _leaf_values(record: TraceRecord) -> list[tuple[bool, Any]]:
    avals = iter(record.avals)
    static = iter(record.static)
    return [
        (True, next(avals)) if kind is ARRAY else (False, next(static))
        for kind in record.kinds
    ]


def _format_leaf(leaf: tuple[bool, Any]) -> str:
    is_array, value = leaf
    return _format_aval(value) if is_array else _format_static(value)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # an unusable `==` counts as a difference
        return False


def _same_leaf(a: tuple[bool, Any], b: tuple[bool, Any]) -> bool:
    return a[0] == b[0] and type(a[1]) is type(b[1]) and _same(a[1], b[1])


def _describe_structure(treedef: Any) -> str:
    node_data = treedef.node_data()
    if node_data is None:
        return "a leaf"
    node_type, aux = node_data
    if node_type is type(None):
        return "None"
    count = len(treedef.children())
    if node_type in (tuple, list):
        return f"{node_type.__name__} of length {count}"
    if node_type is dict:
        return f"dict with keys {list(aux)}"
    if aux in (None, ()):
        return node_type.__name__
    return f"{node_type.__name__} with metadata {_format_static(aux)}"


def _structure_difference(old: Any, tree: Any, path: str, out: list[str]) -> None:
    """Append to `out` where `tree`'s structure departs from treedef `old`."""
    new = jax.tree_util.tree_structure(tree)
    if _same(old, new):
        return
    old_data, new_data = old.node_data(), new.node_data()
    old_children = old.children()
    children, _ = flatten_one_level_with_path(tree)
    if (
        old_data is None
        or new_data is None
        or old_data[0] is not new_data[0]
        or len(old_children) != len(children)
    ):
        out.append(f"{path}: {_describe_structure(old)} -> {_describe_structure(new)}")
        return
    if not _same(old_data[1], new_data[1]):
        fields = static_field_names(tree)
        old_aux = old_data[1]
        if isinstance(old_aux, tuple) and len(fields) == len(old_aux):
            for name, old_value in zip(fields, old_aux, strict=True):
                new_value = getattr(tree, name)
                if not _same(old_value, new_value):
                    out.append(
                        f"{path}.{name}: {_format_static(old_value)} -> "
                        f"{_format_static(new_value)}"
                    )
        else:
            out.append(
                f"{path}: {_describe_structure(old)} -> {_describe_structure(new)}"
            )
    for (key_path, child), old_child in zip(children, old_children, strict=True):
        _structure_difference(
            old_child, child, path + jax.tree_util.keystr(key_path), out
        )


def static_field_names(node: Any) -> list[str]:
    """The names of a dataclass node's `field(static=True)` fields."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return [
            f.name for f in dataclasses.fields(node) if f.metadata.get("static", False)
        ]
    return []


def describe_difference(
    old: TraceRecord, new: TraceRecord, tree: tuple[Any, Any, Any]
) -> list[str]:
    """The differences between an earlier call `old` and the call `new` made
    with `tree = (fun, args, kwargs)`, one line each, paths named in the
    user's terms."""
    fun, args, kwargs = tree
    lines: list[str] = []
    if not _same(old.treedef, new.treedef):
        old_fun, old_args, old_kwargs = old.treedef.children()
        names = _Names(fun)
        fun_part = fun.__self__ if names.fun_is_bound else fun
        old_fun_part = (
            old_fun.children()[0]
            if names.fun_is_bound and len(old_fun.children()) == 1
            else old_fun
        )
        _structure_difference(old_fun_part, fun_part, names.fun_name, lines)
        old_arg_defs = old_args.children()
        if len(old_arg_defs) != len(args):
            lines.append(
                f"number of positional arguments: {len(old_arg_defs)} -> {len(args)}"
            )
        for i, (old_arg, arg) in enumerate(zip(old_arg_defs, args, strict=False)):
            _structure_difference(old_arg, arg, names.arg(i), lines)
        old_keys = list(old_kwargs.node_data()[1])
        new_keys = sorted(kwargs)
        if old_keys != new_keys:
            lines.append(f"keyword arguments: {old_keys} -> {new_keys}")
        for key, old_value in zip(old_keys, old_kwargs.children(), strict=True):
            if key in kwargs:
                _structure_difference(old_value, kwargs[key], str(key), lines)
        return lines
    names = _Names(fun)
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    for path, before, after in zip(
        paths, _leaf_values(old), _leaf_values(new), strict=True
    ):
        if not _same_leaf(before, after):
            lines.append(
                f"{names.path(path)}: {_format_leaf(before)} -> {_format_leaf(after)}"
            )
    return lines


def _distance(old: TraceRecord, new: TraceRecord) -> int:
    if not _same(old.treedef, new.treedef):
        return 1 << 30
    return sum(
        not _same_leaf(a, b)
        for a, b in zip(_leaf_values(old), _leaf_values(new), strict=True)
    )


def _closest_difference(
    earlier: list[TraceRecord], new: TraceRecord, tree: tuple[Any, Any, Any]
) -> list[str]:
    closest = min(reversed(earlier), key=lambda old: _distance(old, new))
    try:
        lines = describe_difference(closest, new, tree)
    except Exception as error:  # explaining must never break the user's trace
        return [f"  (could not compare the calls: {type(error).__name__}: {error})"]
    lines = ["  " + line for line in lines]
    if len(lines) > _MAX_LINES:
        more = len(lines) - _MAX_LINES
        lines = lines[:_MAX_LINES] + [f"  ... and {more} more"]
    return lines
