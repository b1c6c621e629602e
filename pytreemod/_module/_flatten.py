"""Generated flatten / unflatten functions that register a Module class as a
pytree node.

`tree_flatten` and `tree_unflatten` of Modules are the hot path of every
transform, so each Module class gets functions written for its own fields:

    def flatten(self):
        d = get_dict(self)
        try:
            return (d['weight'], d['bias']), (d['in_size'],)
        except KeyError:
            return flatten_partial(self)

    def unflatten(aux, children):
        self = new(cls)
        d = get_dict(self)
        try:
            d['weight'], d['bias'] = children
            d['in_size'], = aux
        except (TypeError, ValueError):  # some fields are absent
            return unflatten_partial(aux, children)
        return self

Reading and writing the instance `__dict__` directly skips attribute lookup
(`Module.__getattribute__`) and `__setattr__` (Modules are frozen), and
unflatten never calls `__init__`: a rebuilt Module is the same value, not a
newly constructed one, so custom `__init__` methods, converters and checks do
not run again. The generated source is kept in `linecache`, so tracebacks and
`inspect.getsource` show it.

A field that a custom `__init__` left unset, where the class provides a value
of that name (a default, a property, a class attribute), is absent from the
instance `__dict__`, as in Equinox: it is no pytree child, and attribute
lookup finds the class's value. Such instances take the slower `_partial`
path, whose auxiliary data (`_PartialAux`) records which fields are absent,
so that the treedef tells the two layouts apart.
"""

import linecache
from collections.abc import Callable, Sequence
from typing import Any

import jax


class _PartialAux:
    """Auxiliary data of a Module some of whose fields are absent: the static
    values present, and the names of the absent fields."""

    __slots__ = ("static", "missing")

    def __init__(self, static: tuple, missing: frozenset[str]):
        self.static = static
        self.missing = missing

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is _PartialAux
            and self.missing == other.missing
            and self.static == other.static
        )

    def __hash__(self) -> int:
        return hash((self.static, self.missing))

    def __repr__(self) -> str:
        return f"{self.static!r} (unset: {', '.join(sorted(self.missing))})"


def _items(names: Sequence[str]) -> str:
    """`d['a'], d['b'], `: the fields as a tuple display or unpacking target."""
    return "".join(f"d[{name!r}], " for name in names)


def _source(dynamic: Sequence[str], static: Sequence[str]) -> str:
    children, aux = _items(dynamic), _items(static)
    lines = [
        "def flatten(self):",
        "    d = get_dict(self)",
        "    try:",
        f"        return ({children}), ({aux})",
        "    except KeyError:",
        "        return flatten_partial(self, False)",
        "",
        "def flatten_with_keys(self):",
        "    d = get_dict(self)",
        "    try:",
        "        return (",
        *(f"            (keys[{i}], d[{name!r}])," for i, name in enumerate(dynamic)),
        f"        ), ({aux})",
        "    except KeyError:",
        "        return flatten_partial(self, True)",
        "",
        "def unflatten(aux, children):",
        "    self = new(cls)",
        "    d = get_dict(self)",
    ]
    # A layout with absent fields has fewer children (a ValueError when
    # unpacking) or a `_PartialAux` (a TypeError): no check on the fast path.
    if dynamic or static:
        lines.append("    try:")
        if dynamic:
            lines.append(f"        {children}= children")
        if static:
            lines.append(f"        {aux}= aux")
        lines.append("    except (TypeError, ValueError):")
        lines.append("        return unflatten_partial(aux, children)")
    else:
        lines.append("    if type(aux) is not tuple:")
        lines.append("        return unflatten_partial(aux, children)")
    lines.append("    return self")
    return "\n".join(lines) + "\n"


def _partial_functions(
    cls: type,
    dynamic: Sequence[str],
    static: Sequence[str],
    keys: tuple,
    get_dict: Callable[[Any], dict],
) -> tuple[Any, Any]:
    """Flatten/unflatten for instances with absent fields (see module doc)."""

    def flatten_partial(self: Any, with_keys: bool) -> tuple[tuple, _PartialAux]:
        d = get_dict(self)
        missing = frozenset(n for n in (*dynamic, *static) if n not in d)
        if with_keys:
            children: tuple = tuple(
                (key, d[n]) for key, n in zip(keys, dynamic, strict=True) if n in d
            )
        else:
            children = tuple(d[n] for n in dynamic if n in d)
        aux = _PartialAux(tuple(d[n] for n in static if n in d), missing)
        return children, aux

    def unflatten_partial(aux: _PartialAux, children: Any) -> Any:
        self = object.__new__(cls)
        d = get_dict(self)
        missing = aux.missing
        d.update(zip((n for n in dynamic if n not in missing), children, strict=True))
        d.update(zip((n for n in static if n not in missing), aux.static, strict=True))
        return self

    return flatten_partial, unflatten_partial


def register_module_pytree(
    cls: type,
    dynamic: Sequence[str],
    static: Sequence[str],
    get_dict: Callable[[Any], dict],
) -> tuple[Any, Any]:
    """Register `cls` as a pytree node: `dynamic` fields are its children (with
    `GetAttrKey` key paths), `static` fields its auxiliary data. `get_dict`
    returns an instance's `__dict__` without going through attribute lookup.

    Returns:
        The generated `(flatten, unflatten)` functions, for callers that build
        instances without going through `tree_unflatten`.
    """
    source = _source(dynamic, static)
    filename = f"<pytreemod flatten of {cls.__module__}.{cls.__qualname__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in dynamic)
    flatten_partial, unflatten_partial = _partial_functions(
        cls, dynamic, static, keys, get_dict
    )
    namespace: dict[str, Any] = {
        "cls": cls,
        "new": object.__new__,
        "get_dict": get_dict,
        "keys": keys,
        "flatten_partial": flatten_partial,
        "unflatten_partial": unflatten_partial,
    }
    exec(compile(source, filename, "exec"), namespace)
    flatten, unflatten = namespace["flatten"], namespace["unflatten"]
    jax.tree_util.register_pytree_with_keys(
        cls, namespace["flatten_with_keys"], unflatten, flatten
    )
    return flatten, unflatten
