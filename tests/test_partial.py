"""`Partial` and `module_update_wrapper`."""

import dataclasses
import functools
import inspect
import typing
from typing import Generic

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytreemod import (
    Module,
    Partial,
    field,
    filter_jit,
    is_array,
    module_update_wrapper,
)
from pytreemod._module._flatten import WRAPPER_FIELD_NAMES


def test_partial_calls_like_functools_partial():
    p = Partial(lambda a, b, *, c=0: a * 10 + b + c, 1, c=5)
    assert p(2) == 17
    assert p(2, c=0) == 12  # call-time keywords win


def test_partial_is_a_pytree_of_its_arguments():
    p = Partial(jnp.multiply, jnp.array(3.0))
    # The function is a leaf too (a static one for the filtered transforms).
    assert jax.tree_util.tree_leaves(p) == [jnp.multiply, jnp.array(3.0)]
    tripled = jax.tree_util.tree_map(lambda x: x * 3 if is_array(x) else x, p)
    assert float(tripled(jnp.array(2.0))) == 18.0


def test_partial_does_not_check_that_func_is_callable():
    # As in Equinox: a transformation may put a placeholder in `func`.
    p = Partial(3, 1)
    with pytest.raises(TypeError, match="'int' object is not callable"):
        p()


def test_func_is_positional_only():
    with pytest.raises(TypeError, match="func"):
        Partial(func=max)


def test_partial_is_subscriptable_for_annotations():
    alias = Partial[int]
    assert typing.get_origin(alias) is Partial
    assert typing.get_args(alias) == (int,)
    assert Generic in Partial.__mro__
    with pytest.raises(TypeError, match="Too many arguments"):
        Partial[int, str]

    def f(p: "Partial[int]") -> int:
        return p()

    assert typing.get_type_hints(f, {"Partial": Partial})["p"] == Partial[int]


def test_a_subscripted_partial_builds_a_partial_that_remembers_it():
    p = Partial[int](max, 1)
    assert type(p) is Partial
    assert p.__orig_class__ == Partial[int]
    assert p(5) == 5
    # `__orig_class__` is not a field: the pytree structure is unchanged.
    assert jax.tree_util.tree_structure(p) == jax.tree_util.tree_structure(
        Partial(max, 1)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.func = min


def test_subclassing_a_subscripted_partial():
    T = typing.TypeVar("T")

    class Scaled(Partial[float]):
        pass

    assert Scaled(lambda x: x * 2.0, 3.0)() == 6.0
    assert Partial[T][int] == Partial[int]


def _square(x):
    "Square x."
    return x * x


class Wrapper(Module):
    fn: object

    @property
    def __wrapped__(self):
        return self.fn

    def __call__(self, x):
        return self.fn(x)


def test_module_update_wrapper_copies_metadata_onto_a_copy():
    original = Wrapper(_square)
    w = module_update_wrapper(original)
    assert (w.__name__, w.__qualname__, w.__doc__, w(3)) == (
        "_square",
        "_square",
        "Square x.",
        9,
    )
    assert w.__module__ == __name__ and w.__annotations__ == {}
    assert w.__wrapped__ is _square
    assert type(w) is Wrapper and w is not original
    assert "__name__" not in vars(original)  # the input is not modified


def test_module_update_wrapper_takes_the_attributes_from_wrapped():
    def cube(x):
        "Cube x."
        return x**3

    w = module_update_wrapper(Wrapper(_square), cube)
    assert (w.__name__, w.__doc__) == ("cube", "Cube x.")
    assert w.__wrapped__ is _square  # still the property


def test_module_update_wrapper_copies_only_what_the_wrapped_has():
    w = module_update_wrapper(Wrapper(functools.partial(max, 1)))
    assert w.__module__ == "functools"
    assert "__name__" not in vars(w)


class Bare(Module):
    fn: object


class FieldWrapped(Module):
    __wrapped__: object = None


@pytest.mark.parametrize(
    "wrapper, got", [(Bare(_square), "missing"), (FieldWrapped(), "a NoneType")]
)
def test_module_update_wrapper_needs_a_wrapped_property(wrapper, got):
    with pytest.raises(
        ValueError,
        match=r"^Wrapper module must supply `__wrapped__` as a property\. "
        rf"`{type(wrapper).__name__}\.__wrapped__` is {got}",
    ):
        module_update_wrapper(wrapper, _square)


def test_wrapper_attributes_survive_flatten_and_unflatten():
    # They used to be dropped: the generated unflatten rebuilt only the fields.
    w = module_update_wrapper(Wrapper(_square))
    leaves, treedef = jax.tree_util.tree_flatten(w)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert vars(rebuilt) == vars(w)
    mapped = jax.tree_util.tree_map(lambda x: x, w)
    assert (mapped.__name__, mapped.__doc__) == ("_square", "Square x.")
    assert inspect.signature(mapped) == inspect.signature(_square)
    # The attributes are part of the structure, as in Equinox.
    assert treedef != jax.tree_util.tree_structure(Wrapper(_square))
    assert treedef == jax.tree_util.tree_structure(module_update_wrapper(w))
    hash(treedef)  # the `__annotations__` dict does not make it unhashable


def test_wrapper_attributes_survive_a_transform():
    class Scale(Module):
        fn: object
        factor: jax.Array

        @property
        def __wrapped__(self):
            return self.fn

        def __call__(self, x):
            return self.fn(x) * self.factor

    w = module_update_wrapper(Scale(_square, jnp.array(2.0)))
    double = filter_jit(
        lambda m: jax.tree_util.tree_map(lambda a: a * 2 if is_array(a) else a, m)
    )
    doubled = double(w)
    assert doubled.__name__ == "_square"
    assert float(doubled(jnp.array(3.0))) == 36.0


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(WRAPPER_FIELD_NAMES), st.text(max_size=3), max_size=5
    ),
    st.booleans(),
)
def test_wrapper_attributes_round_trip_with_and_without_unset_fields(attrs, unset):
    class Holder(Module):
        a: object
        b: int = field(static=True)
        c: object = "class default"

        def __init__(self, a, b, set_c):
            self.a, self.b = a, b
            if set_c:
                self.c = 1.0

    holder = Holder(jnp.array(1.0), 2, not unset)
    vars(holder).update(attrs)
    leaves, treedef = jax.tree_util.tree_flatten(holder)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert vars(rebuilt) == vars(holder)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(holder)[0]]
    assert len(paths) == len(leaves)


def test_wrapper_attributes_may_be_set_in_init():
    class Named(Module):
        fn: object

        def __init__(self, fn):
            self.fn = fn
            self.__name__ = "named"

    named = Named(_square)
    assert named.__name__ == "named"
    assert jax.tree_util.tree_map(lambda x: x, named).__name__ == "named"
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        named.__name__ = "other"


@pytest.mark.parametrize(
    "args, kwargs, kind",
    [((), {"x": [1]}, "dict"), ((), {"x": 1}, "dict"), (([1],), {}, "list")],
)
def test_partial_is_unhashable_as_in_equinox(args, kwargs, kind):
    # Its `keywords` field is a dict, so no Partial is hashable (in Equinox
    # either); a list among the arguments names its own path.
    with pytest.raises(TypeError, match=rf"^unhashable type: '{kind}'"):
        hash(Partial(_square, *args, **kwargs))


def test_partial_signature_is_its_call_signature():
    assert str(inspect.signature(Partial(_square, 1, c=2))) == (
        "(*args: Any, **kwargs: Any) -> ~_Return"
    )


def test_orig_class_is_set_by_module_setattr_not_by_partial():
    assert "__setattr__" not in Partial.__dict__
    p = Partial(max, 1)
    # As in Equinox: the value is stored (typing ignores the error) but the
    # assignment still fails, as every assignment to a frozen Module does.
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        p.__orig_class__ = Partial[str]
    assert p.__orig_class__ == Partial[str]
    assert jax.tree_util.tree_structure(p) == jax.tree_util.tree_structure(
        Partial(max, 1)
    )
