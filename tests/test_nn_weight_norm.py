"""`pytreemod.nn.WeightNorm`."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as ptm


class _Tensor(ptm.Module):
    """A layer with a 3-d weight, as a convolution has."""

    weight: jax.Array

    def __call__(self, x):
        return jnp.einsum("oik,ik->o", self.weight, x)


def test_initially_computes_what_the_layer_did():
    linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
    normed = ptm.nn.WeightNorm(linear)
    x = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(normed(x), linear(x), rtol=1e-6)


def test_length_and_direction():
    linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
    normed = ptm.nn.WeightNorm(linear)
    row_norms = np.linalg.norm(np.asarray(linear.weight), axis=1, keepdims=True)
    np.testing.assert_allclose(normed.g, row_norms, rtol=1e-6)
    # Set the lengths to 2 and 3: the effective rows then have those norms.
    normed = ptm.tree_at(lambda n: n.g, normed, jnp.array([[2.0], [3.0]]))
    effective = normed._weight()
    np.testing.assert_allclose(np.linalg.norm(effective, axis=1), [2.0, 3.0], rtol=1e-6)
    x = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(normed(x), effective @ x + linear.bias, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(scale=hnp.arrays(np.float32, (2, 1), elements=st.floats(0.125, 8.0, width=32)))
def test_output_is_invariant_to_the_scale_of_v(scale):
    linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
    normed = ptm.nn.WeightNorm(linear)
    scaled = ptm.tree_at(lambda n: n.layer.weight, normed, linear.weight * scale)
    x = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(scaled(x), normed(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "axis, g_shape",
    [(0, (2, 1, 1)), (1, (1, 3, 1)), (-1, (1, 1, 4)), (None, (1, 1, 1))],
)
def test_axis_on_a_3d_weight(axis, g_shape):
    weight = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)), jnp.float32)
    normed = ptm.nn.WeightNorm(_Tensor(weight), axis=axis)
    assert normed.g.shape == g_shape
    w = np.asarray(weight, np.float64)
    axes = tuple(i for i in range(3) if axis is None or i != axis % 3)
    np.testing.assert_allclose(
        normed.g, np.sqrt((w**2).sum(axis=axes, keepdims=True)), rtol=1e-5
    )
    x = jnp.ones((3, 4))
    np.testing.assert_allclose(normed(x), _Tensor(weight)(x), rtol=1e-5, atol=1e-6)


def test_gradients_finite_and_orthogonal_to_v():
    linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
    normed = ptm.nn.WeightNorm(linear)
    grads = ptm.filter_grad(lambda m, x: jnp.sum(m(x) ** 2))(normed, jnp.ones(3))
    for g in jax.tree_util.tree_leaves(grads):
        assert bool(jnp.all(jnp.isfinite(g)))
    # The output does not change along v, so the gradient in v is orthogonal to v.
    dots = jnp.sum(grads.layer.weight * linear.weight, axis=1)
    np.testing.assert_allclose(dots, np.zeros(2), atol=1e-5)


def test_filter_jit_and_filter_vmap():
    normed = ptm.nn.WeightNorm(ptm.nn.Linear(3, 2, key=jax.random.key(0)))
    xs = jnp.arange(6.0).reshape(2, 3)
    ys = ptm.filter_jit(ptm.filter_vmap(lambda m, x: m(x), in_axes=(None, 0)))(
        normed, xs
    )
    np.testing.assert_allclose(ys[1], normed(xs[1]), rtol=1e-5)


def test_repr_is_readable():
    text = repr(ptm.nn.WeightNorm(ptm.nn.Linear(3, 2, key=jax.random.key(0))))
    assert text.startswith("WeightNorm(\n  layer=Linear(")
    assert "g=f32[2,1]" in text and "weight_name='weight'" in text


def test_bad_input_shape_is_reported_by_the_wrapped_layer():
    normed = ptm.nn.WeightNorm(ptm.nn.Linear(3, 2, key=jax.random.key(0)))
    with pytest.raises(ValueError, match=r"Linear\(in_features=3.*got shape \(4,\)"):
        normed(jnp.ones(4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight_name": "kernel"}, r"no array field 'kernel'.*Linear"),
        ({"weight_name": "use_bias"}, r"no array field 'use_bias'"),
        (
            {"axis": 2},
            r"`axis` must be None or an axis of the weight 'weight' of "
            r"shape \(2, 3\); got axis=2",
        ),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ptm.nn.WeightNorm(ptm.nn.Linear(3, 2, key=jax.random.key(0)), **kwargs)
