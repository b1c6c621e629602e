"""`tree_equal`: structure, shapes, dtypes and values; eager and under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pytreemod import Module, field, tree_equal


class Pair(Module):
    left: object
    right: object
    tag: str = field(static=True, default="p")


class Holder(Module):
    value: object


EQUAL = [
    ([1, "a", None], [1, "a", None]),
    ({"a": jnp.ones(2), "b": (1,)}, {"a": jnp.ones(2), "b": (1,)}),
    (jnp.arange(3), np.arange(3, dtype=np.int32)),
    (np.float32(2.0), jnp.array(2.0)),
    (1, 1.0),
    (Pair(jnp.ones(2), Holder(3)), Pair(jnp.ones(2), Holder(3))),
    ((), ()),
    (jax.random.key(0), jax.random.key(0)),
]

UNEQUAL = [
    ([1, 2], [1, 3]),
    ([1], (1,)),
    ({"a": 1}, {"b": 1}),
    ([None], [1]),
    (jnp.ones(2), jnp.ones(3)),
    (jnp.ones(2), jnp.ones((1, 2))),
    (jnp.ones(2), jnp.ones(2, jnp.int32)),
    (jnp.ones(2), jnp.array([1.0, 2.0])),
    (jnp.array(1), 1),
    (np.ones(2), [1.0, 1.0]),
    (jnp.array(jnp.nan), jnp.array(jnp.nan)),
    (Pair(1, 2, tag="a"), Pair(1, 2, tag="b")),
    (Pair(1, Holder(2)), Pair(1, Holder(3))),
    (Pair(1, 2), Holder(1)),
    (jax.random.key(0), jax.random.key(1)),
]


@pytest.mark.parametrize("x, y", EQUAL)
def test_equal(x, y):
    assert tree_equal(x, y) is True
    assert tree_equal(y, x) is True


@pytest.mark.parametrize("x, y", UNEQUAL)
def test_unequal(x, y):
    assert tree_equal(x, y) is False
    assert tree_equal(y, x) is False


def test_several_pytrees_all_compared_with_the_first():
    assert tree_equal([1], [1], [1]) is True
    assert tree_equal([1], [1], [2]) is False
    assert tree_equal([1]) is True


@pytest.mark.parametrize(
    "x, y, expected",
    [
        (1, 1.0, False),
        (1, 1, True),
        (np.ones(2, np.float32), jnp.ones(2), False),
        (jnp.ones(2), jnp.ones(2), True),
    ],
)
def test_typematch(x, y, expected):
    assert tree_equal(x, y, typematch=True) is expected


@pytest.mark.parametrize(
    "rtol, atol, expected",
    [(0.0, 0.0, False), (1e-2, 0.0, True), (0.0, 1e-2, True), (1e-5, 1e-5, False)],
)
def test_tolerances(rtol, atol, expected):
    x = {"w": jnp.array([1.0, 2.0]), "n": jnp.arange(2)}
    y = {"w": jnp.array([1.001, 2.0]), "n": jnp.arange(2)}
    assert tree_equal(x, y, rtol=rtol, atol=atol) is expected


def test_tolerances_do_not_make_integers_approximate():
    assert tree_equal(jnp.array(1), jnp.array(2), atol=5.0) is False


def test_tolerances_on_bfloat16_numpy_arrays():
    x = np.asarray(jnp.array([1.0, 2.0], jnp.bfloat16))
    y = np.asarray(jnp.array([1.0, 2.015625], jnp.bfloat16))
    assert tree_equal(x, y) is False
    assert tree_equal(x, y, rtol=0.01) is True


def test_under_jit_returns_a_traced_boolean():
    results = []

    @jax.jit
    def f(x, y):
        out = tree_equal({"a": x, "b": 1}, {"a": y, "b": 1})
        results.append(out)
        return out

    assert bool(f(jnp.ones(2), jnp.ones(2))) is True
    assert bool(f(jnp.ones(2), jnp.zeros(2))) is False
    assert isinstance(results[0], jax.core.Tracer)
    assert results[0].shape == () and results[0].dtype == jnp.bool_
    assert len(results) == 1  # one trace: the result depends on values only


def test_under_jit_with_tolerance_and_a_concrete_side():
    @jax.jit
    def f(x):
        return tree_equal(x, jnp.array([1.0, 2.0]), atol=0.1)

    assert bool(f(jnp.array([1.05, 2.0]))) is True
    assert bool(f(jnp.array([1.5, 2.0]))) is False


def test_under_jit_a_static_mismatch_is_a_plain_false():
    @jax.jit
    def f(x):
        assert tree_equal(x, jnp.ones(3)) is False
        assert tree_equal([x], (x,)) is False
        return x

    f(jnp.ones(2))


def test_module_eq_uses_tree_equal():
    assert Pair(jnp.ones(2), 1) == Pair(jnp.ones(2), 1)
    assert Pair(jnp.ones(2), 1) != Pair(jnp.zeros(2), 1)


def test_modules_as_static_values_compare_without_recursing_forever():
    # A Module in a static field is compared by `==` inside the treedef, which
    # calls `tree_equal` again on the smaller Module.
    inner = Pair(1, 2)
    assert tree_equal(Pair(0, 0, tag=inner), Pair(0, 0, tag=Pair(1, 2)))
    assert not tree_equal(Pair(0, 0, tag=inner), Pair(0, 0, tag=Pair(1, 3)))


def test_non_array_leaf_whose_eq_is_elementwise():
    class Vector:
        def __init__(self, values):
            self.values = np.asarray(values)

        def __eq__(self, other):
            return self.values == other.values

        __hash__ = None

    assert tree_equal(Vector([1, 2]), Vector([1, 2])) is True
    assert tree_equal(Vector([1, 2]), Vector([1, 3])) is False


# --- properties over random pytrees -------------------------------------------

leaves = st.one_of(
    st.integers(-100, 100),
    st.floats(-100, 100, allow_nan=False),
    st.text(max_size=3),
    st.builds(
        lambda n, seed: np.random.default_rng(seed).integers(-9, 9, size=n),
        st.integers(0, 3),
        st.integers(0, 5),
    ),
    st.builds(
        lambda n, seed: jnp.asarray(
            np.random.default_rng(seed).normal(size=n).astype(np.float32)
        ),
        st.integers(0, 3),
        st.integers(0, 5),
    ),
)


def _extend(children):
    return st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(st.sampled_from("abc"), children, max_size=3),
        st.builds(Pair, children, children, st.sampled_from(["x", "y"])),
        st.builds(Holder, children),
    )


trees = st.recursive(st.one_of(leaves, st.none()), _extend, max_leaves=10)


def _changed(leaf):
    if isinstance(leaf, str):
        return leaf + "!"
    if isinstance(leaf, (jax.Array, np.ndarray)):
        return leaf + 1 if leaf.size else leaf.reshape(1, 0)
    return leaf + 1


@settings(max_examples=40, deadline=None)
@given(trees)
def test_a_tree_equals_itself_and_a_rebuilt_copy(tree):
    leaves_, treedef = jax.tree_util.tree_flatten(tree)
    assert tree_equal(tree, tree) is True
    assert tree_equal(tree, jax.tree_util.tree_unflatten(treedef, leaves_)) is True


@settings(max_examples=40, deadline=None)
@given(trees, st.integers(0, 100))
def test_any_single_leaf_change_is_detected(tree, pick):
    leaves_, treedef = jax.tree_util.tree_flatten(tree)
    assume(leaves_)
    i = pick % len(leaves_)
    leaves_[i] = _changed(leaves_[i])
    assert tree_equal(tree, jax.tree_util.tree_unflatten(treedef, leaves_)) is False
