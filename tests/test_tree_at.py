"""`tree_at`: out-of-place replacement of selected nodes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.tree_util import DictKey, GetAttrKey, SequenceKey

from pytreemod import Module, field, tree_at, tree_equal
from pytreemod._module._tree_flatten_one_level import (
    flatten_one_level_with_path as tree_flatten_one_level_with_path,
)


class Linear(Module):
    weight: jax.Array
    bias: jax.Array | None
    size: int = field(static=True, default=2)


class Stack(Module):
    layers: tuple
    extra: object = None


def _stack():
    return Stack(
        (Linear(jnp.ones((2, 2)), jnp.zeros(2)), Linear(jnp.ones((2, 2)), None))
    )


def test_replace_a_leaf_of_a_module_and_keep_the_rest_identical():
    model = _stack()
    new = tree_at(lambda m: m.layers[0].weight, model, jnp.zeros((2, 2)))
    assert tree_equal(new.layers[0].weight, jnp.zeros((2, 2)))
    assert new.layers[0].bias is model.layers[0].bias
    assert new.layers[1] is model.layers[1]
    assert new.layers[0].size == 2
    # The input is unchanged.
    assert tree_equal(model.layers[0].weight, jnp.ones((2, 2)))


def test_equal_leaves_in_different_places_are_told_apart():
    assert tree_at(lambda t: t[1], [7, 7, 7], 0) == [7, 0, 7]
    x = jnp.ones(2)
    tree = {"a": x, "b": x}
    new = tree_at(lambda t: t["b"], tree, None)
    assert new["a"] is x and new["b"] is None


@pytest.mark.parametrize(
    "where, replace, get",
    [
        # a None field, replaced by an array and by something else
        (lambda m: m.layers[1].bias, jnp.ones(2), lambda m: m.layers[1].bias.shape),
        (lambda m: m.extra, "x", lambda m: m.extra),
        # a whole subtree
        (lambda m: m.layers[0], None, lambda m: m.layers[0]),
        (lambda m: m.layers, (), lambda m: m.layers),
        # the root
        (lambda m: m, 3, lambda m: m),
    ],
)
def test_select_none_subtrees_and_the_root(where, replace, get):
    new = tree_at(where, _stack(), replace)
    expected = replace.shape if isinstance(replace, jax.Array) else replace
    assert get(new) == expected


def test_select_an_empty_container_among_equal_ones():
    # CPython shares `()`: the two places are still different nodes.
    tree = [(), (), {}]
    assert tree_at(lambda t: t[1], tree, 1) == [(), 1, {}]
    assert tree_at(lambda t: (t[0], t[2]), tree, (1, 2)) == [1, (), 2]


def test_a_sequence_of_nodes_with_a_sequence_of_values():
    model = _stack()
    new = tree_at(lambda m: [m.layers[0].bias, m.layers[1].bias], model, [1, 2])
    assert (new.layers[0].bias, new.layers[1].bias) == (1, 2)


def test_a_tuple_that_is_itself_a_node_is_one_node():
    model = _stack()
    new = tree_at(lambda m: m.layers, model, ("a", "b"))
    assert new.layers == ("a", "b")


def test_replace_fn_gets_the_old_node():
    model = _stack()
    new = tree_at(
        lambda m: (m.layers[0].weight, m.layers[1].bias),
        model,
        replace_fn=lambda x: "none" if x is None else x * 2,
    )
    assert tree_equal(new.layers[0].weight, 2 * jnp.ones((2, 2)))
    assert new.layers[1].bias == "none"


def test_is_leaf_lets_a_node_be_treated_as_a_leaf():
    model = _stack()
    seen = []
    new = tree_at(
        lambda m: m.layers[0],
        model,
        replace_fn=lambda layer: seen.append(layer) or "replaced",
        is_leaf=lambda x: isinstance(x, Linear),
    )
    assert seen == [model.layers[0]] and new.layers[0] == "replaced"
    with pytest.raises(ValueError, match="(?s)`where` failed.*`is_leaf`"):
        tree_at(
            lambda m: m.layers[0].weight,
            model,
            0,
            is_leaf=lambda x: isinstance(x, Linear),
        )


def test_works_under_jit():
    @jax.jit
    def f(model, x):
        return tree_at(lambda m: m.layers[1].bias, model, x)

    out = f(_stack(), jnp.full(2, 3.0))
    assert tree_equal(out.layers[1].bias, jnp.full(2, 3.0))


# --- misuse -------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        lambda m: jnp.zeros(2),
        lambda m: (m.layers[0].weight, jnp.zeros(2)),
        lambda m: m.layers[0].size,
        lambda m: [[m.layers[0].weight]],
    ],
)
def test_where_returning_a_non_node(where):
    with pytest.raises(ValueError, match=r"(?s)not a node of `pytree`.*m\.layers\[0\]"):
        tree_at(where, _stack(), 0)


@pytest.mark.parametrize(
    "where", [lambda m: m.layers[0].weight.T, lambda m: m.layers[0].weight + 1]
)
def test_where_computing_with_leaves(where):
    with pytest.raises(ValueError, match="(?s)`where` failed.*only select"):
        tree_at(where, _stack(), 0)


def test_wrong_number_of_replacements():
    with pytest.raises(ValueError, match="expected 2, got 3"):
        tree_at(lambda t: (t[0], t[1]), [1, 2], (0, 0, 0))
    with pytest.raises(ValueError, match="must be a sequence of 2 new values"):
        tree_at(lambda t: (t[0], t[1]), [1, 2], 0)


@pytest.mark.parametrize(
    "kwargs, which",
    [({}, "neither"), ({"replace": 0, "replace_fn": lambda x: x}, "both")],
)
def test_exactly_one_of_replace_and_replace_fn(kwargs, which):
    with pytest.raises(ValueError, match=f"exactly one of .*got {which}"):
        tree_at(lambda t: t[0], [1], **kwargs)


@pytest.mark.parametrize(
    "where, what",
    [
        (lambda t: (t[0], t[0]), "the same node twice"),
        (lambda t: (t[1], t[1][0]), "a node and also a node inside it"),
    ],
)
def test_overlapping_selections(where, what):
    with pytest.raises(ValueError, match=what):
        tree_at(where, [1, (2,)], (0, 0))


# --- property: exactly the selected leaves change ------------------------------


class Pair(Module):
    left: object
    right: object
    tag: str = field(static=True, default="p")


leaves = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["a", "b"]),
    st.builds(lambda n: np.zeros(n), st.integers(0, 2)),
)


def _extend(children):
    return st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(st.sampled_from("xyz"), children, max_size=2),
        st.builds(Pair, children, children, st.sampled_from(["s", "t"])),
    )


trees = st.recursive(st.one_of(leaves, st.none()), _extend, max_leaves=10)


def _get(node, path):
    for key in path:
        if isinstance(key, SequenceKey):
            node = node[key.idx]
        elif isinstance(key, DictKey):
            node = node[key.key]
        else:
            assert isinstance(key, GetAttrKey)
            node = getattr(node, key.name)
    return node


@settings(max_examples=50, deadline=None)
@given(trees, st.sets(st.integers(0, 20), max_size=4))
def test_exactly_the_selected_leaves_change(tree, picks):
    # `None`s count as selectable leaves here.
    is_none = lambda x: x is None
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_none)
    n = len(paths_and_leaves)
    chosen = sorted({p % n for p in picks}) if n else []
    new_values = [object() for _ in chosen]
    paths = [paths_and_leaves[i][0] for i in chosen]

    new = tree_at(lambda t: tuple(_get(t, p) for p in paths), tree, new_values)

    new_leaves, new_treedef = jax.tree_util.tree_flatten(new, is_none)
    assert new_treedef == treedef
    replaced = dict(zip(chosen, new_values, strict=True))
    for i, ((_, old), got) in enumerate(zip(paths_and_leaves, new_leaves, strict=True)):
        assert got is replaced.get(i, old)


def _all_node_paths(tree, path=()):
    """Key paths of every node, inner nodes and `None`s included."""
    yield path
    pairs, treedef = tree_flatten_one_level_with_path(tree)
    if not jax.tree_util.treedef_is_leaf(treedef):
        for key_path, child in pairs:
            yield from _all_node_paths(child, path + key_path)


@settings(max_examples=40, deadline=None)
@given(trees, st.integers(0, 100))
def test_replacing_any_subtree_changes_only_that_subtree(tree, pick):
    paths = list(_all_node_paths(tree))
    path = paths[pick % len(paths)]
    marker = object()

    new = tree_at(lambda t: _get(t, path), tree, marker)

    assert _get(new, path) is marker
    # Every node off the path to the replaced one is the very same object.
    for other in paths:
        if other[: len(path)] != path and path[: len(other)] != other:
            assert _get(new, other) is _get(tree, other)
