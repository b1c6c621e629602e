"""`filter`, `partition` and `combine`."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod


class Pair(pytreemod.Module):
    first: Any
    second: Any
    tag: str = pytreemod.field(static=True, default="pair")


class Single(pytreemod.Module):
    value: Any
    size: int = pytreemod.field(static=True, default=1)


def _same(a, b):
    """Same structure, and the very same leaf objects."""
    a_leaves, a_def = jax.tree_util.tree_flatten(a)
    b_leaves, b_def = jax.tree_util.tree_flatten(b)
    return a_def == b_def and all(
        x is y for x, y in zip(a_leaves, b_leaves, strict=True)
    )


ARRAY = jnp.arange(3.0)
INT_ARRAY = jnp.arange(3)
NP_ARRAY = np.ones(2, np.float32)
TREE = {
    "layer": Pair(ARRAY, (INT_ARRAY, "relu"), tag="dense"),
    "config": [1, 2.5, None],
    "numpy": Single(NP_ARRAY, size=2),
}


# --- filter ------------------------------------------------------------------


def test_filter_with_a_callable_keeps_the_leaves_it_selects():
    kept = pytreemod.filter(TREE, pytreemod.is_array)
    assert kept["layer"].first is ARRAY
    assert kept["layer"].second == (INT_ARRAY, None)
    assert kept["layer"].tag == "dense"
    assert kept["config"] == [None, None, None]
    assert kept["numpy"].value is NP_ARRAY


@pytest.mark.parametrize("spec, expected", [(True, [1, "a"]), (False, [None, None])])
def test_filter_with_a_bool_keeps_all_or_nothing(spec, expected):
    assert pytreemod.filter([1, "a"], spec) == expected


def test_filter_inverse_and_replace():
    tree = (jnp.ones(2), 3, "x")
    assert pytreemod.filter(tree, pytreemod.is_array, inverse=True)[1:] == (3, "x")
    replaced = pytreemod.filter(tree, pytreemod.is_array, replace=0)
    assert replaced[1:] == (0, 0)
    assert replaced[0] is tree[0]


def test_filter_with_a_prefix_spec_decides_per_subtree():
    spec = {"layer": True, "config": [False, True, False], "numpy": False}
    kept = pytreemod.filter(TREE, spec)
    assert _same(kept["layer"], TREE["layer"])
    assert kept["config"] == [None, 2.5, None]
    assert kept["numpy"].value is None


def test_filter_with_a_module_prefix_spec():
    model = Pair(jnp.ones(2), Pair(jnp.zeros(2), jnp.ones(3), tag="inner"))
    spec = jax.tree_util.tree_map(lambda _: False, model)
    spec = pytreemod.tree_at(lambda m: m.second.first, spec, True)
    kept = pytreemod.filter(model, spec)
    assert kept.first is None and kept.second.second is None
    assert kept.second.first is model.second.first
    assert kept.second.tag == "inner"


def test_filter_spec_leaves_may_be_callables_inside_a_prefix():
    spec = {"a": pytreemod.is_inexact_array, "b": lambda x: isinstance(x, str)}
    tree = {"a": (jnp.ones(1), jnp.arange(2)), "b": ["s", 1]}
    kept = pytreemod.filter(tree, spec)
    assert kept["a"][1] is None and kept["a"][0] is tree["a"][0]
    assert kept["b"] == ["s", None]


def test_filter_accepts_any_callable_spec():
    spec = functools.partial(lambda kind, x: isinstance(x, kind), str)
    assert pytreemod.filter((1, "a"), spec) == (None, "a")


def test_filter_is_leaf_treats_subtrees_as_leaves():
    tree = [(1, 2), (3, "a")]
    kept = pytreemod.filter(
        tree, lambda x: "a" in x, is_leaf=lambda x: isinstance(x, tuple)
    )
    assert kept == [None, (3, "a")]


def test_filter_keeps_none_subtrees():
    assert pytreemod.filter({"a": None, "b": 1}, True) == {"a": None, "b": 1}


def test_filter_works_on_tracers():
    @jax.jit
    def f(x):
        kept = pytreemod.filter((x, "s"), pytreemod.is_array)
        return kept[0] * 2

    assert f(jnp.ones(2)).tolist() == [2.0, 2.0]


# --- partition and combine -----------------------------------------------------


def test_partition_gives_both_halves_of_filter():
    selected, rest = pytreemod.partition(TREE, pytreemod.is_array)
    assert _same(selected, pytreemod.filter(TREE, pytreemod.is_array))
    assert _same(rest, pytreemod.filter(TREE, pytreemod.is_array, inverse=True))


def test_partition_replace():
    selected, rest = pytreemod.partition([jnp.ones(1), "a"], pytreemod.is_array, 0)
    assert selected[1] == 0 and rest[0] == 0


def test_combine_takes_the_first_non_none_leaf():
    assert pytreemod.combine([1, None, None], [9, 2, None], [9, 9, 3]) == [1, 2, 3]
    assert pytreemod.combine((None,), (None,)) == (None,)


def test_combine_a_single_tree_is_itself():
    assert pytreemod.combine({"a": 1, "b": None}) == {"a": 1, "b": None}


def test_combine_none_stands_for_a_subtree():
    assert pytreemod.combine([None, 1], [(2, 3), None]) == [(2, 3), 1]


def test_combine_with_is_leaf():
    left, right = pytreemod.partition(
        [(1, 2), (3, "a")], lambda x: "a" in x, is_leaf=lambda x: isinstance(x, tuple)
    )
    combined = pytreemod.combine(right, left, is_leaf=lambda x: isinstance(x, tuple))
    assert combined == [(1, 2), (3, "a")]


# --- the round trip, as a property ----------------------------------------------

_LEAVES = [
    jnp.ones(2),
    jnp.arange(3),
    np.zeros((1, 2), np.float32),
    np.float32(1.5),
    1,
    2.5,
    True,
    "relu",
    jnp.tanh,
    None,
]

_PREDICATES = [
    pytreemod.is_array,
    pytreemod.is_inexact_array,
    pytreemod.is_array_like,
    lambda x: isinstance(x, str),
]

_leaf = st.sampled_from(_LEAVES)


def _nodes(children):
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from("abcd"), children, max_size=3),
        st.builds(Pair, children, children, st.sampled_from(["x", "y"])),
        st.builds(Single, children, st.integers(0, 2)),
    )


_trees = st.recursive(_leaf, _nodes, max_leaves=12)


def _random_spec(tree, draw):
    """A random filter_spec for `tree`: a bool or callable here, or (for a
    node) a node of the same kind with random specs for its children."""
    children, treedef = jax.tree_util.tree_flatten(
        tree, is_leaf=lambda x: x is not tree
    )
    is_node = tree is None or not (treedef.num_nodes == 1 and treedef.num_leaves == 1)
    if tree is None and draw(st.booleans()):
        return None
    if not is_node or draw(st.integers(0, 2)) == 0:
        return draw(st.one_of(st.booleans(), st.sampled_from(_PREDICATES)))
    return treedef.unflatten([_random_spec(child, draw) for child in children])


@settings(max_examples=50, deadline=None)
@given(tree=_trees, data=st.data())
def test_combine_undoes_partition(tree, data):
    spec = _random_spec(tree, data.draw)
    selected, rest = pytreemod.partition(tree, spec)
    assert _same(pytreemod.combine(selected, rest), tree)
    assert _same(pytreemod.combine(rest, selected), tree)
    # Each leaf is in exactly one half.
    leaves = jax.tree_util.tree_leaves(tree)
    assert len(jax.tree_util.tree_leaves(selected)) + len(
        jax.tree_util.tree_leaves(rest)
    ) == len(leaves)
    # A Module `==` (tree_equal) agrees too.
    assert pytreemod.tree_equal(pytreemod.combine(selected, rest), tree)


@settings(max_examples=25, deadline=None)
@given(tree=_trees, predicate=st.sampled_from(_PREDICATES))
def test_partition_by_predicate_agrees_with_the_predicate(tree, predicate):
    selected, rest = pytreemod.partition(tree, predicate)
    for leaf in jax.tree_util.tree_leaves(selected):
        assert predicate(leaf)
    for leaf in jax.tree_util.tree_leaves(rest):
        assert not predicate(leaf)


# --- misuse ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, path",
    [
        ({"a": True}, r"at `pytree`"),
        ({"a": (True, True), "b": True}, r"at `pytree\['a'\]`"),
        ({"a": True, "b": [True, None]}, r"at `pytree\['b'\]\[1\]`"),
    ],
)
def test_a_spec_that_is_not_a_prefix_names_the_path(spec, path):
    tree = {"a": (1, 2, 3), "b": [None, 2.0]}
    with pytest.raises(ValueError, match=r"not a prefix of the pytree(.|\n)*" + path):
        pytreemod.filter(tree, spec)


def test_a_module_spec_with_other_static_fields_is_not_a_prefix():
    tree = [Pair(1, 2, tag="x")]
    with pytest.raises(ValueError, match=r"at `pytree\[0\]`(.|\n)*Pair"):
        pytreemod.partition(tree, [Pair(True, True, tag="y")])


@pytest.mark.parametrize("bad", [3, "yes", 1.0])
def test_a_spec_leaf_that_is_not_a_bool_or_callable_is_an_error(bad):
    with pytest.raises(ValueError, match=r"bools or callables(.|\n)*filter_spec\[1\]"):
        pytreemod.filter((1, 2), (True, bad))


def test_combine_of_different_structures_names_the_path():
    with pytest.raises(ValueError, match=r"different structures(.|\n)*pytree\[1\]"):
        pytreemod.combine((1, (2, 3)), (None, (None, None, None)))


def test_combine_of_nothing_is_an_error():
    with pytest.raises(TypeError, match="at least one pytree"):
        pytreemod.combine()
