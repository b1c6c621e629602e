"""Generated flatten / unflatten functions that register a Module class as a
pytree node.

`tree_flatten` and `tree_unflatten` of Modules are the hot path of every
transform, so each Module class gets functions written for its own fields:

    def flatten(self):
        d = self.__dict__
        return (d['weight'], d['bias']), (d['in_size'],)

    def unflatten(aux, children):
        self = new(cls)
        d = self.__dict__
        d['weight'], d['bias'] = children
        d['in_size'], = aux
        return self

Reading and writing the instance `__dict__` directly skips attribute lookup
and `__setattr__` (Modules are frozen), and unflatten never calls `__init__`:
a rebuilt Module is the same value, not a newly constructed one, so custom
`__init__` methods, converters and checks do not run again. The generated
source is kept in `linecache`, so tracebacks and `inspect.getsource` show it.
"""

import linecache
from collections.abc import Sequence
from typing import Any

import jax


def _items(names: Sequence[str]) -> str:
    """`d['a'], d['b'], `: the fields as a tuple display or unpacking target."""
    return "".join(f"d[{name!r}], " for name in names)


def _source(dynamic: Sequence[str], static: Sequence[str]) -> str:
    children, aux = _items(dynamic), _items(static)
    lines = [
        "def flatten(self):",
        "    d = self.__dict__",
        f"    return ({children}), ({aux})",
        "",
        "def flatten_with_keys(self):",
        "    d = self.__dict__",
        "    return (",
        *(f"        (keys[{i}], d[{name!r}])," for i, name in enumerate(dynamic)),
        f"    ), ({aux})",
        "",
        "def unflatten(aux, children):",
        "    self = new(cls)",
        "    d = self.__dict__",
    ]
    if dynamic:
        lines.append(f"    {children}= children")
    if static:
        lines.append(f"    {aux}= aux")
    lines.append("    return self")
    return "\n".join(lines) + "\n"


def register_module_pytree(
    cls: type, dynamic: Sequence[str], static: Sequence[str]
) -> tuple[Any, Any]:
    """Register `cls` as a pytree node: `dynamic` fields are its children (with
    `GetAttrKey` key paths), `static` fields its auxiliary data.

    Returns:
        The generated `(flatten, unflatten)` functions, for callers that build
        instances without going through `tree_unflatten`.
    """
    source = _source(dynamic, static)
    filename = f"<pytreemod flatten of {cls.__module__}.{cls.__qualname__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {
        "cls": cls,
        "new": object.__new__,
        "keys": tuple(jax.tree_util.GetAttrKey(name) for name in dynamic),
    }
    exec(compile(source, filename, "exec"), namespace)
    flatten, unflatten = namespace["flatten"], namespace["unflatten"]
    jax.tree_util.register_pytree_with_keys(
        cls, namespace["flatten_with_keys"], unflatten, flatten
    )
    return flatten, unflatten
