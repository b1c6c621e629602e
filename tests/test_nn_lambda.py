"""`pytreemod.nn.Lambda`."""

import jax
import jax.numpy as jnp
import numpy as np

import pytreemod as ptm


def test_calls_the_function_and_ignores_the_key():
    layer = ptm.nn.Lambda(jnp.square)
    x = jnp.array([-2.0, 3.0])
    np.testing.assert_array_equal(layer(x), np.array([4.0, 9.0]))
    np.testing.assert_array_equal(layer(x, key=jax.random.key(0)), layer(x))


def test_a_function_leaf_is_static_and_a_module_fn_has_parameters():
    assert (
        jax.tree_util.tree_leaves(ptm.filter(ptm.nn.Lambda(jnp.sin), ptm.is_array))
        == []
    )
    inner = ptm.nn.Linear(2, 2, key=jax.random.key(0))
    layer = ptm.nn.Lambda(inner)
    grads = ptm.filter_grad(lambda m, x: jnp.sum(m(x)))(layer, jnp.ones(2))
    assert grads.fn.weight.shape == (2, 2)
    assert bool(jnp.all(jnp.isfinite(grads.fn.weight)))
    np.testing.assert_allclose(grads.fn.weight, jnp.ones((2, 2)))


def test_filter_jit_and_filter_vmap():
    layer = ptm.nn.Lambda(jax.nn.relu)
    xs = jnp.array([[-1.0, 2.0], [3.0, -4.0]])
    ys = ptm.filter_jit(ptm.filter_vmap(lambda m, x: m(x), in_axes=(None, 0)))(
        layer, xs
    )
    np.testing.assert_array_equal(ys, np.array([[0.0, 2.0], [3.0, 0.0]]))


def test_in_a_sequential():
    model = ptm.nn.Sequential([ptm.nn.Lambda(jnp.negative), ptm.nn.Lambda(jax.nn.relu)])
    np.testing.assert_array_equal(model(jnp.array([1.0, -2.0])), [0.0, 2.0])


def test_repr_is_readable():
    assert repr(ptm.nn.Lambda(jax.nn.relu)) == "Lambda(fn=<function relu>)"
