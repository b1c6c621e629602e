"""Generated flatten / unflatten functions that register a Module class as a
pytree node.

`tree_flatten` and `tree_unflatten` of Modules are the hot path of every
transform, so each Module class gets functions written for its own fields:

    def flatten(self):
        d = get_dict(self)
        if len(d) == 3:  # exactly the fields
            try:
                return (d['weight'], d['bias']), (d['in_size'],)
            except KeyError:
                pass
        return flatten_partial(self, False)

    def unflatten(aux, children):
        self = new(cls)
        d = get_dict(self)
        try:
            d['weight'], d['bias'] = children
            d['in_size'], = aux
        except (TypeError, ValueError):  # a `_PartialAux`
            return unflatten_partial(aux, children)
        return self

Reading and writing the instance `__dict__` directly skips attribute lookup
(`Module.__getattribute__`) and `__setattr__` (Modules are frozen), and
unflatten never calls `__init__`: a rebuilt Module is the same value, not a
newly constructed one, so custom `__init__` methods, converters and checks do
not run again. The generated source is kept in `linecache`, so tracebacks and
`inspect.getsource` show it.

Two kinds of instance take the slower `_partial` path, found by the instance
`__dict__` not holding exactly the fields:

- A field that a custom `__init__` left unset, where the class provides a
  value of that name (a default, a property, a class attribute), is absent
  from the instance `__dict__`, as in Equinox: it is no pytree child, and
  attribute lookup finds the class's value.
- A wrapper made by `module_update_wrapper` holds the attributes copied from
  the wrapped callable (`WRAPPER_FIELD_NAMES`) in its `__dict__`; as in
  Equinox they travel in the auxiliary data, so they survive `tree_map`.

Their auxiliary data (`_PartialAux`) records which fields are absent and the
wrapper attributes, so that the treedef tells the layouts apart. Any other
extra entry (`__orig_class__`, a `functools.cached_property` value) is not
part of the pytree: the instance flattens as if it were not there.
"""

import linecache
from collections.abc import Callable, Sequence
from typing import Any

import jax

# The attributes `module_update_wrapper` copies from the wrapped callable onto
# a wrapper Module (as Equinox: `functools.WRAPPER_ASSIGNMENTS` of Python 3.11).
WRAPPER_FIELD_NAMES = (
    "__module__",
    "__name__",
    "__qualname__",
    "__doc__",
    "__annotations__",
)


def _hash_or_type(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:  # e.g. the `__annotations__` dict
        return type(value)
    return value


class _PartialAux:
    """Auxiliary data of a Module whose `__dict__` is not exactly its fields:
    the static values present, the names of the absent fields, and the
    `(name, value)` pairs of the wrapper attributes it holds."""

    __slots__ = ("static", "missing", "wrapper")

    def __init__(self, static: tuple, missing: frozenset[str], wrapper: tuple):
        self.static = static
        self.missing = missing
        self.wrapper = wrapper

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is _PartialAux
            and self.missing == other.missing
            and self.static == other.static
            and self.wrapper == other.wrapper
        )

    def __hash__(self) -> int:
        # Consistent with `==`; an unhashable wrapper value (the annotations
        # dict) contributes only its type.
        wrapper = tuple((name, _hash_or_type(v)) for name, v in self.wrapper)
        return hash((self.static, self.missing, wrapper))

    def __repr__(self) -> str:
        parts = [repr(self.static)]
        if self.missing:
            parts.append(f"(unset: {', '.join(sorted(self.missing))})")
        if self.wrapper:
            parts.append(f"(wrapper: {', '.join(n for n, _ in self.wrapper)})")
        return " ".join(parts)


def _items(names: Sequence[str]) -> str:
    """`d['a'], d['b'], `: the fields as a tuple display or unpacking target."""
    return "".join(f"d[{name!r}], " for name in names)


def _source(dynamic: Sequence[str], static: Sequence[str]) -> str:
    children, aux = _items(dynamic), _items(static)
    count = len(dynamic) + len(static)
    lines = [
        "def flatten(self):",
        "    d = get_dict(self)",
        f"    if len(d) == {count}:  # exactly the fields",
        "        try:",
        f"            return ({children}), ({aux})",
        "        except KeyError:",
        "            pass",
        "    return flatten_partial(self, False)",
        "",
        "def flatten_with_keys(self):",
        "    d = get_dict(self)",
        f"    if len(d) == {count}:",
        "        try:",
        "            return (",
        *(
            f"                (keys[{i}], d[{name!r}]),"
            for i, name in enumerate(dynamic)
        ),
        f"            ), ({aux})",
        "        except KeyError:",
        "            pass",
        "    return flatten_partial(self, True)",
        "",
        "def unflatten(aux, children):",
        "    self = new(cls)",
        "    d = get_dict(self)",
        "    try:",
    ]
    # Unpacking a `_PartialAux` raises a TypeError, and a layout with absent
    # fields has fewer children (a ValueError): no check on the fast path.
    if dynamic:
        lines.append(f"        {children}= children")
    lines.append(f"        {aux or '()'} = aux")
    lines.append("    except (TypeError, ValueError):")
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
    """Flatten/unflatten for instances whose `__dict__` is not exactly their
    fields (see module doc)."""

    def flatten_partial(self: Any, with_keys: bool) -> tuple[tuple, Any]:
        d = get_dict(self)
        missing = frozenset(n for n in (*dynamic, *static) if n not in d)
        if with_keys:
            children: tuple = tuple(
                (key, d[n]) for key, n in zip(keys, dynamic, strict=True) if n in d
            )
        else:
            children = tuple(d[n] for n in dynamic if n in d)
        static_values = tuple(d[n] for n in static if n in d)
        wrapper = tuple((n, d[n]) for n in WRAPPER_FIELD_NAMES if n in d)
        if not missing and not wrapper:  # only entries outside the pytree
            return children, static_values
        return children, _PartialAux(static_values, missing, wrapper)

    def unflatten_partial(aux: _PartialAux, children: Any) -> Any:
        self = object.__new__(cls)
        d = get_dict(self)
        missing = aux.missing
        d.update(zip((n for n in dynamic if n not in missing), children, strict=True))
        d.update(zip((n for n in static if n not in missing), aux.static, strict=True))
        d.update(aux.wrapper)
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
        "len": len,
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
