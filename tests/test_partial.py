"""`Partial` and `module_update_wrapper`."""

import dataclasses
import functools
import typing
from typing import Generic

import jax
import jax.numpy as jnp
import pytest

from pytreemod import Module, Partial, is_array, module_update_wrapper


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
