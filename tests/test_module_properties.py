"""Property tests: flatten/unflatten round-trips and key paths over random
nested Modules with static and dynamic fields."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.tree_util import GetAttrKey

from pytreemod import Module, field, tree_equal


class Pair(Module):
    left: object
    right: object
    tag: str = field(static=True)


class Single(Module):
    value: object
    count: int = field(static=True, default=0)


leaf = st.one_of(
    st.integers(-5, 5),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.text(max_size=3),
    st.none(),
    st.builds(
        lambda shape, seed: np.random.default_rng(seed).normal(size=shape),
        st.lists(st.integers(0, 3), max_size=2).map(tuple),
        st.integers(0, 10),
    ),
)


def _extend(children):
    return st.one_of(
        st.builds(Pair, children, children, st.sampled_from(["a", "b"])),
        st.builds(Single, children, st.integers(0, 2)),
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(st.sampled_from("xyz"), children, max_size=2),
    )


trees = st.recursive(leaf, _extend, max_leaves=12)


@settings(max_examples=50, deadline=None)
@given(trees)
def test_unflatten_of_flatten_is_the_same_tree(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert tree_equal(rebuilt, tree)
    assert jax.tree_util.tree_structure(rebuilt) == treedef


@settings(max_examples=50, deadline=None)
@given(trees)
def test_key_paths_name_the_fields(tree):
    for path, value in jax.tree_util.tree_leaves_with_path(tree):
        node = tree
        for key in path:
            if isinstance(key, GetAttrKey):
                assert isinstance(node, Module)
                assert key.name in ("left", "right", "value")
                node = getattr(node, key.name)
            else:
                node = node[getattr(key, "idx", getattr(key, "key", None))]
        assert node is value


@settings(max_examples=50, deadline=None)
@given(trees)
def test_equality_and_hash_agree_with_the_round_trip(tree):
    rebuilt = jax.tree_util.tree_map(lambda x: x, tree)
    if isinstance(tree, Module):
        assert tree == rebuilt
        if _holds_list_or_dict(tree):  # unhashable, as in Equinox
            with pytest.raises(TypeError, match="unhashable type"):
                hash(tree)
        else:  # arrays are left out of the hash
            assert hash(tree) == hash(rebuilt)


def _holds_list_or_dict(tree):
    nodes = jax.tree_util.tree_leaves(
        tree, is_leaf=lambda x: isinstance(x, (list, dict))
    )
    return any(isinstance(x, (list, dict)) for x in nodes)
