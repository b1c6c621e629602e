"""`tree_flatten_one_level`: the immediate children of the root node."""

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytreemod import Module, field, tree_equal, tree_flatten_one_level


class Pair(Module):
    left: object
    right: object
    tag: str = field(static=True, default="p")


@pytest.mark.parametrize(
    "tree, children",
    [
        ({"b": [1, 2], "a": None}, [None, [1, 2]]),
        ([(1, 2), {}, ()], [(1, 2), {}, ()]),
        ((None,), [None]),
        (None, []),
        ((), []),
        (3.0, [3.0]),
        ("s", ["s"]),
    ],
)
def test_children(tree, children):
    got, treedef = tree_flatten_one_level(tree)
    assert got == children
    assert treedef.num_leaves == len(children)
    assert treedef.unflatten(got) == tree


def test_a_leaf_gives_a_leaf_treedef():
    x = jnp.ones(2)
    children, treedef = tree_flatten_one_level(x)
    assert children[0] is x
    assert jax.tree_util.treedef_is_leaf(treedef)


def test_a_module_gives_its_dynamic_fields_and_keeps_static_ones():
    inner = Pair(jnp.ones(2), None, tag="in")
    model = Pair(inner, [1], tag="out")
    children, treedef = tree_flatten_one_level(model)
    assert children[0] is inner and children[1] == [1]
    rebuilt = treedef.unflatten(["x", "y"])
    assert (rebuilt.left, rebuilt.right, rebuilt.tag) == ("x", "y", "out")


@pytest.mark.parametrize("make", [lambda x: x.append(x), lambda x: x.extend([1, x])])
def test_a_node_that_is_its_own_child_is_an_error(make):
    loop = []
    make(loop)
    with pytest.raises(
        ValueError,
        match=r"^PyTree node of type `list` is immediately self-referential; that is "
        r"to say it appears within its own PyTree structure as an immediate subnode\.",
    ):
        tree_flatten_one_level(loop)


def test_a_deeper_cycle_is_flattened_one_level():
    x, y = [], []
    x.append(y)
    y.append(x)
    children, treedef = tree_flatten_one_level(x)
    assert children[0] is y
    assert treedef == jax.tree_util.tree_structure([0])


def test_empty_nodes_among_the_children_are_children():
    children, treedef = tree_flatten_one_level([None, (), Module(), 1])
    assert children[:2] == [None, ()] and children[3] == 1
    assert treedef == jax.tree_util.tree_structure([0, 0, 0, 0])


trees = st.recursive(
    st.one_of(st.integers(-3, 3), st.none()),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from("ab"), children, max_size=2),
        st.builds(Pair, children, children),
    ),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None)
@given(trees)
def test_unflatten_rebuilds_and_leaves_agree(tree):
    children, treedef = tree_flatten_one_level(tree)
    assert tree_equal(treedef.unflatten(children), tree)
    below = [leaf for child in children for leaf in jax.tree_util.tree_leaves(child)]
    assert below == jax.tree_util.tree_leaves(tree)
