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


def _is_none(x):
    return x is None


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
    # `_stack()` holds two `None`s: `is_leaf` makes each a place of its own.
    new = tree_at(where, _stack(), replace, is_leaf=_is_none)
    expected = replace.shape if isinstance(replace, jax.Array) else replace
    assert get(new) == expected


def test_the_only_none_of_a_tree_can_be_selected_without_is_leaf():
    model = Stack((Linear(jnp.ones((2, 2)), jnp.zeros(2)),), extra=None)
    assert tree_at(lambda m: m.extra, model, 5).extra == 5
    assert tree_at(lambda m: m.extra, model, replace_fn=repr).extra == "None"
    assert tree_at(lambda t: (t[0], t[2]), [None, 1, 2], ("a", "b")) == ["a", 1, "b"]


@pytest.mark.parametrize(
    "where",
    [lambda t: t[0], lambda t: t[1][0], lambda t: (t[0], t[2]), lambda t: [t[0]]],
)
def test_a_none_among_several_is_ambiguous(where):
    # As in Equinox: `None` is one shared object, so `where` cannot say which.
    tree = [None, [None], 0]
    with pytest.raises(
        ValueError,
        match=r"(?s)^`where` does not uniquely identify a single element of "
        r"`pytree`\..*is_leaf=lambda x: x is None",
    ):
        tree_at(where, tree, replace_fn=lambda x: 1)
    assert tree_at(where, tree, replace_fn=lambda x: 1, is_leaf=_is_none) != tree


def test_nodes_other_than_a_none_can_be_selected_beside_several_nones():
    assert tree_at(lambda t: t[2], [None, None, 0], 1) == [None, None, 1]
    assert tree_at(lambda t: t[1], [None, [None], 0], 1) == [None, 1, 0]


def test_where_sees_nones_and_empty_containers_as_they_are():
    seen = []

    def where(t):
        seen.append((t[0] is None, len(t[1]), t[2], t[3]))
        return t[4]

    assert tree_at(where, [None, (), [], {}, 1], 2) == [None, (), [], {}, 2]
    assert seen == [(True, 0, [], {})]


def test_select_an_empty_container_among_equal_ones():
    # CPython shares `()`: the two places are still different nodes.
    tree = [(), (), {}]
    assert tree_at(lambda t: t[1], tree, 1) == [(), 1, {}]
    assert tree_at(lambda t: (t[0], t[2]), tree, (1, 2)) == [1, (), 2]


def test_a_sequence_of_nodes_with_a_sequence_of_values():
    model = _stack()
    new = tree_at(lambda m: [m.layers[0].bias, m.layers[1].weight], model, [1, 2])
    assert (new.layers[0].bias, new.layers[1].weight) == (1, 2)


@pytest.mark.parametrize(
    "replace, expected",
    [
        ("ab", ["a", "b"]),
        ([5, 6], [5, 6]),
        (np.array([5, 6]), [5, 6]),
        ({"k": 0, "l": 1}, ["k", "l"]),  # a dict is iterated by its keys
    ],
)
def test_replace_may_be_any_sized_iterable(replace, expected):
    assert tree_at(lambda t: (t[0], t[1]), [0, 0, 0], replace)[:2] == expected


def test_a_node_selected_twice_is_replaced_once():
    # As in Equinox: the last value wins, and `replace_fn` runs once on it.
    assert tree_at(lambda t: (t[0], t[0]), [0, 1], ("a", "b")) == ["b", 1]
    calls = []
    new = tree_at(
        lambda t: [t[0], t[0]], [0, 1], replace_fn=lambda x: calls.append(x) or 10
    )
    assert new == [10, 1] and calls == [0]


def test_where_returning_an_empty_sequence_changes_nothing():
    assert tree_at(lambda t: (), [1, 2], ()) == [1, 2]
    assert tree_at(lambda t: [], [1, 2], replace_fn=str) == [1, 2]


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
        is_leaf=_is_none,
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
    with pytest.raises(AttributeError, match="weight"):
        tree_at(
            lambda m: m.layers[0].weight,
            model,
            0,
            is_leaf=lambda x: isinstance(x, Linear),
        )


def test_works_under_jit():
    @jax.jit
    def f(model, x):
        return tree_at(lambda m: m.layers[0].bias, model, x)

    out = f(_stack(), jnp.full(2, 3.0))
    assert tree_equal(out.layers[0].bias, jnp.full(2, 3.0))


# --- misuse: the exception types and first sentences are Equinox's -------------


@pytest.mark.parametrize(
    "where, shown",
    [
        (lambda m: jnp.zeros(2), r"\[0\. 0\.\]"),
        (lambda m: (m.layers[0].weight, jnp.zeros(2)), r"\[0\. 0\.\]"),
        (lambda m: m.layers[0].size, "2"),
        (lambda m: "abc", "abc"),
    ],
)
def test_where_returning_a_value_that_is_not_a_leaf(where, shown):
    with pytest.raises(
        TypeError,
        match=rf"(?s)^Operation undefined, {shown} is not a leaf of the pytree\."
        r".*m\.layers\[0\]",
    ):
        tree_at(where, _stack(), 0)


@pytest.mark.parametrize(
    "where",
    [
        lambda m: [[m.layers[0].weight]],
        lambda m: {"k": m.layers[0].weight},
        lambda m: (m.layers[0].weight, ()),
    ],
)
def test_where_returning_a_sequence_of_non_nodes(where):
    with pytest.raises(
        ValueError,
        match=r"(?s)^`where` does not specify an element or elements of `pytree`\."
        r".*not a node",
    ):
        tree_at(where, _stack(), replace_fn=lambda x: x)


@pytest.mark.parametrize(
    "where, type_name",
    [(lambda m: None, "NoneType"), (lambda t: Linear(t[0], t[1]), "Linear")],
)
def test_where_returning_neither_a_node_nor_a_sequence(where, type_name):
    with pytest.raises(
        TypeError,
        match=rf"(?s)^object of type '{type_name}' has no len\(\)\..*neither a "
        "node",
    ):
        tree_at(where, [1, 2], 0)


def test_where_computing_with_leaves_fails_as_python_says_with_a_note():
    with pytest.raises(AttributeError, match="'_LeafWrapper' object has no") as info:
        tree_at(lambda m: m.layers[0].weight.T, _stack(), 0)
    assert any("stand-in copy" in note for note in info.value.__notes__)
    with pytest.raises(TypeError, match="unsupported operand"):
        tree_at(lambda m: m.layers[0].weight + 1, _stack(), 0)


def test_errors_raised_by_where_itself_pass_through():
    def where(t):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="^boom$"):
        tree_at(where, [1], 0)


def test_wrong_number_of_replacements():
    with pytest.raises(
        ValueError,
        match=r"^`where` must return a sequence of leaves of the same length as "
        r"`replace`\. It selected 2 nodes; `replace` has 3 values\.",
    ):
        tree_at(lambda t: (t[0], t[1]), [1, 2], (0, 0, 0))
    with pytest.raises(
        TypeError,
        match=r"(?s)^object of type 'int' has no len\(\)\..*sequence of 2 new "
        "values",
    ):
        tree_at(lambda t: (t[0], t[1]), [1, 2], 0)
    with pytest.raises(TypeError, match=r"^object of type 'generator' has no len"):
        tree_at(lambda t: (t[0], t[1]), [1, 2], (i for i in range(2)))


@pytest.mark.parametrize(
    "kwargs, which",
    [({}, "neither"), ({"replace": 0, "replace_fn": lambda x: x}, "both")],
)
def test_exactly_one_of_replace_and_replace_fn(kwargs, which):
    with pytest.raises(
        ValueError,
        match=r"^Precisely one of `replace` and `replace_fn` must be specified\. "
        f"Got {which}",
    ):
        tree_at(lambda t: t[0], [1], **kwargs)


@pytest.mark.parametrize(
    "where",
    [
        lambda t: (t[1], t[1][0]),
        lambda t: (t[1][0], t[1]),
        lambda t: (t, t[0]),
    ],
)
def test_a_node_and_a_node_inside_it(where):
    with pytest.raises(
        ValueError,
        match=r"(?s)^`where` does not specify an element or elements of `pytree`\."
        r".*a node and also a node inside it",
    ):
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

    new = tree_at(
        lambda t: tuple(_get(t, p) for p in paths), tree, new_values, is_leaf=is_none
    )

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

    new = tree_at(lambda t: _get(t, path), tree, marker, is_leaf=_is_none)

    assert _get(new, path) is marker
    # Every node off the path to the replaced one is the very same object.
    for other in paths:
        if other[: len(path)] != path and path[: len(other)] != other:
            assert _get(new, other) is _get(tree, other)


def _count_nones(tree):
    return sum(x is None for x in jax.tree_util.tree_leaves(tree, _is_none))


@settings(max_examples=40, deadline=None)
@given(trees, st.integers(0, 100))
def test_without_is_leaf_a_none_is_selectable_exactly_when_it_is_the_only_one(
    tree, pick
):
    paths = list(_all_node_paths(tree))
    path = paths[pick % len(paths)]
    if _get(tree, path) is None and _count_nones(tree) > 1:
        with pytest.raises(ValueError, match="does not uniquely identify"):
            tree_at(lambda t: _get(t, path), tree, 0)
    else:
        assert _get(tree_at(lambda t: _get(t, path), tree, 0), path) == 0


@settings(max_examples=40, deadline=None)
@given(trees)
def test_replacing_every_leaf_by_itself_gives_an_equal_tree(tree):
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree, _is_none)[0]]
    new = tree_at(
        lambda t: [_get(t, p) for p in paths],
        tree,
        replace_fn=lambda x: x,
        is_leaf=_is_none,
    )
    assert bool(tree_equal(new, tree))
