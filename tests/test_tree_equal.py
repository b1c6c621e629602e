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


def _same(result, expected):
    """`result` has exactly the value and the type `expected` has: a Python
    bool, or a JAX boolean scalar."""
    if isinstance(expected, bool):
        return result is expected
    return (
        isinstance(result, jax.Array)
        and result.shape == ()
        and result.dtype == jnp.bool_
        and bool(result) is bool(expected)
    )


JAX_TRUE, JAX_FALSE = jnp.array(True), jnp.array(False)

# Decided without comparing any JAX array by value: a Python bool.
STATIC = [
    ([1, "a", None], [1, "a", None], True),
    ((), (), True),
    (1, 1.0, True),
    (1, True, True),
    (np.ones(2), np.ones(2), True),
    (np.float32(2.0), np.array(2.0, np.float32), True),  # scalar-ness is ignored
    (Pair(np.ones(2), Holder(3)), Pair(np.ones(2), Holder(3)), True),
    ([1, 2], [1, 3], False),
    ([1], (1,), False),
    ({"a": 1}, {"b": 1}, False),
    ([None], [1], False),
    (jnp.ones(2), jnp.ones(3), False),
    (jnp.ones(2), jnp.ones((1, 2)), False),
    (jnp.ones(2), jnp.ones(2, jnp.int32), False),
    (jnp.ones(2), np.ones(2), False),  # float32 against float64
    (jnp.array(1), 1),
    (np.array(1), 1),
    (np.float64(1.0), 1.0),
    (np.ones(2), [1.0, 1.0], False),
    (np.array(np.nan), np.array(np.nan), False),
    (np.ones(2), np.zeros(2), False),
    (Pair(1, 2, tag="a"), Pair(1, 2, tag="b"), False),
    (Pair(1, Holder(2)), Pair(1, Holder(3)), False),
    (Pair(1, 2), Holder(1), False),
]
STATIC = [case if len(case) == 3 else (*case, False) for case in STATIC]

# A JAX array was compared by value: a JAX boolean scalar.
BY_VALUE = [
    ({"a": jnp.ones(2), "b": (1,)}, {"a": jnp.ones(2), "b": (1,)}, True),
    (jnp.arange(3), np.arange(3, dtype=np.int32), True),
    (np.float32(2.0), jnp.array(2.0), True),
    (Pair(jnp.ones(2), Holder(3)), Pair(jnp.ones(2), Holder(3)), True),
    (jax.random.key(0), jax.random.key(0), True),
    (jnp.zeros(0), jnp.zeros(0), True),
    (jnp.ones(2), jnp.array([1.0, 2.0]), False),
    (jnp.array(jnp.nan), jnp.array(jnp.nan), False),
    (jnp.ones(2), np.zeros(2, np.float32), False),
    (jax.random.key(0), jax.random.key(1), False),
]


@pytest.mark.parametrize("x, y, expected", STATIC)
def test_decided_statically_gives_a_python_bool(x, y, expected):
    assert _same(tree_equal(x, y), expected)
    assert _same(tree_equal(y, x), expected)


@pytest.mark.parametrize("x, y, expected", BY_VALUE)
def test_comparing_jax_arrays_gives_a_jax_bool(x, y, expected):
    assert _same(tree_equal(x, y), jnp.array(expected))
    assert _same(tree_equal(y, x), jnp.array(expected))


def test_a_static_difference_wins_over_jax_values():
    # The arrays were compared first, but the unequal ints decide: plain False.
    assert _same(tree_equal([jnp.ones(2), 1], [jnp.ones(2), 2]), False)
    assert _same(tree_equal([jnp.zeros(2), 1], [jnp.ones(2), 2]), False)


def test_several_pytrees_all_compared_with_the_first():
    assert _same(tree_equal([1], [1], [1]), True)
    assert _same(tree_equal([1], [1], [2]), False)
    assert _same(tree_equal([1]), True)
    assert _same(tree_equal(jnp.ones(2)), True)
    x, y = jnp.ones(2), np.ones(2, np.float32)
    assert _same(tree_equal(x, x, y), JAX_TRUE)
    assert _same(tree_equal(y, y, x), JAX_TRUE)
    assert _same(tree_equal(x, x, x + 1), JAX_FALSE)
    assert _same(tree_equal(x, x, [x]), False)


def test_needs_at_least_one_pytree():
    with pytest.raises(IndexError, match="at least one pytree"):
        tree_equal()


@pytest.mark.parametrize(
    "x, y, expected",
    [
        (1, 1.0, False),
        (1, 1, True),
        (1, True, False),
        (np.ones(2, np.float32), jnp.ones(2), False),
        (np.float32(1), np.array(1, np.float32), False),
        (np.ones(2), np.ones(2), True),
        (jnp.ones(2), jnp.ones(2), JAX_TRUE),
    ],
)
def test_typematch(x, y, expected):
    assert _same(tree_equal(x, y, typematch=True), expected)


@pytest.mark.parametrize(
    "rtol, atol, expected",
    [(0.0, 0.0, False), (1e-2, 0.0, True), (0.0, 1e-2, True), (1e-5, 1e-5, False)],
)
def test_tolerances(rtol, atol, expected):
    x = {"w": jnp.array([1.0, 2.0]), "n": jnp.arange(2)}
    y = {"w": jnp.array([1.001, 2.0]), "n": jnp.arange(2)}
    assert _same(tree_equal(x, y, rtol=rtol, atol=atol), jnp.array(expected))
    x_np = jax.tree_util.tree_map(np.asarray, x)
    y_np = jax.tree_util.tree_map(np.asarray, y)
    assert _same(tree_equal(x_np, y_np, rtol=rtol, atol=atol), expected)


def test_tolerances_may_be_arrays():
    x, y = jnp.array(1.0), jnp.array(1.001)
    assert _same(tree_equal(x, y, atol=jnp.array(0.1)), JAX_TRUE)
    assert _same(tree_equal(np.asarray(x), np.asarray(y), atol=np.array(0.1)), True)


def test_tolerances_do_not_make_integers_approximate():
    assert _same(tree_equal(jnp.array(1), jnp.array(2), atol=5.0), JAX_FALSE)
    assert _same(tree_equal(np.array(1), np.array(2), rtol=1.0), False)


def test_tolerances_do_not_make_nan_equal():
    assert _same(tree_equal(np.array(np.nan), np.array(np.nan), atol=1.0), False)
    assert _same(
        tree_equal(jnp.array(jnp.nan), jnp.array(jnp.nan), atol=1.0), JAX_FALSE
    )


def test_tolerances_on_bfloat16_numpy_arrays():
    # Equinox compares bfloat16 NumPy arrays exactly whatever the tolerance
    # (NumPy does not count bfloat16 as inexact); here the tolerance applies.
    x = np.asarray(jnp.array([1.0, 2.0], jnp.bfloat16))
    y = np.asarray(jnp.array([1.0, 2.015625], jnp.bfloat16))
    assert _same(tree_equal(x, y), False)
    assert _same(tree_equal(x, y, rtol=0.01), True)


def test_bfloat16_numpy_scalars():
    one = jax.dtypes.bfloat16(1)
    assert _same(tree_equal(one, jax.dtypes.bfloat16(1)), True)
    assert _same(tree_equal(one, jax.dtypes.bfloat16(2)), False)


def test_under_jit_returns_a_traced_boolean():
    results = []

    @jax.jit
    def f(x, y):
        out = tree_equal({"a": x, "b": 1}, {"a": y, "b": 1})
        results.append(out)
        return out

    assert _same(f(jnp.ones(2), jnp.ones(2)), JAX_TRUE)
    assert _same(f(jnp.ones(2), jnp.zeros(2)), JAX_FALSE)
    assert isinstance(results[0], jax.core.Tracer)
    assert results[0].shape == () and results[0].dtype == jnp.bool_
    assert len(results) == 1  # one trace: the result depends on values only


def test_under_jit_numpy_and_static_comparisons_stay_python_bools():
    x = np.ones(2, np.float32)

    @jax.jit
    def f(a):
        assert _same(tree_equal(x, x), True)
        assert _same(tree_equal(a, 0), False)
        assert _same(tree_equal(x, a, typematch=True), False)
        out = tree_equal(x, a)
        assert isinstance(out, jax.core.Tracer)
        return out

    assert _same(f(jnp.ones(2)), JAX_TRUE)


def test_under_jit_a_tracer_and_a_concrete_array_count_as_one_type():
    # Equinox answers False here (a tracer is not an ArrayImpl); pytreemod
    # compares values, so that `typematch=True` means the same under `jit`.
    y = jnp.ones(2)

    @jax.jit
    def f(a):
        return tree_equal(a, y, typematch=True)

    assert _same(f(jnp.ones(2)), JAX_TRUE)


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
    assert _same(Pair(jnp.ones(2), 1) == Pair(jnp.ones(2), 1), JAX_TRUE)
    assert _same(Pair(jnp.ones(2), 1) == Pair(jnp.zeros(2), 1), JAX_FALSE)
    assert _same(Pair(1, 2) == Pair(1, 2), True)
    assert _same(Pair(jnp.ones(2), 1) == Pair(jnp.ones(2), 2), False)


def test_modules_as_static_values_compare_without_recursing_forever():
    # A Module in a static field is compared by `==` inside the treedef, which
    # calls `tree_equal` again on the smaller Module.
    inner = Pair(1, 2)
    assert tree_equal(Pair(0, 0, tag=inner), Pair(0, 0, tag=Pair(1, 2))) is True
    assert tree_equal(Pair(0, 0, tag=inner), Pair(0, 0, tag=Pair(1, 3))) is False


def test_non_array_leaf_whose_eq_is_elementwise():
    # Equinox raises NumPy's "truth value of an array is ambiguous" here;
    # pytreemod reduces the elementwise answer with `all`.
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
    assert bool(tree_equal(tree, tree)) is True
    assert bool(tree_equal(tree, jax.tree_util.tree_unflatten(treedef, leaves_)))


@settings(max_examples=40, deadline=None)
@given(trees, st.integers(0, 100))
def test_any_single_leaf_change_is_detected(tree, pick):
    leaves_, treedef = jax.tree_util.tree_flatten(tree)
    assume(leaves_)
    i = pick % len(leaves_)
    leaves_[i] = _changed(leaves_[i])
    changed = jax.tree_util.tree_unflatten(treedef, leaves_)
    assert bool(tree_equal(tree, changed)) is False


def _has_jax_array(tree):
    return any(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(tree))


@settings(max_examples=40, deadline=None)
@given(trees)
def test_the_type_of_the_answer_says_whether_jax_arrays_were_compared(tree):
    expected = JAX_TRUE if _has_jax_array(tree) else True
    assert _same(tree_equal(tree, tree), expected)
