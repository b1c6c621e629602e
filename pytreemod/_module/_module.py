"""`Module`: a frozen dataclass that is a pytree.

Creating a subclass runs `_ModuleMeta.__new__`, which turns the class into a
dataclass, registers it as a pytree node with generated flatten/unflatten
functions (see `_flatten.py`), and records what construction must do
(converters, checks, abstract attributes). Methods stay plain functions in
the class `__dict__`; `Module.__getattribute__` turns `module.method` into a
`BoundMethod`, a pytree. Constructing an instance runs `_ModuleMeta.__call__`:
`__new__` and `__init__` (as `type.__call__` would), the unset-field check,
converters, the static-array warning, and `__check_init__` of every class in
the hierarchy.
"""

import abc
import collections
import dataclasses
import inspect
import types
import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeVar

import jax
from typing_extensions import dataclass_transform

from ._abstract import (
    AbstractClassVar,
    AbstractVar,
    abstract_attributes,
    split_abstract_annotations,
)
from ._compat import jax_transform_types
from ._field import CONVERTER, STATIC, field
from ._flatten import WRAPPER_FIELD_NAMES, register_module_pytree
from ._is_array import is_array, is_array_like
from ._pformat import tree_pformat
from ._tree_equal import tree_equal

# Present in an instance's `__dict__` only while `__init__` runs: assignment
# is allowed exactly then.
_INITIALISING = "__pytreemod_initialising__"

_object_new = object.__new__
_object_getattribute = object.__getattribute__
_MethodType = types.MethodType
# An instance's `__dict__`, read without `Module.__getattribute__`. Set once
# `Module` exists (every Module instance has its `__dict__` slot).
_get_dict: Callable[[Any], dict] = vars

_METHOD_ASSIGNMENT_ERROR = """\
Cannot assign methods in __init__. `self.{name} = self.{method}` assigns a
method of this Module to one of its own fields. `self.{method}` is a bound
method holding `self`, so the Module would contain itself: a reference cycle
that cannot be flattened as a pytree. Use a property, which is not stored in
the pytree:
    @property
    def {name}(self):
        return self.{method}
or store the plain function and call it with the module:
    {name}: Callable = field(static=True)
    ...
    self.{name} = type(self).{method}      # later: self.{name}(self, ...)
"""

_FROZEN_ERROR = (
    "cannot {verb} field {name!r}. A {cls} is immutable once __init__ has "
    "returned. To get a modified copy, use "
    "`pytreemod.tree_at(lambda m: m.{name}, module, new_value)`."
)

_NOT_A_FIELD_ERROR = (
    "cannot assign to field {name!r}. {name!r} is not a field of {cls}: declare "
    "it in the class body, e.g. `{name}: jax.Array` (or "
    "`{name}: int = field(static=True)` for configuration that is not an array)."
)

_POST_INIT_ERROR = """\
Class `{cls.__module__}.{cls.__qualname__}` has both an `__init__` method and a
`__post_init__` method. This means that the `__post_init__` method will not be
run: `__post_init__` runs only after a dataclass-generated `__init__`, and a
custom `__init__` replaces that. Move its body to the end of `__init__`, or use
`__check_init__` (always run, after `__init__`) for checks of invariants.
"""

_UNSET_ERROR = (
    "Field {name!r} was not initialized. {cls}.__init__ left {names} unset and "
    "the class has no value of that name to fall back on. Assign every field "
    "in `__init__` or `__post_init__` (e.g. `self.{name} = ...`), or give it a "
    "default in the class body."
)

_STATIC_ARRAY_WARNING = (
    "A JAX array is being set as static! This can result in unexpected "
    "behavior and is usually a mistake to do. `{cls}.{name}` is a static field "
    "holding an array: static values are hashed into the treedef and never "
    "traced, so transforms bake the array in as a constant (and cannot hash a "
    "JAX array). Make it a regular field, or store a tuple if it really is "
    "configuration."
)

_TRANSFORMED_WARNING = """\
Possibly assigning a JAX-transformed callable as an attribute on
{cls.__module__}.{cls.__qualname__}. This will not have any of its parameters \
updated: `{name}` holds the result of a JAX transform (`jax.jit`, `jax.vmap`,
`jax.grad`, ...) applied to a pytree with arrays, and that result is not a
pytree, so the arrays inside are invisible to every later transform (no
gradients, no updates). Store the model itself and transform it where it is
called, `jax.vmap(self.{name})(x)`, or use the filtered transform
(`pytreemod.filter_vmap(...)`), which returns a pytree.
"""

_ABSTRACT_MODULE_ERROR = (
    "Cannot instantiate abstract `equinox.Module`. {cls} was declared abstract "
    "(`is_abstract=True`, or `strict=StrictConfig(force_abstact=True)`); "
    "instantiate a subclass of it instead."
)

_TRANSFORM_TYPES = jax_transform_types()


class _ClassInfo(NamedTuple):
    """What constructing and flattening an instance of one class needs,
    computed once at class creation."""

    flatten: Callable[[Any], Any]
    unflatten: Callable[[Any, Any], Any]
    field_names: frozenset[str]
    # All fields, in declaration order.
    field_order: tuple[str, ...]
    dynamic_names: tuple[str, ...]
    converters: tuple[tuple[str, Callable[[Any], Any]], ...]
    static_names: tuple[str, ...]
    # Each class's own `__check_init__`, in MRO order (the subclass's first).
    check_inits: tuple[Callable[[Any], None], ...]
    abstract_error: str | None
    # Whether this class's `__init__` was generated by the dataclass.
    generated_init: bool


def StrictConfig(  # noqa: N802 - Equinox's name
    force_abstact: bool = False, **kwargs: object
) -> Literal[False] | None:
    """The legacy value of the `strict=` class keyword of `Module`, kept so that
    code written for Equinox runs unchanged.

    `class M(Module, strict=StrictConfig(force_abstact=True))` marks `M` as
    abstract (it cannot be instantiated, its subclasses can); every other
    value, and `strict=True`, has no effect. The argument's spelling is
    Equinox's; other keywords are accepted and ignored.

    Returns:
        `None` (abstract) if `force_abstact`, else `False`.

    Example:
        >>> import pytreemod
        >>> class Base(pytreemod.Module, strict=StrictConfig(force_abstact=True)):
        ...     pass
        >>> class Concrete(Base):
        ...     pass
        >>> Concrete()
        Concrete()
    """
    del kwargs
    return None if force_abstact else False


def _has_custom_init(cls: type) -> bool:
    """Whether `cls` keeps a user-written `__init__`: the nearest `__init__` of
    its MRO is its own, or belongs to a class that is not a Module, or to a
    Module that had a custom one. Only when it is a dataclass-generated one
    does the dataclass generate a new `__init__` for `cls` (with its fields)."""
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__:
            continue
        if klass is cls or klass is object:
            return klass is cls
        info = klass.__dict__.get("__pytreemod_info__")
        return info is None or not info.generated_init
    return False


def _converter_input_type(converter: Callable[[Any], Any]) -> Any:
    """The annotation of a converter's first parameter, or `Any`."""
    try:
        parameters = list(inspect.signature(converter).parameters.values())
    except (TypeError, ValueError):
        return Any
    if not parameters or parameters[0].kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.VAR_KEYWORD,
    ):
        return Any
    annotation = parameters[0].annotation
    return Any if annotation is inspect.Parameter.empty else annotation


def _finish_generated_init(cls: type, fields: tuple[dataclasses.Field, ...]) -> None:
    """Give a dataclass-generated `__init__` the docstring of the `__init__` it
    overrides, and annotate each field with a converter by the converter's
    input type (what `__init__` really accepts)."""
    init = cls.__dict__["__init__"]
    for klass in cls.__mro__[1:]:
        if "__init__" in klass.__dict__:
            init.__doc__ = getattr(klass.__dict__["__init__"], "__doc__", None)
            break
    annotations = init.__annotations__
    for f in fields:
        if CONVERTER in f.metadata and f.name in annotations:
            annotations[f.name] = _converter_input_type(f.metadata[CONVERTER])


def _format_names(names: frozenset[str]) -> str:
    return "{" + ", ".join(repr(n) for n in sorted(names)) + "}"


def _abstract_error(cls: Any, is_abstract: bool) -> str | None:
    """The error for instantiating `cls`, if it is abstract; its first sentence
    is Equinox's (or Python's, for abstract methods)."""
    class_vars, variables = cls.__abstractclassvars__, cls.__abstractvars__
    methods = cls.__abstractmethods__
    if class_vars:
        first = (
            f"Can't instantiate abstract class {cls.__name__} with abstract class "
            f"attributes {_format_names(class_vars)}."
        )
    elif variables:
        first = (
            f"Can't instantiate abstract class {cls.__name__} with abstract "
            f"attributes {_format_names(variables)}."
        )
    elif methods:
        try:
            _object_new(cls)
        except TypeError as error:
            first = str(error).rstrip(".") + "."
        else:  # pragma: no cover - Python refuses abstract classes itself
            first = f"Can't instantiate abstract class {cls.__name__}."
    elif is_abstract:
        return _ABSTRACT_MODULE_ERROR.format(cls=cls.__qualname__)
    else:
        return None
    missing = [
        *(f"abstract variable `{n}`" for n in sorted(variables)),
        *(f"abstract class variable `{n}`" for n in sorted(class_vars)),
        *(f"abstract method `{n}`" for n in sorted(methods)),
    ]
    return (
        f"{first} {cls.__qualname__}: it does not provide {', '.join(missing)}. "
        f"Subclass it and define {'it' if len(missing) == 1 else 'them'}, then "
        "instantiate the subclass."
    )


_T = TypeVar("_T")


@dataclass_transform(field_specifiers=(dataclasses.field, field))
class _ModuleMeta(abc.ABCMeta):
    """The metaclass of `Module`: builds the dataclass, registers the pytree,
    and runs the construction protocol."""

    def __new__(
        mcs,
        name: str,
        bases: tuple[type, ...],
        namespace: dict,
        *,
        strict: bool | None = False,
        is_abstract: bool = False,
        **kwargs: Any,
    ):
        # `strict=None` is what `StrictConfig(force_abstact=True)` gives;
        # `strict=True` and `False` mean nothing any more, as in Equinox.
        if strict is None:
            is_abstract = True
        kinds = split_abstract_annotations(namespace)
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        global _get_dict
        if _get_dict is vars:  # creating `Module` itself
            _get_dict = cls.__dict__["__dict__"].__get__

        custom_init = _has_custom_init(cls)
        if custom_init and hasattr(cls, "__post_init__"):
            warnings.warn(_POST_INIT_ERROR.format(cls=cls), UserWarning, stacklevel=2)
        dataclasses.dataclass(eq=False, repr=False, init=not custom_init)(cls)
        fields = dataclasses.fields(cls)
        if not custom_init:
            _finish_generated_init(cls, fields)

        cls.__abstractvars__, cls.__abstractclassvars__ = abstract_attributes(
            cls, kinds
        )

        dynamic = [f.name for f in fields if not f.metadata.get(STATIC, False)]
        static = [f.name for f in fields if f.metadata.get(STATIC, False)]
        flatten, unflatten = register_module_pytree(cls, dynamic, static, _get_dict)
        cls.__pytreemod_info__ = _ClassInfo(
            flatten=flatten,
            unflatten=unflatten,
            field_names=frozenset(f.name for f in fields),
            field_order=tuple(f.name for f in fields),
            dynamic_names=tuple(dynamic),
            converters=tuple(
                (f.name, f.metadata[CONVERTER])
                for f in fields
                if CONVERTER in f.metadata
            ),
            static_names=tuple(static),
            check_inits=tuple(
                klass.__dict__["__check_init__"]
                for klass in cls.__mro__
                if "__check_init__" in klass.__dict__
            ),
            abstract_error=_abstract_error(cls, is_abstract),
            generated_init=not custom_init,
        )
        return cls

    @property
    def __signature__(cls) -> inspect.Signature:
        # `inspect.signature(SomeModule)` is its `__init__`'s, without `self`
        # (else it would be this metaclass's `__call__`).
        signature = inspect.signature(cls.__init__)
        parameters = list(signature.parameters.values())
        if parameters and parameters[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            parameters = parameters[1:]
        return signature.replace(parameters=parameters)

    # Typed as returning an instance of `cls`, so that type checkers go on to
    # check the arguments against the class's `__init__` (a metaclass
    # `__call__` returning `Any` would hide the class and its signature).
    def __call__(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
        info: _ClassInfo = cls.__pytreemod_info__
        if info.abstract_error is not None:
            raise TypeError(info.abstract_error)
        # As `type.__call__`: a custom `__new__` gets the arguments, and
        # `__init__` runs only on an instance of `cls`.
        new = cls.__new__
        if new is _object_new:
            self = _object_new(cls)
        else:
            self = new(cls, *args, **kwargs)
            if not isinstance(self, cls):
                return self
        values = _get_dict(self)
        values[_INITIALISING] = True
        cls.__init__(self, *args, **kwargs)
        del values[_INITIALISING]
        if len(values) != len(info.field_names):
            _check_unset(self, info)
        for name, converter in info.converters:
            values[name] = converter(
                values[name] if name in values else getattr(self, name)
            )
        for name in info.static_names:
            if name in values and _holds_array(values[name]):
                warnings.warn(
                    _STATIC_ARRAY_WARNING.format(cls=cls.__qualname__, name=name),
                    UserWarning,
                    stacklevel=2,
                )
        for check in info.check_inits:
            check(self)
        return self


# Values that are never arrays nor hold one: the common static fields.
_PLAIN_TYPES = frozenset((int, str, bool, float, type(None)))
# The pytree nodes whose flatten sorts their keys, which raises for keys that
# cannot be ordered (`{meters: 1, seconds: -1}` keyed by plain objects).
_SORTED_DICT_TYPES = frozenset((dict, collections.defaultdict))


def _is_sorted_dict(value: Any) -> bool:
    return type(value) in _SORTED_DICT_TYPES


def _holds_array(value: Any) -> bool:
    """Whether a static field's `value` holds a JAX or NumPy array, for the
    static-array warning. Never raises: any value constructs. Dicts are walked
    by their values, not through JAX's flatten, which sorts keys; a value
    whose own pytree flatten raises is taken to hold none, since a static
    value is never flattened by transforms either."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return False
    if kind in _SORTED_DICT_TYPES:
        return any(_holds_array(item) for item in value.values())
    try:
        leaves = jax.tree_util.tree_leaves(value, is_leaf=_is_sorted_dict)
    except Exception:
        return False
    return any(
        _holds_array(leaf) if type(leaf) in _SORTED_DICT_TYPES else is_array(leaf)
        for leaf in leaves
    )


def _check_unset(self: Any, info: _ClassInfo) -> None:
    """Raise for a field that `__init__` left unset, unless the class has a
    value of that name (a default, a property, a class attribute): as in
    Equinox, such a field stays out of the instance (and its pytree), and
    attribute lookup finds the class's value."""
    values, cls = _get_dict(self), type(self)
    unset = [
        n
        for n in info.field_order
        if n not in values and not any(n in k.__dict__ for k in cls.__mro__)
    ]
    if unset:
        raise TypeError(
            _UNSET_ERROR.format(
                name=unset[0],
                cls=cls.__qualname__,
                names=", ".join(f"`{n}`" for n in unset),
            )
        )


def _warn_if_transformed_module(cls: type, name: str, value: Any) -> None:
    """Warn if `value`, the result of a JAX transform, wraps a pytree with
    arrays (looking along its `__wrapped__` chain)."""
    for _ in range(100):  # a `__wrapped__` chain may loop
        try:
            value = value.__wrapped__
        except Exception:
            return
        try:
            leaves = jax.tree_util.tree_leaves(value)
        except Exception:
            return
        if any(is_array_like(leaf) for leaf in leaves):
            warnings.warn(
                _TRANSFORMED_WARNING.format(cls=cls, name=name),
                UserWarning,
                stacklevel=3,
            )
            return


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
      class in the hierarchy (the subclass's first) and may raise to reject
      the values.
    - Methods stay plain functions in the class; `module.method` is itself a
      pytree (a `BoundMethod`), so it can be passed to transforms.
    - `==` compares structure and leaves (`tree_equal`); `repr` is an indented
      tree with arrays shown as `f32[3,2]`.
    - Class keywords: `is_abstract=True` makes a class that cannot be
      instantiated (its subclasses can); `strict=` is accepted as in Equinox
      (see `StrictConfig`).

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

    def __getattribute__(self, name: str) -> Any:
        # A method found on the class binds as a plain `types.MethodType`;
        # hand out a `BoundMethod` (a pytree holding `self`) instead. Methods
        # stay plain functions in the class `__dict__`, and magic methods
        # (`__call__`, ...) stay plain bound methods, as in Equinox.
        value = _object_getattribute(self, name)
        if (
            type(value) is _MethodType
            and value.__self__ is self
            and not (name[:2] == "__" and name[-2:] == "__")
        ):
            return _make_bound_method((value.__func__,), (self,))
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        values = _get_dict(self)
        if _INITIALISING not in values:
            if name == "__orig_class__":
                # `SomeModule[int]()` records its alias on the new instance
                # after construction, and ignores the error: as in Equinox,
                # the value is stored and the assignment still fails.
                values[name] = value
            raise dataclasses.FrozenInstanceError(
                _FROZEN_ERROR.format(
                    verb="assign to", name=name, cls=type(self).__qualname__
                )
            )
        if (
            name not in type(self).__pytreemod_info__.field_names
            and name not in WRAPPER_FIELD_NAMES
        ):
            raise dataclasses.FrozenInstanceError(
                _NOT_A_FIELD_ERROR.format(name=name, cls=type(self).__qualname__)
            )
        kind = type(value)
        if kind is BoundMethod and _get_dict(value)["__self__"] is self:
            raise ValueError(
                _METHOD_ASSIGNMENT_ERROR.format(
                    name=name, method=value.__func__.__name__
                )
            )
        if kind in _TRANSFORM_TYPES:
            _warn_if_transformed_module(type(self), name, value)
        values[name] = value

    def __delattr__(self, name: str) -> None:
        if _INITIALISING not in _get_dict(self):
            raise dataclasses.FrozenInstanceError(
                _FROZEN_ERROR.format(
                    verb="delete", name=name, cls=type(self).__qualname__
                )
            )
        object.__delattr__(self, name)

    def __eq__(self, other: object) -> Any:
        return tree_equal(self, other)

    def __hash__(self) -> int:
        # Consistent with `==`: equal modules have equal types, structure,
        # static fields and non-array leaves. Arrays cannot be hashed and are
        # left out, so a Module is hashable whenever its other parts are, and
        # can key a dict or be given to `jax.jit` as the function (Equinox
        # raises for a Module holding arrays). A list or dict anywhere in it
        # makes it unhashable, as in Equinox (so `Partial`, whose `keywords`
        # is a dict, is never hashable).
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
        values = _get_dict(tree)
        for name in info.static_names:
            if name in values:
                parts.append(_checked_hashable(values[name], f"{path}.{name}"))
        for name in info.dynamic_names:
            if name in values:
                _hash_parts(values[name], f"{path}.{name}", parts)
        return
    leaves, treedef = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=_is_module_or_mutable
    )
    parts.append(treedef)
    for key_path, leaf in leaves:
        leaf_path = path + jax.tree_util.keystr(key_path)
        if isinstance(leaf, Module):
            _hash_parts(leaf, leaf_path, parts)
        elif not is_array(leaf):
            # A list or dict (a pytree node, but unhashable, as in Python and
            # Equinox) raises here, naming its path.
            parts.append(_checked_hashable(leaf, leaf_path))


def _is_module_or_mutable(x: Any) -> bool:
    return isinstance(x, (Module, list, dict))


def _checked_hashable(value: Any, path: str) -> Any:
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"unhashable type: {type(value).__name__!r}. This Module cannot be "
            f"hashed: `{path}` holds an unhashable {type(value).__name__}. Static "
            "fields and non-array leaves must be hashable; store a tuple or "
            "frozenset instead."
        ) from None
    return value


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
        >>> type(Affine.__dict__["apply"]).__name__  # the class keeps the function
        'function'
    """

    __func__: types.FunctionType = field(static=True)
    __self__: Module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        d = _get_dict(self)
        return d["__func__"](d["__self__"], *args, **kwargs)

    @property
    def __wrapped__(self) -> types.MethodType:
        # Lets `inspect.signature` show the signature without `self`.
        return types.MethodType(self.__func__, self.__self__)

    @property
    def __name__(self) -> str:
        return self.__func__.__name__


_make_bound_method = BoundMethod.__pytreemod_info__.unflatten

__all__ = [
    "AbstractClassVar",
    "AbstractVar",
    "BoundMethod",
    "Module",
    "StrictConfig",
    "field",
]
