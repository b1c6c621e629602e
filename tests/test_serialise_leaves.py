"""`tree_serialise_leaves` / `tree_deserialise_leaves`: Equinox's layout."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod
from pytreemod import Module, field


class Block(Module):
    weight: jax.Array
    bias: jax.Array
    scale: float
    count: np.int32
    name: str = field(static=True, default="block")
    activation: object = jax.nn.relu


def _block(seed=0, dtype=jnp.float32):
    key = jax.random.key(seed)
    return Block(
        jax.random.normal(key, (3, 2), dtype),
        jnp.arange(3, dtype=jnp.int32),
        0.5 + seed,
        np.int32(seed),
    )


def _round_trip(tree, like):
    f = io.BytesIO()
    pytreemod.tree_serialise_leaves(f, tree)
    f.seek(0)
    return pytreemod.tree_deserialise_leaves(f, like)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_round_trip_restores_values_and_types(dtype):
    loaded = _round_trip(_block(1, dtype), _block(0, dtype))
    assert pytreemod.tree_equal(loaded, _block(1, dtype), typematch=True)
    assert loaded.weight.dtype == dtype
    assert type(loaded.count) is np.int32 and type(loaded.scale) is float


def test_like_may_be_an_eval_shape_skeleton(tmp_path):
    skeleton = pytreemod.filter_eval_shape(_block, 0)
    pytreemod.tree_serialise_leaves(tmp_path / "model", _block(2))
    assert (tmp_path / "model.eqx").exists()  # suffix added
    loaded = pytreemod.tree_deserialise_leaves(tmp_path / "model", skeleton)
    assert isinstance(loaded.weight, jax.Array)
    np.testing.assert_array_equal(loaded.weight, _block(2).weight)


def test_layout_is_npy_back_to_back_and_written_by_numpy_alone_loads():
    # A file in Equinox's layout, written with NumPy alone: one .npy record per
    # array-like leaf, in flatten order, nothing for other leaves.
    block = _block(3)
    f = io.BytesIO()
    np.save(f, np.asarray(block.weight))
    np.save(f, np.asarray(block.bias))
    np.save(f, np.asarray(block.scale))
    np.save(f, np.asarray(block.count))
    f.seek(0)
    loaded = pytreemod.tree_deserialise_leaves(f, _block(0))
    assert pytreemod.tree_equal(loaded, block)
    # And what we write is exactly that byte stream.
    ours = io.BytesIO()
    pytreemod.tree_serialise_leaves(ours, block)
    assert ours.getvalue() == f.getvalue()


def test_bfloat16_is_stored_as_numpy_writes_it():
    x = jnp.arange(4, dtype=jnp.bfloat16)
    f = io.BytesIO()
    pytreemod.tree_serialise_leaves(f, [x])
    assert b"'descr': '<V2'" in f.getvalue()
    f.seek(0)
    assert (
        pytreemod.tree_deserialise_leaves(f, [jnp.zeros(4, jnp.bfloat16)])[0].dtype
        == jnp.bfloat16
    )


def test_state_serialises():
    class Counter(Module):
        index: pytreemod.nn.StateIndex

        def __init__(self):
            self.index = pytreemod.nn.StateIndex(jnp.zeros(2))

    model, state = pytreemod.nn.make_with_state(Counter)()
    _, new_state = (0, state.set(model.index, jnp.ones(2)))
    _, like = pytreemod.nn.make_with_state(Counter)()
    loaded = _round_trip(new_state, like)
    np.testing.assert_array_equal(loaded.get(model.index), jnp.ones(2))


def test_filter_spec_prefix_skips_a_subtree():
    skip = lambda f, x: None
    keep = lambda f, x: x
    f = io.BytesIO()
    tree = {"a": jnp.ones(2), "b": jnp.ones(3)}
    pytreemod.tree_serialise_leaves(
        f, tree, filter_spec={"a": pytreemod.default_serialise_filter_spec, "b": skip}
    )
    f.seek(0)
    like = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    loaded = pytreemod.tree_deserialise_leaves(
        f, like, filter_spec={"a": pytreemod.default_deserialise_filter_spec, "b": keep}
    )
    assert float(loaded["a"][0]) == 1.0 and float(loaded["b"][0]) == 0.0


def test_shape_change_names_the_key_path():
    f = io.BytesIO()
    pytreemod.tree_serialise_leaves(f, [_block(0)])
    f.seek(0)
    like = [Block(jnp.zeros((4, 2)), jnp.zeros(3, jnp.int32), 0.0, np.int32(0))]
    with pytest.raises(
        ValueError,
        match=r"changed shape from \(4, 2\) in `like` to \(3, 2\) on disk \(`\[0\]",
    ):
        pytreemod.tree_deserialise_leaves(f, like)


def test_type_change_names_the_key_path():
    f = io.BytesIO()
    pytreemod.tree_serialise_leaves(f, {"x": 1.0})
    f.seek(0)
    with pytest.raises(ValueError, match=r"`\['x'\]`: `like` holds a int here but"):
        pytreemod.tree_deserialise_leaves(f, {"x": 1})


def test_truncated_file_is_an_error():
    f = io.BytesIO()
    pytreemod.tree_serialise_leaves(f, [jnp.ones(8), jnp.ones(8)])
    truncated = io.BytesIO(f.getvalue()[:150])
    with pytest.raises(ValueError, match="truncated"):
        pytreemod.tree_deserialise_leaves(truncated, [jnp.ones(8), jnp.ones(8)])


dtypes = st.sampled_from([np.float32, np.float16, np.int32, np.int8, np.bool_])
arrays = st.builds(
    lambda shape, dtype, seed: (
        np.random.default_rng(seed).normal(size=shape).astype(dtype)
    ),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    dtypes,
    st.integers(0, 100),
)
leaves = st.one_of(
    arrays.map(jnp.asarray),
    arrays,
    st.floats(allow_nan=False),
    st.integers(-100, 100),
    st.booleans(),
    st.text(max_size=3),
)
trees = st.recursive(
    leaves,
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.dictionaries(st.text("ab", max_size=2), c, max_size=3),
        st.builds(lambda a, b: Block(a, b, 1.0, np.int32(0)), c, c),
    ),
    max_leaves=10,
)


@settings(max_examples=40, deadline=None)
@given(trees)
def test_round_trip_property(tree):
    like = jax.tree_util.tree_map(
        lambda x: np.zeros_like(x) if isinstance(x, np.ndarray) else x, tree
    )
    assert pytreemod.tree_equal(_round_trip(tree, like), tree, typematch=True)
