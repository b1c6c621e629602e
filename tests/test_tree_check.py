"""`tree_check`: cycles and nodes reached twice are refused, as in Equinox."""

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


@pytest.mark.parametrize("shared", [jnp.ones(2), 3, "a", None, (), [], {}, Module()])
def test_repeated_leaves_and_nodes_without_children_pass(shared):
    assert tree_check([shared, {"k": shared}]) is None


@pytest.mark.parametrize(
    "shared, kind",
    [([1], "list"), ((None,), "tuple"), ({"a": 1}, "dict"), (Linear(1), "Linear")],
)
def test_any_node_with_children_reached_twice_is_refused(shared, kind):
    with pytest.raises(
        ValueError,
        match=rf"(?s)^PyTree node of type `{kind}` appears in the PyTree multiple "
        r"times\..*pytree\[0\].*pytree\[1\]\['k'\]",
    ):
        tree_check([shared, {"k": shared}])


def test_a_module_reached_twice_is_refused_with_both_paths():
    layer = Linear(jnp.ones(2))
    with pytest.raises(
        ValueError,
        match=r"(?s)`Linear` appears in the PyTree multiple times.*"
        r"pytree\.layers\[0\].*pytree\.head\[1\]",
    ):
        tree_check(Stack((layer,), head=[0, layer]))


def test_a_registered_dataclass_reached_twice_is_refused():
    node = Node(1)
    with pytest.raises(
        ValueError, match=r"(?s)`Node` appears.*pytree\[0\].*pytree\[1\]"
    ):
        tree_check([node, node])


def test_a_node_that_is_its_own_child_is_refused():
    with pytest.raises(
        ValueError,
        match=r"^PyTree node of type `list` is immediately self-referential",
    ):
        tree_check(_cyclic_list())


@pytest.mark.parametrize(
    "make, kind, inner, outer",
    [
        (lambda: _mutual_lists(), "list", r"pytree\[0\]\[0\]", r"pytree"),
        (
            lambda: _cyclic_dict(),
            "dict",
            r"pytree\['a'\]\['b'\]\['c'\]",
            r"pytree\['a'\]",
        ),
        (lambda: _cyclic_module(), "Stack", r"pytree\.head\[0\]", r"pytree"),
    ],
)
def test_a_cycle_is_refused_with_both_paths(make, kind, inner, outer):
    with pytest.raises(
        ValueError,
        match=rf"(?s)^PyTree node of type `{kind}` is self-referential; that is to "
        rf"say it appears somewhere within its own PyTree structure\..*\n    {inner}\n"
        rf".*\n    {outer}\n",
    ):
        tree_check(make())


def _mutual_lists():
    x, y = [], []
    x.append(y)
    y.append(x)
    return x


def _cyclic_list():
    loop = [1]
    loop.append(loop)
    return loop


def _cyclic_dict():
    inner = {}
    inner["b"] = {"c": inner}
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
        match=r"(?s)`Linear` appears.*pytree\.layers\[0\].*pytree\.head\.__self__",
    ):
        tree_check(Stack((layer,), head=layer.apply))
