"""`tree_pformat` and `tree_pprint`: an indented, width-aware view of a pytree.

Printing is two steps. `_Printer.doc` turns an object into a small document
tree: `_Text` (an atom), `_Group` (brackets around comma-separated children)
and `_Prefixed` (a `name=` or `key: ` label before a document). `_render` then
lays that out Black-style, trying three forms of a group in turn: all on one
line; its children together on one indented line between the brackets (so a
layer's fields stay on one line, as in Equinox); each child on its own line,
indented, with a trailing comma. Modules are never printed with `repr()`,
because `Module.__repr__` itself calls `tree_pformat`.
"""

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np


class _Text(NamedTuple):
    text: str


class _Group(NamedTuple):
    open: str
    children: list[Any]
    close: str
    # Flat form of a one-element group that needs a comma: `(1,)`.
    lone_comma: bool = False


class _Prefixed(NamedTuple):
    prefix: str
    doc: Any


def _flat(doc: Any) -> str:
    if isinstance(doc, _Text):
        return doc.text
    if isinstance(doc, _Prefixed):
        return doc.prefix + _flat(doc.doc)
    return doc.open + _flat_children(doc) + doc.close


def _flat_children(group: _Group) -> str:
    inner = ", ".join(_flat(child) for child in group.children)
    if group.lone_comma:
        inner += ","
    return inner


def _render(
    doc: Any, indent: int, column: int, tail: int, width: int, step: int
) -> str:
    """Lay out `doc`, which starts at `column` on a line whose indentation is
    `indent` and is followed by `tail` more characters on its last line."""
    flat = _flat(doc)
    if "\n" not in flat and column + len(flat) + tail <= width:
        return flat
    if isinstance(doc, _Text):
        # A multi-line atom (a full array repr) keeps its own alignment, shifted
        # to where it starts; an atom too long for the line stays as it is.
        return doc.text.replace("\n", "\n" + " " * column)
    if isinstance(doc, _Prefixed):
        rest = _render(doc.doc, indent, column + len(doc.prefix), tail, width, step)
        return doc.prefix + rest
    if not doc.children:
        return doc.open + doc.close
    inner = indent + step
    children = _flat_children(doc)
    if "\n" not in children and inner + len(children) <= width:
        return f"{doc.open}\n{' ' * inner}{children}\n{' ' * indent}{doc.close}"
    # One child per line, separated by commas; as in Equinox, no comma after
    # the last (except the one of a lone tuple element).
    lines = [doc.open]
    last = len(doc.children) - 1
    for i, child in enumerate(doc.children):
        comma = "," if i < last or doc.lone_comma else ""
        text = _render(child, inner, inner, len(comma), width, step)
        lines.append(" " * inner + text + comma)
    lines.append(" " * indent + doc.close)
    return "\n".join(lines)


def _dtype_name(dtype: Any) -> str:
    if dtype.name == "bfloat16":
        return "bf16"
    kind = getattr(dtype, "kind", None)  # PRNG key dtypes have none
    short = {"f": "f", "i": "i", "u": "u", "c": "c"}.get(kind)
    if short is not None:
        return f"{short}{dtype.itemsize * 8}"
    if kind == "b":
        return "bool"
    return str(getattr(dtype, "name", dtype))


def _short_array(
    shape: tuple[int, ...], dtype: Any, suffix: str = "", weak: bool = False
) -> str:
    # A weakly typed array (from a Python scalar: `jnp.array(1)`, `x * 2.0`
    # traced) takes its dtype from what it is combined with; say so.
    prefix = "weak_" if weak else ""
    shape_text = ",".join(str(n) for n in shape)
    return f"{prefix}{_dtype_name(dtype)}[{shape_text}]{suffix}"


def _is_weak(x: jax.Array) -> bool:
    return bool(getattr(getattr(x, "aval", None), "weak_type", False))


# Modules whose types print without the module name, as in Equinox.
_BARE_TYPE_MODULES = frozenset(
    ("builtins", "typing", "typing_extensions", "collections.abc")
)
# `int | str` and `typing.Union[int, str]`; `list[int]` and `typing.List[int]`.
_UNION_TYPES = (types.UnionType, type(typing.Union[int, str]))  # noqa: UP007
_GENERIC_ALIAS_TYPES = (types.GenericAlias, type(typing.List[int]))  # noqa: UP006


def _type_text(cls: type) -> str:
    """A class prints as `module.QualName` (`int`, `Any` for builtins and
    typing), as in Equinox."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None)
    if module is None or qualname is None:
        return repr(cls)
    if module in _BARE_TYPE_MODULES:
        return qualname
    return f"{module}.{qualname}"


def _function_text(obj: Any) -> str | None:
    """How a function prints, or `None` if `obj` is not one."""
    if isinstance(obj, (jax.custom_jvp, jax.custom_vjp)):
        obj = obj.fun
    if isinstance(obj, types.FunctionType):
        # `functools.wraps` and `jax.vmap` & co. copy the name of the function
        # they wrap and point `__wrapped__` at it.
        kind = "wrapped function" if hasattr(obj, "__wrapped__") else "function"
        return f"<{kind} {obj.__qualname__}>"
    # Other callable wrappers, such as `jax.jit(f)` and `jax.nn.relu`, print as
    # the function they wrap (their own repr has a memory address in it).
    wrapped = getattr(obj, "__wrapped__", None)
    if callable(obj) and isinstance(wrapped, types.FunctionType):
        return f"<function {getattr(obj, '__qualname__', wrapped.__qualname__)}>"
    return None


class _Printer:
    def __init__(
        self,
        short_arrays: bool,
        struct_as_array: bool,
        truncate_leaf: Callable[[Any], bool],
    ):
        self.short_arrays = short_arrays
        self.struct_as_array = struct_as_array
        self.truncate_leaf = truncate_leaf
        # Ids of the containers being printed, from the root down: meeting one
        # of them again means the structure contains itself.
        self.active: set[int] = set()

    def doc(self, obj: Any) -> Any:
        if self.truncate_leaf(obj):
            return _Text(f"{type(obj).__name__}(...)")
        if isinstance(obj, jax.Array):
            if self.short_arrays:
                return _Text(_short_array(obj.shape, obj.dtype, weak=_is_weak(obj)))
            return _Text(repr(obj))
        if isinstance(obj, np.ndarray):
            if self.short_arrays:
                return _Text(_short_array(np.shape(obj), obj.dtype, "(numpy)"))
            return _Text(repr(obj))
        if isinstance(obj, jax.ShapeDtypeStruct) and self.struct_as_array:
            return _Text(_short_array(obj.shape, obj.dtype, weak=obj.weak_type))
        if id(obj) in self.active:
            return _Text("<recursive>")
        self.active.add(id(obj))
        try:
            return self._container(obj)
        finally:
            self.active.discard(id(obj))

    def _container(self, obj: Any) -> Any:
        if hasattr(obj, "__func__") and hasattr(obj, "__self__"):
            # A bound method: name it, but do not print the whole object it is
            # bound to (a Module's own repr would follow).
            bound_to = obj.__self__
            owner = (
                bound_to if isinstance(bound_to, type) else type(bound_to)
            ).__name__
            name = getattr(obj.__func__, "__name__", "?")
            return _Text(f"<bound method {owner}.{name}>")
        if _has_own_repr(obj):
            return _Text(repr(obj))
        if obj is None or obj is types.NoneType:
            return _Text("None")
        if obj is Any:
            return _Text("Any")
        if obj is Ellipsis:
            return _Text("...")
        if isinstance(obj, _UNION_TYPES):
            return _Text(" | ".join(_flat(self.doc(a)) for a in typing.get_args(obj)))
        if isinstance(obj, _GENERIC_ALIAS_TYPES):
            origin = self.doc(typing.get_origin(obj))
            arguments = [self.doc(a) for a in typing.get_args(obj)]
            return _Group(f"{_flat(origin)}[", arguments, "]")
        if isinstance(obj, type):
            return _Text(_type_text(obj))
        if dataclasses.is_dataclass(obj):
            return self._dataclass(obj)
        if isinstance(obj, tuple) and hasattr(type(obj), "_fields"):
            children = [
                _Prefixed(f"{name}=", self.doc(value))
                for name, value in zip(type(obj)._fields, obj, strict=True)
            ]
            return _Group(f"{type(obj).__name__}(", children, ")")
        if isinstance(obj, (list, tuple)):
            children = [self.doc(value) for value in obj]
            opening, closing = ("[", "]") if isinstance(obj, list) else ("(", ")")
            lone_comma = isinstance(obj, tuple) and len(obj) == 1
            if type(obj) not in (list, tuple):
                opening, closing = f"{type(obj).__name__}({opening}", closing + ")"
            return _Group(opening, children, closing, lone_comma)
        if isinstance(obj, dict):
            children = [
                _Prefixed(f"{key!r}: ", self.doc(value)) for key, value in obj.items()
            ]
            if type(obj) is dict:
                return _Group("{", children, "}")
            return _Group(f"{type(obj).__name__}({{", children, "})")
        if isinstance(obj, (set, frozenset)):
            children = [self.doc(value) for value in obj]
            if type(obj) is set:
                return _Group("{", children, "}") if obj else _Text("set()")
            return _Group(f"{type(obj).__name__}({{", children, "})")
        if isinstance(obj, functools.partial):
            children = [self.doc(obj.func), *(self.doc(arg) for arg in obj.args)]
            children += [
                _Prefixed(f"{key}=", self.doc(value))
                for key, value in obj.keywords.items()
            ]
            return _Group(f"{type(obj).__name__}(", children, ")")
        function = _function_text(obj)
        if function is not None:
            return _Text(function)
        return _Text(repr(obj))

    def _dataclass(self, obj: Any) -> _Group:
        # As in Equinox: fields with `repr=False` are left out, and so are
        # fields that hold their default value itself (`is`, not `==`);
        # private names show as written (`__x`, not `_Class__x`).
        mangled = f"_{type(obj).__name__}__"
        children = []
        for f in dataclasses.fields(obj):
            if not f.repr:
                continue
            value = getattr(obj, f.name, _UNSET)
            if value is f.default:
                continue
            name = (
                "__" + f.name[len(mangled) :] if f.name.startswith(mangled) else f.name
            )
            text = _Text("<uninitialised>") if value is _UNSET else self.doc(value)
            children.append(_Prefixed(f"{name}=", text))
        return _Group(f"{type(obj).__name__}(", children, ")")


_UNSET = object()


def _has_own_repr(obj: Any) -> bool:
    # A Module whose class overrides `Module.__repr__` (which is marked, and
    # delegates here) prints as its own repr says.
    cls = type(obj)
    return hasattr(cls, "__pytreemod_info__") and not getattr(
        cls.__repr__, "_uses_tree_pformat", False
    )


def tree_pformat(
    pytree: Any,
    *,
    width: int = 80,
    indent: int = 2,
    short_arrays: bool = True,
    struct_as_array: bool = False,
    truncate_leaf: Callable[[Any], bool] = lambda _: False,
) -> str:
    """Format a pytree (or any object) as an indented, readable string.

    A list, tuple, dict, set, namedtuple, dataclass or Module goes on one line
    when it fits in `width`; otherwise its children go together on one line
    between the brackets, indented by `indent`, when they fit there; otherwise
    each child goes on its own line, with a comma after each but the last (as
    in Equinox). How things print:

    - JAX arrays as `f32[8,8]`, NumPy arrays as `f32[8,8](numpy)` (with
      `short_arrays=False`, their full `repr`); NumPy scalars by their `repr`;
    - dataclasses and Modules as `ClassName(field=value, ...)`, over the fields
      with `repr=True`, leaving out those that hold their default value
      itself (`value is default`), as in Equinox;
    - classes as `module.QualName` (`int`, `Any` for builtins and `typing`),
      `X | None` for unions, `list[int]` for generic aliases, `...`;
    - JAX arrays with a weak dtype (made from Python scalars) as `weak_i32[]`;
    - functions as `<function qualified.name>` (`<wrapped function name>` for
      one made by `functools.wraps`), `jax.jit`-compiled ones as the function
      they compile, built-ins by their `repr`; bound methods (also a Module's
      `module.method`) as `<bound method ClassName.name>`, without the object
      they are bound to; `functools.partial` and `jax.tree_util.Partial` as
      `partial(<function f>, arg, key=value)`;
    - `jax.ShapeDtypeStruct` like an array with `struct_as_array=True`, else
      by its `repr`;
    - a container met again inside itself as `<recursive>`;
    - anything else by its `repr`.

    Args:
        pytree: the object to format.
        width: the line width to fit in.
        indent: spaces added per nesting level when a node is split over lines.
        short_arrays: print arrays as dtype and shape only.
        struct_as_array: print `jax.ShapeDtypeStruct`s like arrays.
        truncate_leaf: objects for which this returns `True` print as
            `ClassName(...)`, without their contents.

    Returns:
        The formatted string, without a trailing newline.

    Example:
        >>> import jax.numpy as jnp
        >>> def relu(x):
        ...     return jnp.maximum(x, 0)
        >>> tree = {"w": jnp.zeros((2, 3)), "b": (1,), "f": relu}
        >>> print(tree_pformat(tree))
        {'w': f32[2,3], 'b': (1,), 'f': <function relu>}
        >>> print(tree_pformat(tree, width=20))
        {
          'w': f32[2,3],
          'b': (1,),
          'f': <function relu>
        }
    """
    printer = _Printer(short_arrays, struct_as_array, truncate_leaf)
    return _render(printer.doc(pytree), 0, 0, 0, width, indent)


def tree_pprint(
    pytree: Any,
    *,
    width: int = 80,
    indent: int = 2,
    short_arrays: bool = True,
    struct_as_array: bool = False,
    truncate_leaf: Callable[[Any], bool] = lambda _: False,
) -> None:
    """Print `tree_pformat(pytree, ...)`, followed by a newline.

    Args:
        pytree: the object to print.
        width, indent, short_arrays, struct_as_array, truncate_leaf: as for
            `tree_pformat`.

    Returns:
        `None`.

    Example:
        >>> import jax.numpy as jnp
        >>> tree_pprint([jnp.ones(3), None, "a"])
        [f32[3], None, 'a']
    """
    print(
        tree_pformat(
            pytree,
            width=width,
            indent=indent,
            short_arrays=short_arrays,
            struct_as_array=struct_as_array,
            truncate_leaf=truncate_leaf,
        )
    )
