"""`field`: static markers, converters, and `__check_init__`."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from pytreemod import Module, field


def test_field_is_a_dataclass_field_with_markers():
    f = field(static=True, default=1, metadata={"doc": "x"})
    assert isinstance(f, dataclasses.Field)
    assert f.metadata["static"] is True and f.metadata["doc"] == "x"
    assert "static" not in field().metadata


def test_converter_runs_after_init_and_post_init():
    calls = []

    class Converted(Module):
        x: jax.Array = field(converter=jnp.asarray)
        y: int = field(init=False, converter=lambda v: v + 1)

        def __post_init__(self):
            calls.append(type(self.x))
            self.y = 10

    m = Converted(2.0)
    assert calls == [float]  # __post_init__ saw the unconverted value
    assert isinstance(m.x, jax.Array) and m.y == 11


def test_converter_runs_after_custom_init_but_not_on_unflatten():
    class Counted(Module):
        x: int = field(converter=lambda v: v + 1)

        def __init__(self, x):
            self.x = x

    m = Counted(1)
    assert m.x == 2
    leaves, treedef = jax.tree_util.tree_flatten(m)
    assert jax.tree_util.tree_unflatten(treedef, leaves).x == 2


def test_check_init_runs_for_every_class_subclass_first():
    order = []

    class Base(Module):
        x: int

        def __check_init__(self):
            order.append("base")
            if self.x < 0:
                raise ValueError("x must be non-negative")

    class Child(Base):
        def __check_init__(self):
            order.append("child")

    Child(1)
    # MRO order, as in Equinox: the subclass's check runs first.
    assert order == ["child", "base"]
    with pytest.raises(ValueError, match="x must be non-negative"):
        Child(-1)


def test_check_init_stops_at_the_first_failing_class():
    ran = []

    class A(Module):
        def __check_init__(self):
            ran.append("a")

    class B(A):
        def __check_init__(self):
            ran.append("b")
            raise ValueError("b refuses")

    class C(B):
        def __check_init__(self):
            ran.append("c")

    with pytest.raises(ValueError, match="b refuses"):
        C()
    assert ran == ["c", "b"]


def test_check_init_sees_converted_values():
    class Checked(Module):
        x: jax.Array = field(converter=jnp.asarray)

        def __check_init__(self):
            assert isinstance(self.x, jax.Array)

    Checked(1.0)


def test_check_init_may_not_assign():
    class Mutating(Module):
        x: int

        def __check_init__(self):
            self.x = 2

    with pytest.raises(dataclasses.FrozenInstanceError, match="immutable"):
        Mutating(1)


def test_converter_must_be_callable():
    with pytest.raises(TypeError, match="`converter` must be callable"):
        field(converter=3)


def test_metadata_may_not_use_reserved_keys():
    with pytest.raises(TypeError, match="may not use the key 'static'"):
        field(metadata={"static": True})
