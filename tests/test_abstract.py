"""`AbstractVar`, `AbstractClassVar` and abstract methods."""

import abc
from typing import ClassVar

import pytest

from pytreemod import AbstractClassVar, AbstractVar, Module


class Shape(Module):
    sides: AbstractVar[int]
    kind: AbstractClassVar[str]

    @abc.abstractmethod
    def area(self) -> float: ...


def test_abstract_declarations_are_not_fields():
    import dataclasses

    assert dataclasses.fields(Shape) == ()


def test_missing_pieces_are_all_named():
    with pytest.raises(
        TypeError,
        match=r"abstract variable `sides`, abstract class variable `kind`, "
        r"abstract method `area`",
    ):
        Shape()


@pytest.mark.parametrize("how", ["field", "class attribute", "property"])
def test_abstract_var_provided_in_each_way(how):
    if how == "field":

        class Square(Shape):
            sides: int = 4
            kind: ClassVar[str] = "square"

            def area(self):
                return 1.0

    elif how == "class attribute":

        class Square(Shape):
            sides = 4
            kind = "square"

            def area(self):
                return 1.0

    else:

        class Square(Shape):
            kind: ClassVar[str] = "square"

            @property
            def sides(self):
                return 4

            def area(self):
                return 1.0

    square = Square()
    assert square.sides == 4 and Square.kind == "square" and square.area() == 1.0


def test_partially_concrete_class_names_what_is_left():
    class Half(Shape):
        sides: int = 3

    with pytest.raises(TypeError, match=r"Half: it does not provide abstract class"):
        Half()


def test_abstract_class_var_may_be_provided_by_a_field():
    # As in Equinox, a field also provides an `AbstractClassVar`.
    class Named(Module):
        kind: AbstractClassVar[str]

    class Instance(Named):
        kind: str

    assert Instance.__abstractclassvars__ == frozenset()
    assert Instance("x").kind == "x"


def test_string_annotations_are_understood():
    namespace: dict = {}
    exec(
        "from __future__ import annotations\n"
        "import pytreemod\n"
        "class Lazy(pytreemod.Module):\n"
        "    x: pytreemod.AbstractVar[int]\n",
        namespace,
    )
    with pytest.raises(TypeError, match="abstract variable `x`"):
        namespace["Lazy"]()
