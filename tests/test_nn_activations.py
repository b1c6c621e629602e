"""`pytreemod.nn.PReLU`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod as ptm


def test_matches_numpy_with_a_scalar_slope():
    prelu = ptm.nn.PReLU()
    x = np.array([-2.0, -0.5, 0.0, 3.0], np.float32)
    np.testing.assert_allclose(prelu(jnp.asarray(x)), np.where(x >= 0, x, 0.25 * x))


def test_slope_per_channel_broadcasts():
    slope = jnp.array([[0.1], [0.2]])  # (channels, 1)
    prelu = ptm.nn.PReLU(slope)
    x = np.array([[-1.0, 2.0, -3.0], [-1.0, 2.0, -3.0]], np.float32)
    expected = np.where(x >= 0, x, np.asarray(slope) * x)
    np.testing.assert_allclose(prelu(jnp.asarray(x)), expected, rtol=1e-6)


def test_gradient_with_respect_to_the_slope():
    prelu = ptm.nn.PReLU(0.3)
    x = jnp.array([-2.0, -1.0, 4.0])
    grads = ptm.filter_grad(lambda m, x: jnp.sum(m(x)))(prelu, x)
    # d/d(slope) of sum(where(x >= 0, x, slope * x)) is the sum of the negatives.
    np.testing.assert_allclose(grads.negative_slope, -3.0)
    grad_x = jax.grad(lambda x: jnp.sum(prelu(x)))(x)
    np.testing.assert_allclose(grad_x, [0.3, 0.3, 1.0], rtol=1e-6)


def test_filter_jit_and_filter_vmap():
    prelu = ptm.nn.PReLU(0.5)
    xs = jnp.array([[-2.0, 2.0], [4.0, -4.0]])
    ys = ptm.filter_jit(ptm.filter_vmap(lambda m, x: m(x), in_axes=(None, 0)))(
        prelu, xs
    )
    np.testing.assert_allclose(ys, [[-1.0, 2.0], [4.0, -2.0]])


def test_repr_is_readable():
    # Weakly typed, as in Equinox, which prints the same.
    assert repr(ptm.nn.PReLU()) == "PReLU(negative_slope=weak_f32[])"


def test_slope_that_does_not_broadcast():
    prelu = ptm.nn.PReLU(jnp.full((3,), 0.1))
    with pytest.raises(
        ValueError,
        match=r"PReLU: `negative_slope` of shape \(3,\) does not broadcast to the "
        r"input `x` of shape \(2,\)",
    ):
        prelu(jnp.ones(2))
