"""`tree_check`: cycles and Modules reached twice are refused."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from pytreemod import Module, tree_check


class Linear(Module):
    weight: jax.Array

    def apply(self, x):
        return self.weight * x


class Stack(Module):
    layers: tuple
    head: object = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Node:
    value: object


def test_a_plain_tree_passes():
    x = jnp.ones(2)
    model = Stack((Linear(x), Linear(x)), head={"a": [x, None, ()]})
    assert tree_check(model) is None


@pytest.mark.parametrize("shared", [jnp.ones(2), 3, "a", None, (), [1]])
def test_repeated_leaves_and_plain_containers_pass(shared):
    # Only Modules (dataclass pytree nodes) must not repeat; this is narrower
    # than Equinox, which also refuses a repeated list or dict.
    assert tree_check([shared, {"k": shared}]) is None


def test_a_module_reached_twice_is_refused_with_both_paths():
    layer = Linear(jnp.ones(2))
    with pytest.raises(
        ValueError,
        match=r"(?s)same Linear object appears twice.*pytree\.layers\[0\]"
        r".*pytree\.head\[1\]",
    ):
        tree_check(Stack((layer,), head=[0, layer]))


def test_a_registered_dataclass_reached_twice_is_refused():
    node = Node(1)
    with pytest.raises(ValueError, match=r"(?s)same Node.*pytree\[0\].*pytree\[1\]"):
        tree_check([node, node])


@pytest.mark.parametrize(
    "make, inner, outer",
    [
        (lambda: _cyclic_list(), r"pytree\[1\]", r"pytree"),
        (lambda: _cyclic_dict(), r"pytree\['a'\]\['b'\]", r"pytree\['a'\]"),
        (lambda: _cyclic_module(), r"pytree\.head\[0\]", r"pytree"),
    ],
)
def test_a_cycle_is_refused_with_both_paths(make, inner, outer):
    with pytest.raises(
        ValueError, match=rf"(?s)contains itself.*\n    {inner}\n.*\n    {outer}\n"
    ):
        tree_check(make())


def _cyclic_list():
    loop = [1]
    loop.append(loop)
    return loop


def _cyclic_dict():
    inner = {}
    inner["b"] = inner
    return {"a": inner}


def _cyclic_module():
    holder = []
    model = Stack((), head=holder)
    holder.append(model)
    return model


def test_a_bound_method_of_a_held_module_shares_that_module():
    layer = Linear(jnp.ones(2))
    assert tree_check([layer.apply]) is None
    with pytest.raises(
        ValueError,
        match=r"(?s)same Linear object.*pytree\.layers\[0\].*pytree\.head\.__self__",
    ):
        tree_check(Stack((layer,), head=layer.apply))
