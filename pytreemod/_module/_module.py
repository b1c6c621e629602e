"""`Module`: a frozen dataclass that is a pytree.

Creating a subclass runs `_ModuleMeta.__new__`, which turns the class into a
dataclass, registers it as a pytree node with generated flatten/unflatten
functions (see `_flatten.py`), wraps its methods so that `module.method` is a
pytree too, and records what construction must do (converters, checks,
abstract attributes). Constructing an instance runs `_ModuleMeta.__call__`:
`__init__`, then defaults and the unset-field check, converters, the static
array warning, and `__check_init__` of every class in the hierarchy.
"""

import abc
import dataclasses
import functools
import types
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import jax
from typing_extensions import dataclass_transform

from ._abstract import AbstractClassVar, AbstractVar, annotation_kind
from ._field import CONVERTER, STATIC, field
from ._flatten import register_module_pytree
from ._is_array import is_array
from ._pformat import tree_pformat
from ._tree_equal import tree_equal

# Present in an instance's `__dict__` only while `__init__` runs: assignment
# is allowed exactly then.
_INITIALISING = "__pytreemod_initialising__"

_METHOD_ASSIGNMENT_ERROR = """\
`self.{name} = self.{method}` assigns a method of this Module to one of its own
fields. `self.{method}` is a bound method holding `self`, so the Module would
contain itself: a reference cycle that cannot be flattened as a pytree.
Call the method where you need it instead, or store the plain function and
call it with the module:
    {name}: Callable = field(static=True)
    ...
    self.{name} = type(self).{method}      # later: self.{name}(self, ...)
"""

_FROZEN_ERROR = (
    "cannot {verb} field {name!r} of {cls}: a Module is immutable once __init__ "
    "has returned. To get a modified copy, use "
    "`pytreemod.tree_at(lambda m: m.{name}, module, new_value)`."
)


class _ClassInfo(NamedTuple):
    """What constructing and flattening an instance of one class needs,
    computed once at class creation."""

    flatten: Callable[[Any], Any]
    unflatten: Callable[[Any, Any], Any]
    field_names: frozenset[str]
    dynamic_names: tuple[str, ...]
    # name -> zero-argument function giving the default; used to fill fields
    # that a custom `__init__` left unset.
    defaults: dict[str, Callable[[], Any]]
    converters: tuple[tuple[str, Callable[[Any], Any]], ...]
    static_names: tuple[str, ...]
    check_inits: tuple[Callable[[Any], None], ...]
    abstract_error: str | None


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _split_abstract_annotations(
    namespace: dict[str, Any],
) -> tuple[set[str], set[str], set[str]]:
    """Remove `AbstractVar`/`AbstractClassVar` annotations from the class body
    (they are declarations, not fields) and return (abstract vars, abstract
    class vars, names this body annotates as ClassVar)."""
    annotations = namespace.get("__annotations__", {})
    abstract_vars, abstract_class_vars, class_vars = set(), set(), set()
    for name, annotation in list(annotations.items()):
        kind = annotation_kind(annotation)
        if kind == "AbstractVar":
            abstract_vars.add(name)
            del annotations[name]
        elif kind == "AbstractClassVar":
            abstract_class_vars.add(name)
            del annotations[name]
        elif kind == "ClassVar":
            class_vars.add(name)
    return abstract_vars, abstract_class_vars, class_vars


def _default_getter(f: dataclasses.Field) -> Callable[[], Any] | None:
    if f.default is not dataclasses.MISSING:
        return lambda: f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    return None


_T = TypeVar("_T")


@dataclass_transform(field_specifiers=(dataclasses.field, field))
class _ModuleMeta(abc.ABCMeta):
    """The metaclass of `Module`: builds the dataclass, registers the pytree,
    and runs the construction protocol."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict, **kwargs):
        new_vars, new_class_vars, class_vars = _split_abstract_annotations(namespace)
        for attr, value in list(namespace.items()):
            if isinstance(value, types.FunctionType) and not _is_dunder(attr):
                namespace[attr] = _MethodDescriptor(value)
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)

        # A class keeps the nearest user-written `__init__` of its hierarchy;
        # only when there is none does the dataclass generate one.
        custom_init = "__init__" in namespace or any(
            getattr(base, "__pytreemod_custom_init__", False) for base in bases
        )
        cls.__pytreemod_custom_init__ = custom_init
        if "__init__" in namespace and hasattr(cls, "__post_init__"):
            warnings.warn(
                f"{cls.__qualname__} defines both `__init__` and `__post_init__`; "
                "`__post_init__` only runs after a dataclass-generated `__init__`, "
                "so it will not run. Move its body to the end of `__init__`.",
                stacklevel=2,
            )
        dataclasses.dataclass(eq=False, repr=False, init=not custom_init)(cls)

        annotated = set(namespace.get("__annotations__", {}))
        provided = annotated | set(namespace)
        inherited_vars: set[str] = set()
        inherited_class_vars: set[str] = set()
        for base in bases:
            inherited_vars |= getattr(base, "__pytreemod_abstract_vars__", set())
            inherited_class_vars |= getattr(
                base, "__pytreemod_abstract_class_vars__", set()
            )
        for attr in sorted(inherited_class_vars & (annotated - class_vars)):
            raise TypeError(
                f"{cls.__qualname__}.{attr} is declared `AbstractClassVar` in a base "
                f"class, so it must be provided as a class variable: write "
                f"`{attr}: ClassVar[...] = ...`, not a field."
            )
        cls.__pytreemod_abstract_vars__ = (inherited_vars | new_vars) - provided
        cls.__pytreemod_abstract_class_vars__ = (
            inherited_class_vars | new_class_vars
        ) - (class_vars | set(namespace))

        fields = dataclasses.fields(cls)
        dynamic = [f.name for f in fields if not f.metadata.get(STATIC, False)]
        static = [f.name for f in fields if f.metadata.get(STATIC, False)]
        flatten, unflatten = register_module_pytree(cls, dynamic, static)
        # Used for fields that `__init__` leaves unset: those a custom
        # `__init__` skips, and `init=False` fields.
        defaults = {}
        for f in fields:
            getter = _default_getter(f)
            if getter is not None:
                defaults[f.name] = getter
        cls.__pytreemod_info__ = _ClassInfo(
            flatten=flatten,
            unflatten=unflatten,
            field_names=frozenset(f.name for f in fields),
            dynamic_names=tuple(dynamic),
            defaults=defaults,
            converters=tuple(
                (f.name, f.metadata[CONVERTER])
                for f in fields
                if CONVERTER in f.metadata
            ),
            static_names=tuple(static),
            check_inits=tuple(
                klass.__dict__["__check_init__"]
                for klass in reversed(cls.__mro__)
                if "__check_init__" in klass.__dict__
            ),
            abstract_error=_abstract_error(cls),
        )
        return cls

    # Typed as returning an instance of `cls`, so that type checkers go on to
    # check the arguments against the class's `__init__` (a metaclass
    # `__call__` returning `Any` would hide the class and its signature).
    def __call__(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
        info: _ClassInfo = cls.__pytreemod_info__
        if info.abstract_error is not None:
            raise TypeError(info.abstract_error)
        self = cls.__new__(cls)
        values = self.__dict__
        values[_INITIALISING] = True
        cls.__init__(self, *args, **kwargs)
        del values[_INITIALISING]
        if len(values) != len(info.field_names):
            _fill_defaults_or_raise(self, info)
        for name, converter in info.converters:
            values[name] = converter(values[name])
        for name in info.static_names:
            if is_array(values[name]):
                warnings.warn(
                    f"{cls.__qualname__}.{name} is a static field holding an array. "
                    "Static values are hashed into the treedef and never traced, "
                    "so transforms bake the array in as a constant (and cannot "
                    "hash a JAX array). Make it a regular field, or store a "
                    "tuple if it really is configuration.",
                    stacklevel=2,
                )
        for check in info.check_inits:
            check(self)
        return self


def _abstract_error(cls: type) -> str | None:
    missing = [
        *(f"abstract variable `{n}`" for n in sorted(cls.__pytreemod_abstract_vars__)),
        *(
            f"abstract class variable `{n}`"
            for n in sorted(cls.__pytreemod_abstract_class_vars__)
        ),
        *(f"abstract method `{n}`" for n in sorted(cls.__abstractmethods__)),
    ]
    if not missing:
        return None
    return (
        f"Can't instantiate abstract class {cls.__qualname__}: it does not "
        f"provide {', '.join(missing)}. Subclass it and define "
        f"{'it' if len(missing) == 1 else 'them'}, then instantiate the subclass."
    )


def _fill_defaults_or_raise(self: Any, info: _ClassInfo) -> None:
    values = self.__dict__
    missing = []
    for name in sorted(info.field_names - values.keys()):
        if name in info.defaults:
            values[name] = info.defaults[name]()
        else:
            missing.append(name)
    if missing:
        names = ", ".join(f"`{n}`" for n in missing)
        raise TypeError(
            f"{type(self).__qualname__}.__init__ left the field(s) {names} unset. "
            f"Assign every field in `__init__` (e.g. `self.{missing[0]} = ...`), "
            "or give it a default in the class body."
        )


class Module(metaclass=_ModuleMeta):
    """Base class for models: a frozen dataclass that is a JAX pytree.

    Declare fields with annotations in the class body. Array fields (and
    anything else not marked static) are pytree children, so transforms trace
    them; `field(static=True)` fields are part of the treedef. Fields are set
    by the generated `__init__`, or by `self.x = ...` in a custom `__init__`;
    afterwards the instance is immutable (use `tree_at` for modified copies).

    - `__post_init__` runs after a generated `__init__` and may assign fields.
    - `field(converter=f)` values are converted after initialisation.
    - `__check_init__(self)`, if a class defines it, runs after that for every
      class in the hierarchy (bases first) and may raise to reject the values.
    - `module.method` is itself a pytree (a `BoundMethod`), so it can be passed
      to transforms.
    - `==` compares structure and leaves (`tree_equal`); `repr` is an indented
      tree with arrays shown as `f32[3,2]`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> class Linear(pytreemod.Module):
        ...     weight: jax.Array
        ...     bias: jax.Array
        ...     def __call__(self, x):
        ...         return self.weight @ x + self.bias
        >>> layer = Linear(jnp.ones((2, 3)), jnp.zeros(2))
        >>> layer(jnp.ones(3))
        Array([3., 3.], dtype=float32)
        >>> layer
        Linear(weight=f32[2,3], bias=f32[2])
        >>> jax.tree_util.tree_leaves(layer)[1]
        Array([0., 0.], dtype=float32)
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if _INITIALISING not in self.__dict__:
            raise dataclasses.FrozenInstanceError(
                _FROZEN_ERROR.format(
                    verb="assign to", name=name, cls=type(self).__name__
                )
            )
        if name not in type(self).__pytreemod_info__.field_names:
            raise AttributeError(
                f"cannot assign `self.{name}`: {name!r} is not a field of "
                f"{type(self).__qualname__}. Declare it in the class body, e.g. "
                f"`{name}: jax.Array` (or `{name}: int = field(static=True)` for "
                "configuration that is not an array)."
            )
        if isinstance(value, BoundMethod) and value.__self__ is self:
            raise ValueError(
                _METHOD_ASSIGNMENT_ERROR.format(
                    name=name, method=value.__func__.__name__
                )
            )
        self.__dict__[name] = value

    def __delattr__(self, name: str) -> None:
        if _INITIALISING not in self.__dict__:
            raise dataclasses.FrozenInstanceError(
                _FROZEN_ERROR.format(verb="delete", name=name, cls=type(self).__name__)
            )
        object.__delattr__(self, name)

    def __eq__(self, other: object) -> Any:
        return tree_equal(self, other)

    def __hash__(self) -> int:
        # Consistent with `==`: equal modules have equal types, structure,
        # static fields and non-array leaves. Arrays cannot be hashed and are
        # left out, so a Module is hashable whenever its static parts are, and
        # can key a dict or be given to `jax.jit` as the function.
        parts: list = []
        _hash_parts(self, type(self).__name__, parts)
        return hash(tuple(parts))

    def __repr__(self) -> str:
        return tree_pformat(self)

    __repr__._uses_tree_pformat = True  # type: ignore[attr-defined]


def _hash_parts(tree: Any, path: str, parts: list) -> None:
    """Append to `parts` everything of `tree` that `hash(module)` covers: types,
    treedefs, static values and non-array leaves, checking each is hashable so
    that an error can name where the unhashable value sits."""
    if isinstance(tree, Module):
        info = type(tree).__pytreemod_info__
        parts.append(type(tree))
        values = tree.__dict__
        for name in info.static_names:
            parts.append(_checked_hashable(values[name], f"{path}.{name}"))
        for name in info.dynamic_names:
            _hash_parts(values[name], f"{path}.{name}", parts)
        return
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_module)
    parts.append(treedef)
    for key_path, leaf in leaves:
        leaf_path = path + jax.tree_util.keystr(key_path)
        if isinstance(leaf, Module):
            _hash_parts(leaf, leaf_path, parts)
        elif not is_array(leaf):
            parts.append(_checked_hashable(leaf, leaf_path))


def _is_module(x: Any) -> bool:
    return isinstance(x, Module)


def _checked_hashable(value: Any, path: str) -> Any:
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"cannot hash this Module: `{path}` holds an unhashable "
            f"{type(value).__name__}. Static fields and non-array leaves must be "
            "hashable; store a tuple or frozenset instead."
        ) from None
    return value


class _MethodDescriptor:
    """Wraps a function defined in a Module class body, so that looking it up
    on an instance gives a `BoundMethod` (a pytree) instead of a plain bound
    method."""

    def __init__(self, method: types.FunctionType):
        self.method = method
        functools.update_wrapper(self, method)

    @property
    def __isabstractmethod__(self) -> bool:
        return getattr(self.method, "__isabstractmethod__", False)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self.method
        return _make_bound_method((self.method,), (instance,))

    def __repr__(self) -> str:
        return f"<pytreemod method {self.method.__qualname__}>"


class BoundMethod(Module):
    """A method bound to a Module instance; it is a pytree whose leaves are the
    module's leaves, so `jax.jit(model.method)` and `filter_jit(model.method)`
    trace the module's arrays instead of baking them in.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> class Affine(pytreemod.Module):
        ...     scale: jax.Array
        ...     def apply(self, x):
        ...         return self.scale * x
        >>> m = Affine(jnp.array(2.0, dtype=jnp.float32))
        >>> jax.tree_util.tree_leaves(m.apply)
        [Array(2., dtype=float32)]
        >>> jax.jit(m.apply)(jnp.array(3.0, dtype=jnp.float32))
        Array(6., dtype=float32)
    """

    __func__: types.FunctionType = field(static=True)
    __self__: Module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    @property
    def __wrapped__(self) -> types.MethodType:
        # Lets `inspect.signature` show the signature without `self`.
        return types.MethodType(self.__func__, self.__self__)

    @property
    def __name__(self) -> str:
        return self.__func__.__name__


_make_bound_method = BoundMethod.__pytreemod_info__.unflatten

__all__ = ["AbstractClassVar", "AbstractVar", "BoundMethod", "Module", "field"]
