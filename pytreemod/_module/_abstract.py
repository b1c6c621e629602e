"""`AbstractVar` and `AbstractClassVar`: attributes a concrete subclass must
provide."""

import re
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing import Annotated, TypeAlias

    # Type checkers see the declared type itself.
    AbstractVar: TypeAlias = Annotated[_T, "AbstractVar"]
    AbstractClassVar: TypeAlias = Annotated[_T, "AbstractClassVar"]
else:

    class AbstractVar(Generic[_T]):
        """Declares an instance attribute that every concrete subclass provides.

        Write `name: AbstractVar[T]` in the body of an abstract `Module`. A
        subclass provides it with a field (`name: T`), a class attribute or a
        property. Creating an instance of a class that still lacks it raises
        `TypeError`. It is never a field itself.

        Example:
            >>> import pytreemod
            >>> class Shape(pytreemod.Module):
            ...     sides: pytreemod.AbstractVar[int]
            >>> class Square(Shape):
            ...     sides: int = 4
            >>> Square().sides
            4
        """

    class AbstractClassVar(Generic[_T]):
        """Declares a class attribute that every concrete subclass provides.

        Write `name: AbstractClassVar[T]` in the body of an abstract `Module`;
        a subclass provides it with `name: ClassVar[T] = value` or a plain
        class attribute. Creating an instance of a class that still lacks it
        raises `TypeError`.

        Example:
            >>> from typing import ClassVar
            >>> import pytreemod
            >>> class Activation(pytreemod.Module):
            ...     kind: pytreemod.AbstractClassVar[str]
            >>> class Relu(Activation):
            ...     kind: ClassVar[str] = "relu"
            >>> Relu().kind
            'relu'
        """


_STRING_ANNOTATION = re.compile(
    r"^\s*(?:[A-Za-z_][\w]*\.)*(AbstractVar|AbstractClassVar|ClassVar)\s*(\[|$)"
)


def annotation_kind(annotation: Any) -> str | None:
    """Return "AbstractVar", "AbstractClassVar", "ClassVar" or None for an
    annotation object or string (`from __future__ import annotations`)."""
    if isinstance(annotation, str):
        match = _STRING_ANNOTATION.match(annotation)
        return match.group(1) if match else None
    origin = getattr(annotation, "__origin__", annotation)
    if origin is AbstractVar:
        return "AbstractVar"
    if origin is AbstractClassVar:
        return "AbstractClassVar"
    if origin is ClassVar:
        return "ClassVar"
    return None
