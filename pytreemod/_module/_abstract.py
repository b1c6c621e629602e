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

_UNSUBSCRIPTED_ERROR = (
    "Cannot use unsubscripted `AbstractVar` or `AbstractClassVar`. Write the "
    "type the subclasses provide, e.g. `{name}: AbstractVar[int]` (or "
    "`AbstractVar[Any]`)."
)


def annotation_kind(annotation: Any, name: str = "x") -> str | None:
    """Return "AbstractVar", "AbstractClassVar", "ClassVar" or None for an
    annotation object or string (`from __future__ import annotations`).

    Raises:
        TypeError: for a bare `AbstractVar` or `AbstractClassVar`.
    """
    if isinstance(annotation, str):
        match = _STRING_ANNOTATION.match(annotation)
        if match is None:
            return None
        kind, bracket = match.groups()
        if kind != "ClassVar" and bracket != "[":
            raise TypeError(_UNSUBSCRIPTED_ERROR.format(name=name))
        return kind
    if annotation is AbstractVar or annotation is AbstractClassVar:
        raise TypeError(_UNSUBSCRIPTED_ERROR.format(name=name))
    origin = getattr(annotation, "__origin__", annotation)
    if origin is AbstractVar:
        return "AbstractVar"
    if origin is AbstractClassVar:
        return "AbstractClassVar"
    if origin is ClassVar:
        return "ClassVar"
    return None


def split_abstract_annotations(namespace: dict[str, Any]) -> dict[str, str | None]:
    """Remove `AbstractVar`/`AbstractClassVar` annotations from a class body
    (they are declarations, not fields) and return the kind of every name the
    body annotates (see `annotation_kind`).

    Raises:
        TypeError: for a bare `AbstractVar`/`AbstractClassVar`, or an abstract
            declaration given a value in the same body.
    """
    annotations = namespace.get("__annotations__", {})
    kinds: dict[str, str | None] = {}
    for name, annotation in list(annotations.items()):
        kind = kinds[name] = annotation_kind(annotation, name)
        if kind == "AbstractVar" or kind == "AbstractClassVar":
            if name in namespace:
                what = "attribute" if kind == "AbstractVar" else "class attribute"
                raise TypeError(
                    f"Abstract {what} {name} cannot have value. `{name}: {kind}[...]` "
                    "declares that subclasses provide it; give the value in the "
                    "subclass, or drop the declaration."
                )
            del annotations[name]
    return kinds


def abstract_attributes(
    cls: type, kinds: dict[str, str | None]
) -> tuple[frozenset[str], frozenset[str]]:
    """The `(__abstractvars__, __abstractclassvars__)` of a newly created
    dataclass `cls`, whose own body annotated `kinds`.

    An inherited abstract name stays abstract until some class in the MRO
    provides it: a field, a class attribute, a property, or (for an
    `AbstractClassVar`) a `ClassVar` annotation. The body's own declarations
    then apply: `AbstractClassVar` makes a name an abstract class variable,
    `AbstractVar` an abstract variable unless it is already an abstract class
    variable.
    """
    variables: set[str] = set()
    class_variables: set[str] = set()
    for base in cls.__bases__:
        variables.update(getattr(base, "__abstractvars__", ()))
        class_variables.update(getattr(base, "__abstractclassvars__", ()))
    fields = getattr(cls, "__dataclass_fields__", {})

    def provided(name: str) -> bool:
        # The MRO, not `hasattr`: the metaclass provides `__call__` & co. to
        # the class object, which says nothing about its instances.
        return name in fields or any(name in k.__dict__ for k in cls.__mro__)

    variables = {n for n in variables if not provided(n)}
    class_variables = {n for n in class_variables if not provided(n)}
    for name, kind in kinds.items():
        if kind == "AbstractClassVar":
            variables.discard(name)
            class_variables.add(name)
        elif kind == "AbstractVar":
            if name not in class_variables:
                variables.add(name)
        else:
            variables.discard(name)
            class_variables.discard(name)
    return frozenset(variables), frozenset(class_variables)
