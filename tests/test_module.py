"""Module: a frozen dataclass that is a registered pytree."""

import dataclasses
import warnings
from typing import Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import GetAttrKey

import pytreemod
from pytreemod import Module, field

T = TypeVar("T")


class Linear(Module):
    weight: jax.Array
    bias: jax.Array
    size: int = field(static=True, default=2)

    def __call__(self, x):
        return self.weight @ x + self.bias


def _linear():
    return Linear(jnp.ones((2, 3)), jnp.zeros(2))


def test_module_is_a_dataclass_and_a_pytree_with_key_paths():
    layer = _linear()
    assert dataclasses.is_dataclass(layer)
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(layer)
    assert [path for path, _ in leaves_with_paths] == [
        (GetAttrKey("weight"),),
        (GetAttrKey("bias"),),
    ]
    rebuilt = jax.tree_util.tree_unflatten(treedef, [x for _, x in leaves_with_paths])
    assert type(rebuilt) is Linear
    assert rebuilt.size == 2 and rebuilt.weight is layer.weight


def test_static_fields_live_in_the_treedef():
    a = Linear(jnp.ones((2, 3)), jnp.zeros(2), size=2)
    b = Linear(jnp.ones((2, 3)), jnp.zeros(2), size=3)
    assert jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b)
    assert len(jax.tree_util.tree_leaves(a)) == 2


def test_subclass_of_subclass_and_nested_containers():
    class Base(Module):
        a: jax.Array

    class Child(Base):
        b: list
        c: dict
        d: tuple
        e: object = None

    child = Child(jnp.array(1.0), [jnp.array(2.0)], {"k": jnp.array(3.0)}, (4.0,))
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(child)[0]]
    assert paths[0] == (GetAttrKey("a"),)
    assert paths[1][0] == GetAttrKey("b")
    assert jax.tree_util.tree_leaves(child) == [1.0, 2.0, 3.0, 4.0]
    assert child.e is None
    doubled = jax.tree_util.tree_map(lambda x: x * 2, child)
    assert isinstance(doubled, Child) and doubled.c["k"] == 6.0


def test_modules_nested_in_tuples_lists_and_dicts():
    tree = {"layers": [_linear(), (_linear(), None)]}
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    assert len(leaves) == 4
    assert jax.tree_util.tree_unflatten(treedef, leaves) == tree


def test_generic_module():
    class Box(Module, Generic[T]):
        value: T

    box = Box[int](3)
    assert box.value == 3
    assert jax.tree_util.tree_leaves(Box(jnp.ones(2)))[0].shape == (2,)


def test_custom_init_assigns_fields():
    class Scaled(Module):
        weight: jax.Array
        scale: float = field(static=True)

        def __init__(self, size, scale=2.0):
            self.weight = jnp.ones(size) * scale
            self.scale = scale

    m = Scaled(3)
    assert m.scale == 2.0 and m.weight.shape == (3,)
    # A rebuilt module does not rerun __init__ (which takes other arguments).
    rebuilt = jax.tree_util.tree_map(lambda x: x + 1, m)
    assert float(rebuilt.weight[0]) == 3.0 and rebuilt.scale == 2.0


def test_custom_init_is_inherited_and_unset_defaults_stay_on_the_class():
    class Parent(Module):
        a: int
        b: int = 5

        def __init__(self, a):
            self.a = a

    class Child(Parent):
        pass

    child = Child(1)
    assert child.a == 1 and child.b == 5
    # As in Equinox: a default that `__init__` did not assign is read from the
    # class and is no pytree leaf (so optimiser states line up).
    assert jax.tree_util.tree_leaves(child) == [1]
    rebuilt = jax.tree_util.tree_map(lambda x: x + 1, child)
    assert (rebuilt.a, rebuilt.b) == (2, 5)


def test_generated_init_supports_dataclass_features():
    class Config(Module):
        a: int
        b: list = field(default_factory=list)
        c: int = field(default=3, kw_only=True)
        d: int = field(init=False, default=7)

    cfg = Config(1, c=4)
    assert (cfg.a, cfg.b, cfg.c, cfg.d) == (1, [], 4, 7)
    assert Config(1).b is not Config(1).b


def test_post_init_runs_and_may_assign():
    class WithPost(Module):
        a: int
        b: int = field(init=False)

        def __post_init__(self):
            self.b = self.a * 2

    assert WithPost(3).b == 6


def test_custom_init_with_post_init_warns():
    with pytest.warns(
        UserWarning, match=r"Both` has both an `__init__` method and a\n`__post_init"
    ):

        class Both(Module):
            a: int

            def __init__(self):
                self.a = 1

            def __post_init__(self):
                raise AssertionError("never runs")

    assert Both().a == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: setattr(m, "weight", 1),
        lambda m: setattr(m, "new_attribute", 1),
        lambda m: delattr(m, "weight"),
    ],
)
def test_assignment_after_init_is_frozen(mutate):
    with pytest.raises(dataclasses.FrozenInstanceError, match="immutable"):
        mutate(_linear())


def test_assigning_a_non_field_in_init_is_an_error():
    class Sloppy(Module):
        a: int

        def __init__(self):
            self.a = 1
            self.b = 2

    with pytest.raises(
        dataclasses.FrozenInstanceError,
        match="cannot assign to field 'b'. 'b' is not a field of",
    ):
        Sloppy()


def test_unset_field_names_field_and_class():
    class Forgetful(Module):
        a: int
        b: int

        def __init__(self):
            self.a = 1

    with pytest.raises(
        TypeError,
        match=r"Field 'b' was not initialized. .*Forgetful.__init__ left `b` unset",
    ):
        Forgetful()


def test_assigning_own_method_explains_the_cycle():
    class Cyclic(Module):
        f: object

        def __init__(self):
            self.f = self.method

        def method(self):
            return 1

    with pytest.raises(
        ValueError, match="Cannot assign methods in __init__.(.|\n)*cycle"
    ):
        Cyclic()


def test_equality_and_hash():
    a, b = _linear(), _linear()
    assert a == b
    assert not (a == Linear(jnp.ones((2, 3)), jnp.ones(2)))
    assert a != Linear(jnp.ones((2, 3)), jnp.zeros(2), size=3)

    class Hashable(Module):
        a: int
        b: str = field(static=True)

    assert hash(Hashable(1, "x")) == hash(Hashable(1, "x"))
    assert Hashable(1, "x") == Hashable(1, "x")
    assert {Hashable(1, "x"), Hashable(1, "x"), Hashable(2, "x")} == {
        Hashable(1, "x"),
        Hashable(2, "x"),
    }


def test_equality_inside_jit_is_traced():
    layer = _linear()

    @jax.jit
    def same(a, b):
        return a == b

    assert bool(same(layer, layer))
    assert not bool(same(layer, jax.tree_util.tree_map(lambda x: x + 1, layer)))


class Configured(Module):
    options: dict = field(static=True)


def test_hash_with_unhashable_static_names_field():
    with pytest.raises(
        TypeError, match=r"unhashable type: 'dict'. .*`Configured.options` holds"
    ):
        hash(Configured({"a": 1}))


def test_hash_names_the_path_of_a_nested_unhashable_value():
    class Outer(Module):
        inner: tuple

    with pytest.raises(TypeError, match=r"`Outer.inner\[1\].options` holds an"):
        hash(Outer((Configured(()), Configured({"a": 1}))))


@pytest.mark.parametrize(
    "value, kind", [([1], "list"), ({"a": 1}, "dict"), ((1, [jnp.ones(2)]), "list")]
)
def test_a_list_or_dict_field_makes_a_module_unhashable(value, kind):
    # As in Equinox (which hashes each field value): a list or dict is
    # unhashable even where its leaves are hashable or arrays.
    class Holder(Module):
        value: object

    with pytest.raises(TypeError, match=rf"^unhashable type: '{kind}'\. .*`Holder"):
        hash(Holder(value))


def test_hash_skips_arrays_and_agrees_with_equality():
    # Arrays cannot be hashed; equal modules still hash equal.
    assert hash(_linear()) == hash(_linear())
    assert {_linear(): 1}[_linear()] == 1


def test_array_in_static_field_warns_naming_class_and_field():
    class Table(Module):
        table: object = field(static=True)

    with pytest.warns(
        UserWarning,
        match=r"A JAX array is being set as static! .*Table\.table` is a static",
    ):
        Table(np.ones(3))


def test_repr_is_short():
    assert repr(_linear()) == "Linear(weight=f32[2,3], bias=f32[2])"  # size: default
    assert repr(Linear(jnp.ones((2, 3)), jnp.zeros(2), 3)).endswith("size=3)")


def test_callable_module_under_jit():
    layer = _linear()
    out = jax.jit(lambda m, x: m(x))(layer, jnp.ones(3))
    np.testing.assert_allclose(out, [3.0, 3.0])


def test_no_warnings_for_plain_modules():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _linear()


def test_public_names():
    for name in ["Module", "field", "AbstractVar", "AbstractClassVar", "Partial"]:
        assert hasattr(pytreemod, name)
