"""`filter_eval_shape`."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as eqx


class MyLinear(eqx.Module):
    weight: jax.Array
    bias: jax.Array
    in_size: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, *, key: jax.Array):
        wkey, bkey = jax.random.split(key)
        self.weight = jax.random.normal(wkey, (out_size, in_size))
        self.bias = jax.random.normal(bkey, (out_size,), dtype=jnp.float16)
        self.in_size = in_size
        self.activation = "relu"


def test_the_skeleton_of_a_module_allocates_no_arrays():
    key = jax.random.key(0)
    # Collect first: garbage left by earlier tests (e.g. error_if's traced
    # errors) may otherwise be freed during the call and hide an allocation.
    gc.collect()
    before = len(jax.live_arrays())
    skeleton = eqx.filter_eval_shape(MyLinear, 2, 3, key=key)
    assert len(jax.live_arrays()) == before
    assert isinstance(skeleton, MyLinear)
    assert skeleton.weight == jax.ShapeDtypeStruct((3, 2), jnp.float32)
    assert skeleton.bias == jax.ShapeDtypeStruct((3,), jnp.float16)
    assert (skeleton.in_size, skeleton.activation) == (2, "relu")
    leaves = jax.tree_util.tree_leaves(skeleton)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)


def test_shape_dtype_structs_stand_in_for_array_arguments():
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    skeleton = eqx.filter_eval_shape(MyLinear, 4, 5, key=key)
    assert skeleton.weight.shape == (5, 4)


def test_non_arrays_pass_through_both_ways():
    def f(x, config):
        assert config == {"act": "tanh", "n": 3}  # not traced
        return {"y": jnp.tile(x, config["n"]), "name": config["act"], "n": 3}

    out = eqx.filter_eval_shape(f, jnp.ones(2), {"act": "tanh", "n": 3})
    assert out == {
        "y": jax.ShapeDtypeStruct((6,), jnp.float32),
        "name": "tanh",
        "n": 3,
    }


def test_a_module_as_the_function():
    layer = MyLinear(2, 3, key=jax.random.key(1))

    def apply(x):
        return layer.weight @ x

    out = eqx.filter_eval_shape(apply, jax.ShapeDtypeStruct((2, 7), jnp.float32))
    assert out == jax.ShapeDtypeStruct((3, 7), jnp.float32)


_DTYPES = [np.float32, np.int32, np.float16, np.bool_]


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from(_DTYPES),
    reps=st.integers(1, 3),
)
def test_shapes_match_running_the_function(shape, dtype, reps):
    def f(x, reps, tag):
        return [jnp.stack([x] * reps), tag, jnp.sum(x, dtype=jnp.int32)]

    x = np.zeros(shape, dtype)
    got = eqx.filter_eval_shape(f, x, reps, "t")
    ran = f(jnp.asarray(x), reps, "t")
    assert got[1] == "t"
    for struct, array in zip([got[0], got[2]], [ran[0], ran[2]], strict=True):
        assert struct == jax.ShapeDtypeStruct(array.shape, array.dtype)


def test_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="needs a callable first"):
        eqx.filter_eval_shape(jnp.ones(3), 1)
