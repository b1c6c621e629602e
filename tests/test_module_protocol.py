"""Module's class protocol as Equinox defines it: class keywords, methods as
plain functions in the class, signatures, `__new__`, warnings."""

import abc
import collections
import functools
import inspect
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import pytest

import pytreemod
from pytreemod import AbstractClassVar, AbstractVar, Module, StrictConfig, field
from pytreemod._module._module import BoundMethod

T = TypeVar("T")


@pytest.mark.parametrize("strict", [True, False, StrictConfig()])
def test_strict_keyword_is_accepted_and_means_nothing(strict):
    class Strict(Module, strict=strict):
        x: int

    assert Strict(1).x == 1


@pytest.mark.parametrize(
    "keywords",
    [{"is_abstract": True}, {"strict": StrictConfig(force_abstact=True)}],
)
def test_abstract_keyword_forbids_instances_but_not_of_subclasses(keywords):
    class Base(Module, **keywords):
        x: int

    with pytest.raises(TypeError, match="Cannot instantiate abstract `equinox.Module`"):
        Base(1)

    class Concrete(Base):
        pass

    assert Concrete(2).x == 2


def test_class_keywords_reach_init_subclass():
    seen = []

    class Base(Module):
        def __init_subclass__(cls, tag, **kwargs):
            super().__init_subclass__(**kwargs)
            seen.append(tag)

    class Child(Base, tag="t", strict=True):
        pass

    assert seen == ["t"]


def test_methods_stay_plain_functions_in_the_class_dict():
    class Model(Module):
        w: jax.Array

        def apply(self, x):
            return self.w * x

        @abc.abstractmethod
        def later(self): ...

    assert inspect.isfunction(Model.__dict__["apply"])
    assert Model.__dict__["later"].__isabstractmethod__
    assert Model.__abstractmethods__ == frozenset({"later"})

    class Concrete(Model):
        def later(self):
            return 1

    method = Concrete(jnp.array(2.0)).apply
    assert isinstance(method, BoundMethod)
    assert jax.tree_util.tree_leaves(method) == [jnp.array(2.0)]
    assert float(jax.jit(method)(3.0)) == 6.0
    assert float(pytreemod.filter_jit(method)(3.0)) == 6.0


def test_init_subclass_may_wrap_methods_from_the_class_dict():
    calls = []

    class Logged(Module):
        def __init_subclass__(cls, **kwargs):
            super().__init_subclass__(**kwargs)
            for name, value in list(cls.__dict__.items()):
                if inspect.isfunction(value) and not name.startswith("_"):
                    setattr(cls, name, _logged(value, calls))

    class Model(Logged):
        x: int

        def double(self):
            return 2 * self.x

    assert Model(3).double() == 6
    assert calls == ["double"]


def _logged(fn, calls):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls.append(fn.__name__)
        return fn(*args, **kwargs)

    return wrapper


def test_magic_methods_stay_plain_bound_methods():
    class Model(Module):
        def __call__(self, x):
            return x

        def helper(self):
            return 1

    model = Model()
    assert not isinstance(model.__call__, BoundMethod)
    assert isinstance(model.helper, BoundMethod)


def test_generic_module_is_subscriptable_and_keeps_orig_class():
    class Box(Module, Generic[T]):
        value: Any

    box = Box[int](1)
    assert box.__orig_class__ == Box[int]
    assert box.value == 1


def test_signature_is_the_init_signature():
    class Generated(Module):
        a: int
        b: str = "x"

    class Custom(Module):
        a: int

        def __init__(self, size: int, *, key: Any = None):
            self.a = size

    assert str(inspect.signature(Generated)) == "(a: int, b: str = 'x') -> None"
    assert list(inspect.signature(Custom).parameters) == ["size", "key"]


def test_signature_of_a_callable_instance_is_its_call_signature():
    class Layer(Module):
        scale: float = 1.0

        def __call__(self, x: int, *, key: Any = None) -> int:
            return x

    assert str(inspect.signature(Layer())) == "(x: int, *, key: Any = None) -> int"


def test_generated_init_inherits_the_overridden_docstring():
    class Parent(Module):
        pass

    Parent.__init__.__doc__ = "Build one."

    class Child(Parent):
        x: int = 0

    assert Child.__init__.__doc__ == "Build one."


def test_generated_init_annotates_converted_fields_by_the_converter_input():
    def parse(text: str) -> int:
        return int(text)

    class Parsed(Module):
        n: int = field(converter=parse)
        m: int = field(converter=lambda v: v)

    assert Parsed.__init__.__annotations__["n"] is str
    assert Parsed.__init__.__annotations__["m"] is Any
    assert Parsed("3", 1).n == 3


def test_custom_new_receives_the_arguments():
    received = []

    class WithNew(Module):
        a: int

        def __new__(cls, *args, **kwargs):
            received.append((args, kwargs))
            return super().__new__(cls)

    assert WithNew(1).a == 1 and WithNew(a=2).a == 2
    assert received == [((1,), {}), ((), {"a": 2})]


def test_custom_new_returning_another_object_skips_init():
    class Factory(Module):
        a: int

        def __new__(cls, a):
            return ("made", a)

    assert Factory(1) == ("made", 1)


def test_static_field_is_deprecated_and_names_the_replacement():
    with pytest.warns(DeprecationWarning, match=r"field\(static=True\)"):

        class Old(Module):
            size: int = pytreemod.static_field(default=3)

    assert Old().size == 3
    assert jax.tree_util.tree_leaves(Old()) == []


def test_static_array_inside_a_container_warns():
    class Config(Module):
        table: tuple = field(static=True)

    with pytest.warns(UserWarning, match="A JAX array is being set as static!"):
        Config((jnp.ones(2),))


class _Unit:
    """A unit of measure: hashable by identity, with no order."""

    def __init__(self, name):
        self.name = name


_METRE, _SECOND = _Unit("m"), _Unit("s")


@pytest.mark.parametrize("static", [True, False])
def test_dict_with_unorderable_keys_constructs(static):
    # Regression: the static-array check flattened the value with JAX, which
    # sorts dict keys, so construction raised "Comparator raised exception
    # while sorting pytree dictionary keys."
    class Quantity(Module):
        value: float
        units: dict = field(static=static)

    units = {_METRE: 1, _SECOND: -1}
    quantity = Quantity(2.0, units)
    assert quantity.units is units
    assert quantity.value == 2.0


@pytest.mark.parametrize(
    "wrap",
    [
        lambda d: d,
        lambda d: (1, [d]),
        lambda d: collections.defaultdict(int, d),
        lambda d: {"outer": d},
    ],
)
def test_array_under_unorderable_keys_still_warns(wrap):
    class Table(Module):
        table: Any = field(static=True)

    with pytest.warns(UserWarning, match="A JAX array is being set as static!"):
        Table(wrap({_METRE: 1, _SECOND: jnp.ones(2)}))


def test_static_value_whose_flatten_raises_constructs():
    # A static value is never flattened by transforms, so a pytree node that
    # cannot flatten is no reason to refuse it.
    class Broken:
        pass

    def refuse(_):
        raise RuntimeError("cannot flatten")

    jax.tree_util.register_pytree_node(Broken, refuse, lambda _, c: Broken())

    class Holder(Module):
        value: Any = field(static=True)

    broken = Broken()
    assert Holder(broken).value is broken


@pytest.mark.parametrize("transform", [jax.jit, jax.vmap, jax.grad, jax.checkpoint])
def test_transformed_module_as_a_field_warns(transform):
    class Holder(Module):
        fn: Any

    class Inner(Module):
        w: jax.Array

        def __call__(self, x):
            return (self.w * x).sum()

    with pytest.warns(
        UserWarning, match="Possibly assigning a JAX-transformed callable"
    ):
        Holder(transform(Inner(jnp.ones(2))))


def test_transformed_plain_function_does_not_warn():
    class Holder(Module):
        fn: Any

    Holder(jax.jit(jnp.sin))


def test_abstract_vars_are_recorded_on_classes():
    class Base(Module):
        x: AbstractVar[int]
        y: AbstractClassVar[str]

    assert Base.__abstractvars__ == frozenset({"x"})
    assert Base.__abstractclassvars__ == frozenset({"y"})
    with pytest.raises(TypeError, match="abstract class attributes {'y'}"):
        Base()

    class Provider(Module):
        x: int

    class Both(Provider, Base):
        y = "s"

    assert Both.__abstractvars__ == frozenset()
    assert Both(1).x == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x: AbstractVar", "Cannot use unsubscripted `AbstractVar`"),
        ("x: AbstractVar[int] = 1", "Abstract attribute x cannot have value"),
    ],
)
def test_abstract_declaration_misuse(body, message):
    with pytest.raises(TypeError, match=message):
        exec(
            f"class Bad(Module):\n    {body}\n",
            {"Module": Module, "AbstractVar": AbstractVar},
        )


def test_unset_field_without_class_value_is_an_error():
    class Needs(Module):
        x: int = field(init=False)

    with pytest.raises(TypeError, match="Field 'x' was not initialized."):
        Needs()


def test_unset_field_overridden_by_a_property_is_not_a_leaf():
    class Abstract(Module):
        size: int = field(init=False)

    class Concrete(Abstract):
        @property
        def size(self):
            return 4

    concrete = Concrete()
    leaves, treedef = jax.tree_util.tree_flatten(concrete)
    assert leaves == [] and jax.tree_util.tree_unflatten(treedef, []).size == 4
