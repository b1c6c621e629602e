"""`Enumeration`: enums whose members are pytrees, so they can be traced.

A subclass body lists members as `NAME = "message"`. `_EnumerationMeta`
numbers them (inherited members first, in base order) and replaces each by an
`EnumerationItem`: a Module holding the member's number as an int32 array (a
pytree leaf, so it can be traced, vmapped and selected with `where`) and the
enumeration class as a static field. Comparing two items compares the numbers,
which gives a bool array, traced or not.

It lives beside `error_if` because `item.error_if` uses `branched_error_if`.
"""

import inspect
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._module._field import field
from .._module._module import Module
from ._error_if import branched_error_if

__all__ = ["Enumeration", "EnumerationItem"]

# Class methods of `Enumeration`; a member of the same name would hide them.
_RESERVED = ("promote", "where")

_DIFFERENT_ENUMERATIONS = """\
cannot compare {left} with {right}: they are members of different
enumerations ({left_enum} and {right_enum}). Only members of the same
enumeration compare. If one enumeration inherits from the other, promote the
parent's member first:
    {child}.promote(item) == {child}.SOME_MEMBER"""

_NOT_A_MEMBER = (
    "cannot compare {left} with {right!r} (of type {type}): an enumeration member "
    "only compares with members of the same enumeration, as in "
    "`item == {enum}.SOME_MEMBER`."
)


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _qualname(enumeration: type) -> str:
    """The class's qualified name, without the `f.<locals>.` of a class made
    inside a function."""
    return enumeration.__qualname__.rpartition("<locals>.")[2]


def _describe(item: Any) -> str:
    """`Colour.RED` for a concrete member (clearer in error messages than the
    repr, which is Equinox's `module.Colour<message>`); else the repr."""
    if not isinstance(item, EnumerationItem):
        return repr(item)
    enumeration = item._enumeration
    value = item._value
    if isinstance(value, jax.core.Tracer) or np.ndim(value) != 0:
        return f"{_qualname(enumeration)}<traced or batched>"
    names = enumeration._pytreemod_names
    index = int(value)
    if not 0 <= index < len(names):
        return f"{_qualname(enumeration)}<{index}>"
    return f"{_qualname(enumeration)}.{names[index]}"


class EnumerationItem(Module):
    """A member of an `Enumeration`, such as `Colour.RED`.

    It is a pytree whose one leaf is the member's number (an int32 array), with
    the enumeration as static data; so it can be passed through `jax.jit`,
    returned from `lax.cond`, batched by `jax.vmap` and chosen at runtime with
    `Colour.where`.
    """

    _value: Any
    _enumeration: Any = field(static=True)

    def __eq__(self, other: object) -> Any:
        other = _comparable(self, other)
        with jax.ensure_compile_time_eval():
            return jnp.asarray(self._value == other._value)

    def __ne__(self, other: object) -> Any:
        other = _comparable(self, other)
        with jax.ensure_compile_time_eval():
            return jnp.asarray(self._value != other._value)

    # Defining `__eq__` would otherwise remove the inherited `__hash__`.
    __hash__ = Module.__hash__

    def __repr__(self) -> str:
        # As Equinox: the enumeration's full name, then the member's message
        # (or `traced`, or the array of messages of a batch of members).
        enumeration = self._enumeration
        name = f"{enumeration.__module__}.{enumeration.__qualname__}"
        value = self._value
        if isinstance(value, jax.core.Tracer):
            return f"{name}<traced>"
        messages = enumeration._pytreemod_messages
        numbers = np.asarray(value)
        if numbers.ndim == 0:
            index = int(numbers)
            return f"{name}<{messages[index] if 0 <= index < len(messages) else index}>"
        return f"{name}<{np.asarray(messages)[numbers]}>"

    def error_if(self, token: Any, pred: Any) -> Any:
        """Raise an error whose message is this member's message if `pred` is
        true: `branched_error_if(token, pred, <this member>, <all messages>)`.

        Args:
            token: the pytree the check is attached to (see `error_if`); it is
                returned unchanged.
            pred: a bool or boolean array.

        Returns:
            `token`, unchanged.

        Example:
            >>> import jax.numpy as jnp
            >>> import pytreemod
            >>> class Result(pytreemod.Enumeration):
            ...     ok = ""
            ...     diverged = "the solver diverged"
            >>> x = jnp.array([1.0, jnp.inf])
            >>> try:
            ...     Result.diverged.error_if(x, ~jnp.isfinite(x))
            ... except pytreemod.EquinoxRuntimeError as e:
            ...     print(e)
            the solver diverged
        """
        enumeration = self._enumeration
        return branched_error_if(
            token, pred, self._value, enumeration._pytreemod_messages
        )

    def is_traced(self) -> bool:
        """Whether this member's number is a tracer (known only at runtime).

        Example:
            >>> import jax
            >>> import pytreemod
            >>> class Mode(pytreemod.Enumeration):
            ...     train = ""
            ...     test = ""
            >>> Mode.train.is_traced()
            False
            >>> def show(mode):
            ...     print(mode.is_traced())
            ...     return mode
            >>> _ = jax.jit(show)(Mode.train)
            True
        """
        return isinstance(self._value, jax.core.Tracer)


def _comparable(item: EnumerationItem, other: object) -> EnumerationItem:
    """`other`, if `item == other` is allowed; otherwise a clear error."""
    mine = item._enumeration
    if not isinstance(other, EnumerationItem):
        raise ValueError(
            _NOT_A_MEMBER.format(
                left=_describe(item),
                right=other,
                type=type(other).__name__,
                enum=_qualname(mine),
            )
        )
    theirs = other._enumeration
    if theirs is not mine:
        child = mine if issubclass(mine, theirs) else theirs
        raise ValueError(
            _DIFFERENT_ENUMERATIONS.format(
                left=_describe(item),
                right=_describe(other),
                left_enum=_qualname(mine),
                right_enum=_qualname(theirs),
                child=_qualname(child),
            )
        )
    return other


class _EnumerationMeta(type):
    """Numbers the members of an `Enumeration` subclass and turns each into an
    `EnumerationItem`."""

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]):
        if not bases:  # `Enumeration` itself
            return super().__new__(mcs, name, bases, namespace)
        for base in bases:
            if not isinstance(base, _EnumerationMeta):
                raise TypeError(
                    f"{name} inherits from {base.__qualname__}, which is not an "
                    "Enumeration. An Enumeration may only inherit from other "
                    "Enumerations."
                )
        members = {k: v for k, v in namespace.items() if not _is_dunder(k)}
        for member, message in members.items():
            if member in _RESERVED:
                raise ValueError(
                    f"{name} cannot have a member called `{member}`: it would hide "
                    f"the class method `{name}.{member}`. Rename the member."
                )
            if not isinstance(message, str):
                raise TypeError(
                    f"{name}.{member} must be a string, the member's message; got "
                    f"{type(message).__name__} {message!r}. An Enumeration body "
                    'holds only members, written `NAME = "message"` (use "" for '
                    "no message)."
                )
        cls = super().__new__(
            mcs, name, bases, {k: v for k, v in namespace.items() if _is_dunder(k)}
        )

        names: list[str] = []
        messages: list[str] = []

        def add(member: str, message: str) -> int:
            if member in names:
                index = names.index(member)
                if messages[index] != message:
                    warnings.warn(
                        f"{name}.{member} is given the message {message!r}, "
                        f"replacing {messages[index]!r} from a base enumeration.",
                        stacklevel=3,
                    )
                    messages[index] = message
                return index
            names.append(member)
            messages.append(message)
            return len(names) - 1

        # For each ancestor enumeration: its member numbers -> ours (`promote`).
        offsets: dict[type, np.ndarray] = {}
        for base in bases:
            for ancestor in base.__mro__:
                if (
                    ancestor in offsets
                    or ancestor is Enumeration
                    or not isinstance(ancestor, _EnumerationMeta)
                ):
                    continue
                pairs = zip(
                    ancestor._pytreemod_names,
                    ancestor._pytreemod_messages,
                    strict=True,
                )
                offsets[ancestor] = np.array(
                    [add(n, m) for n, m in pairs], dtype=np.int32
                )
        for member, message in members.items():
            add(member, message)

        cls._pytreemod_names = tuple(names)
        cls._pytreemod_messages = tuple(messages)
        cls._pytreemod_offsets = offsets
        for index, member in enumerate(names):
            item = EnumerationItem(np.array(index, dtype=np.int32), cls)
            type.__setattr__(cls, member, item)
        if cls.__dict__.get("__doc__") is None:
            lines = ["An enumeration with the members:", ""]
            for member, message in zip(names, messages, strict=True):
                lines.append(f"- `{member}`: {message}" if message else f"- `{member}`")
            cls.__doc__ = "\n".join(lines)
        return cls

    @property
    def __signature__(cls) -> inspect.Signature:
        # `inspect.signature(SomeEnumeration)` is `()`, as in Equinox (whose
        # enumerations take no arguments), not this `__call__`'s.
        return inspect.Signature()

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{_qualname(cls)} is an Enumeration and is not instantiated: use its "
            f"members, such as `{_qualname(cls)}.<member>`."
        )

    def __getitem__(cls, item: Any) -> str:
        if not isinstance(item, EnumerationItem):
            raise ValueError(
                f"`{_qualname(cls)}[item]` looks up the message of a member; "
                f"`item` must be a member of {_qualname(cls)}, got "
                f"{type(item).__name__} {item!r}."
            )
        if item._enumeration is not cls:
            raise ValueError(
                f"`{_qualname(cls)}[item]` needs a member of {_qualname(cls)}; "
                f"got {_describe(item)}, a member of {_qualname(item._enumeration)}."
            )
        value = item._value
        if isinstance(value, jax.core.Tracer):
            return "traced"
        numbers = np.asarray(value)
        if numbers.ndim == 0:
            return cls._pytreemod_messages[int(numbers)]
        return str(np.vectorize(lambda i: cls._pytreemod_messages[i])(numbers))

    def __len__(cls) -> int:
        return len(cls._pytreemod_names)

    def __iter__(cls) -> Iterator[EnumerationItem]:
        return (getattr(cls, member) for member in cls._pytreemod_names)

    def __instancecheck__(cls, value: Any) -> bool:
        return isinstance(value, EnumerationItem) and value._enumeration is cls


class Enumeration(metaclass=_EnumerationMeta):
    """Base class for enumerations whose members are pytrees, usable inside
    `jax.jit`.

    Subclass it and list the members as `NAME = "message"`; each becomes an
    `EnumerationItem` (use `""` for no message). Members:

    - compare with `==`/`!=` to members of the same enumeration only, giving a
      bool array (traced under `jax.jit`); anything else is a `ValueError`;
    - pass through `jax.jit`, `filter_jit`, `lax.cond` and `jax.vmap` like any
      pytree (their one leaf is an int32 array);
    - print as `module.Colour<message>` (as in Equinox); `Colour[item]` is
      the member's message;
    - raise their message as an error with `item.error_if(x, pred)`.

    `len(Colour)` is the number of members and `list(Colour)` lists them. A
    subclass of an enumeration has all of its parent's members and may add
    more; `Child.promote(item)` turns a parent's member into the child's.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> class Colour(pytreemod.Enumeration):
        ...     RED = "red"
        ...     BLUE = "blue"
        >>> repr(Colour.RED).endswith(".Colour<red>")
        True
        >>> Colour[Colour.BLUE]
        'blue'
        >>> Colour.RED == Colour.BLUE
        Array(False, dtype=bool)
        >>> @jax.jit
        ... def pick(x):
        ...     return Colour.where(x > 0, Colour.RED, Colour.BLUE)
        >>> Colour[pick(jnp.array(-1.0))]
        'blue'
    """

    _pytreemod_names: tuple[str, ...] = ()
    _pytreemod_messages: tuple[str, ...] = ()
    _pytreemod_offsets: dict[type, np.ndarray] = {}

    @classmethod
    def where(cls, pred: Any, a: EnumerationItem, b: EnumerationItem) -> Any:
        """Choose between two members at runtime, like `jnp.where`.

        Args:
            pred: a scalar boolean (array).
            a: a member of this enumeration, chosen where `pred` is true.
            b: a member of this enumeration, chosen where `pred` is false.

        Returns:
            A member of this enumeration: `a` if `pred`, else `b`.

        Raises:
            ValueError: if `pred` is not a scalar boolean, or `a` or `b` is
                not a member of this enumeration.

        Example:
            >>> import jax.numpy as jnp
            >>> import pytreemod
            >>> class Status(pytreemod.Enumeration):
            ...     ok = ""
            ...     failed = "it failed"
            >>> Status[Status.where(jnp.array(False), Status.ok, Status.failed)]
            'it failed'
        """
        if jnp.shape(pred) != () or jnp.result_type(pred) != jnp.bool_:
            raise ValueError(
                f"`{_qualname(cls)}.where` needs a scalar boolean `pred`; got "
                f"shape {jnp.shape(pred)} and dtype {jnp.result_type(pred)}. "
                "Reduce it first, e.g. with `jnp.all(pred)`."
            )
        for arg_name, arg in (("a", a), ("b", b)):
            if not isinstance(arg, cls):
                raise ValueError(
                    f"`{_qualname(cls)}.where(pred, a, b)` needs members of "
                    f"{_qualname(cls)}; `{arg_name}` is {_describe(arg)}."
                )
        if a._value is b._value:
            return a
        with jax.ensure_compile_time_eval():
            value = jnp.where(pred, a._value, b._value)
        return EnumerationItem(value, cls)

    @classmethod
    def promote(cls, item: EnumerationItem) -> Any:
        """Turn a member of a parent enumeration into the same-named member of
        this one.

        Args:
            item: a member of an enumeration that this one inherits from.

        Returns:
            The member of this enumeration with the same name as `item`.

        Raises:
            ValueError: if `item` is not a member of a proper parent of this
                enumeration.

        Example:
            >>> import pytreemod
            >>> class Basic(pytreemod.Enumeration):
            ...     ok = ""
            >>> class Extended(Basic):
            ...     timeout = "timed out"
            >>> Extended.promote(Basic.ok).is_traced()
            False
            >>> bool(Extended.promote(Basic.ok) == Extended.ok)
            True
        """
        if not isinstance(item, EnumerationItem):
            raise ValueError(
                f"`{_qualname(cls)}.promote` needs an enumeration member; got "
                f"{type(item).__name__} {item!r}."
            )
        source = item._enumeration
        if source is cls or source not in cls._pytreemod_offsets:
            raise ValueError(
                f"`{_qualname(cls)}.promote` can only promote members of the "
                f"enumerations {_qualname(cls)} inherits from; got "
                f"{_describe(item)}, a member of {_qualname(source)}."
            )
        with jax.ensure_compile_time_eval():
            value = jnp.asarray(cls._pytreemod_offsets[source])[item._value]
        return EnumerationItem(value, cls)
