"""`pytreemod.nn.Linear` and `pytreemod.nn.Identity`."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod as ptm


@pytest.mark.parametrize(
    "in_features, out_features, use_bias",
    [
        (3, 2, True),
        (3, 2, False),
        ("scalar", 2, True),
        (3, "scalar", True),
        ("scalar", "scalar", False),
    ],
)
def test_values_match_numpy(in_features, out_features, use_bias):
    linear = ptm.nn.Linear(in_features, out_features, use_bias, key=jax.random.key(0))
    n_in = 1 if in_features == "scalar" else in_features
    n_out = 1 if out_features == "scalar" else out_features
    assert linear.weight.shape == (n_out, n_in)
    assert (linear.bias is None) == (not use_bias)
    x = np.linspace(-1.0, 2.0, n_in).astype(np.float32)
    if in_features == "scalar":
        x = x.reshape(())
    expected = np.asarray(linear.weight) @ x.reshape(n_in)
    if use_bias:
        expected = expected + np.asarray(linear.bias)
    if out_features == "scalar":
        expected = expected.reshape(())
    y = linear(jnp.asarray(x))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_init_is_uniform_within_one_over_sqrt_fan_in():
    linear = ptm.nn.Linear(64, 32, key=jax.random.key(1))
    lim = 1 / math.sqrt(64)
    for array in (linear.weight, linear.bias):
        assert float(jnp.max(jnp.abs(array))) <= lim
    weight = np.asarray(linear.weight)
    # 2048 uniform draws: they reach near both ends and have the uniform's std.
    assert weight.max() > 0.95 * lim and weight.min() < -0.95 * lim
    assert abs(weight.std() - lim / math.sqrt(3)) < 0.1 * lim


def test_init_depends_on_key():
    a = ptm.nn.Linear(3, 3, key=jax.random.key(0))
    b = ptm.nn.Linear(3, 3, key=jax.random.key(1))
    assert not np.allclose(a.weight, b.weight)
    assert ptm.tree_equal(a, ptm.nn.Linear(3, 3, key=jax.random.key(0)))


def test_zero_inputs_builds():
    linear = ptm.nn.Linear(0, 2, key=jax.random.key(0))
    assert linear(jnp.zeros(0)).shape == (2,)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.complex64])
def test_dtype(dtype):
    linear = ptm.nn.Linear(3, 2, dtype=dtype, key=jax.random.key(0))
    assert linear.weight.dtype == dtype and linear.bias.dtype == dtype
    assert linear(jnp.ones(3, dtype)).dtype == dtype


def test_default_dtype_is_float32():
    linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
    assert linear.weight.dtype == jnp.float32


def test_gradients_finite():
    linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
    grads = ptm.filter_grad(lambda m, x: jnp.sum(m(x) ** 2))(linear, jnp.ones(3))
    assert grads.weight.shape == (2, 3)
    for g in jax.tree_util.tree_leaves(grads):
        assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g != 0))


def test_filter_jit_and_filter_vmap():
    linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
    xs = jnp.arange(12.0).reshape(4, 3)
    ys = ptm.filter_jit(ptm.filter_vmap(lambda m, x: m(x), in_axes=(None, 0)))(
        linear, xs
    )
    assert ys.shape == (4, 2)
    np.testing.assert_allclose(ys, xs @ linear.weight.T + linear.bias[None], rtol=1e-5)


def test_repr_is_readable():
    text = repr(ptm.nn.Linear(3, 2, key=jax.random.key(0)))
    assert text.startswith("Linear(")
    assert "weight=f32[2,3]" in text and "bias=f32[2]" in text
    assert "in_features=3" in text


@pytest.mark.parametrize(
    "in_features, x_shape, match",
    [
        (
            3,
            (4,),
            r"Linear\(in_features=3, out_features=2\): `x` must have shape "
            r"\(3,\); got shape \(4,\)",
        ),
        (3, (5, 3), r"got shape \(5, 3\)\. .*extra leading batch axis.*jax\.vmap"),
        ("scalar", (1,), r"in_features='scalar'.*shape \(\); got shape \(1,\)"),
    ],
)
def test_bad_input_shape(in_features, x_shape, match):
    linear = ptm.nn.Linear(in_features, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match=match):
        linear(jnp.ones(x_shape))


def test_bad_input_shape_under_jit_is_caught_at_trace_time():
    linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`x` must have shape \(3,\)"):
        jax.jit(linear)(jnp.ones(2))


@pytest.mark.parametrize("size", [-1, 2.0, "vector", True])
def test_bad_sizes(size):
    with pytest.raises(ValueError, match="`in_features` must be a non-negative int"):
        ptm.nn.Linear(size, 2, key=jax.random.key(0))


def test_identity_returns_its_input():
    identity = ptm.nn.Identity(3, 4, use_bias=False, key=jax.random.key(0))
    x = {"a": jnp.ones(2), "b": "anything"}
    assert identity(x, key=jax.random.key(1)) is x
    assert jax.tree_util.tree_leaves(identity) == []
    assert repr(identity) == "Identity()"
    out = ptm.filter_jit(lambda m, x: m(x))(identity, jnp.arange(3.0))
    np.testing.assert_array_equal(out, jnp.arange(3.0))
