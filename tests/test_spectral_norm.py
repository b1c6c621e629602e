import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod
from pytreemod.nn import Linear, SpectralNorm, inference_mode, make_with_state


class Kernel(pytreemod.Module):
    """A layer with a 3-d weight, like a 1-d convolution kernel."""

    weight: jax.Array

    def __call__(self, x):
        return jnp.einsum("oik,ik->o", self.weight, x)


def _linear(matrix):
    layer = Linear(matrix.shape[1], matrix.shape[0], key=jax.random.key(0))
    return pytreemod.tree_at(
        lambda m: (m.weight, m.bias), layer, (matrix, jnp.zeros(matrix.shape[0]))
    )


def test_output_uses_the_weight_divided_by_its_largest_singular_value():
    matrix = jax.random.normal(jax.random.key(1), (4, 3))
    layer, state = make_with_state(SpectralNorm)(
        _linear(matrix), "weight", key=jax.random.key(2)
    )
    x = jnp.array([1.0, -2.0, 0.5])
    y, state = layer(x, state)
    sigma = np.linalg.svd(np.asarray(matrix), compute_uv=False)[0]
    np.testing.assert_allclose(y, np.asarray(matrix) @ np.asarray(x) / sigma, rtol=1e-4)


def test_power_iteration_state_converges_over_calls():
    # A nearly degenerate spectrum converges slowly: the calls must refine it.
    matrix = jnp.diag(jnp.array([1.0, 0.9, 0.1]))
    layer, state = make_with_state(SpectralNorm)(
        _linear(matrix), "weight", eps=1e-12, key=jax.random.key(3)
    )
    step = pytreemod.filter_jit(
        lambda layer, state: layer(jnp.array([1.0, 0.0, 0.0]), state)
    )
    first, state = step(layer, state)
    for _ in range(200):
        y, state = step(layer, state)
    assert abs(y[0].item() - 1.0) < abs(first[0].item() - 1.0)
    np.testing.assert_allclose(y[0], 1.0, rtol=1e-3)


def test_inference_leaves_the_vectors_alone():
    matrix = jax.random.normal(jax.random.key(4), (3, 3))
    layer, state = make_with_state(SpectralNorm)(
        _linear(matrix), "weight", key=jax.random.key(5)
    )
    before = jax.tree_util.tree_leaves(state)
    _, after = inference_mode(layer)(jnp.ones(3), state)
    assert all(
        (a == b).all()
        for a, b in zip(before, jax.tree_util.tree_leaves(after), strict=True)
    )
    _, trained = layer(jnp.ones(3), after)
    assert any(
        not (a == b).all()
        for a, b in zip(before, jax.tree_util.tree_leaves(trained), strict=True)
    )


def test_kernel_weight_is_reshaped_to_a_matrix():
    weight = jax.random.normal(jax.random.key(6), (2, 3, 2))
    layer, state = make_with_state(SpectralNorm)(
        Kernel(weight), "weight", key=jax.random.key(7)
    )
    u, v = state.get(layer.uv_index)
    assert u.shape == (2,) and v.shape == (6,)
    y, state = layer(jnp.ones((3, 2)), state)
    sigma = np.linalg.svd(np.asarray(weight).reshape(2, 6), compute_uv=False)[0]
    np.testing.assert_allclose(y, Kernel(weight / sigma)(jnp.ones((3, 2))), rtol=1e-4)


def test_gradients_are_finite_and_skip_the_vectors():
    matrix = jax.random.normal(jax.random.key(8), (3, 2))
    layer, state = make_with_state(SpectralNorm)(
        _linear(matrix), "weight", key=jax.random.key(9)
    )

    @pytreemod.filter_grad(has_aux=True)
    def loss(layer, state):
        y, state = layer(jnp.ones(2), state)
        return jnp.sum(y**2), state

    grads, state = loss(layer, state)
    assert np.isfinite(grads.layer.weight).all()
    # The gradient of ||W / sigma(W) x||^2 is orthogonal to W (scale invariant).
    np.testing.assert_allclose(jnp.sum(grads.layer.weight * matrix), 0.0, atol=1e-4)


@pytest.mark.parametrize("name", ["bias", "missing"])
def test_weight_must_be_a_matrix(name):
    with pytest.raises(ValueError, match="at least two dimensions"):
        SpectralNorm(_linear(jnp.ones((2, 2))), name, key=jax.random.key(0))
