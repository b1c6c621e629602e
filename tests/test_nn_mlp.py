"""`pytreemod.nn.MLP`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod as ptm


def _numpy_mlp(mlp, x, activation, final_activation):
    layers = []
    for layer in mlp.layers:
        weight = np.asarray(layer.weight)
        bias = None if layer.bias is None else np.asarray(layer.bias)
        if weight.ndim == 3:  # scan=True: the hidden layers stacked
            b = [None] * len(weight) if bias is None else list(bias)
            layers.extend(zip(list(weight), b, strict=True))
        else:
            layers.append((weight, bias))
    h = np.asarray(x, np.float64).reshape(-1)
    for i, (weight, bias) in enumerate(layers):
        h = weight @ h + (0 if bias is None else bias)
        h = activation(h) if i < len(layers) - 1 else final_activation(h)
    return h.reshape(()) if mlp.out_size == "scalar" else h


@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("scan", [False, True])
def test_values_match_numpy(depth, scan):
    mlp = ptm.nn.MLP(
        2,
        3,
        width_size=4,
        depth=depth,
        activation=jnp.tanh,
        final_activation=jax.nn.sigmoid,
        scan=scan,
        key=jax.random.key(0),
    )
    assert len(mlp.layers) == (1 if depth == 0 else 3 if scan else depth + 1)
    x = jnp.array([0.5, -1.0])
    sigmoid = lambda h: 1 / (1 + np.exp(-h))
    expected = _numpy_mlp(mlp, x, np.tanh, sigmoid)
    np.testing.assert_allclose(mlp(x), expected, rtol=1e-5, atol=1e-6)


def test_scan_and_loop_hold_the_same_parameters():
    kwargs = dict(width_size=4, depth=4, key=jax.random.key(3))
    loop = ptm.nn.MLP(2, 3, **kwargs)
    scan = ptm.nn.MLP(2, 3, scan=True, **kwargs)
    hidden = scan.layers[1]
    assert hidden.weight.shape == (3, 4, 4)
    for i in range(3):
        np.testing.assert_array_equal(hidden.weight[i], loop.layers[i + 1].weight)
    x = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(scan(x), loop(x), rtol=1e-6)


def test_scalar_in_and_out():
    mlp = ptm.nn.MLP("scalar", "scalar", 4, 2, key=jax.random.key(0))
    y = mlp(jnp.array(0.3))
    assert y.shape == ()
    relu = lambda h: np.maximum(h, 0)
    expected = _numpy_mlp(mlp, jnp.array(0.3), relu, lambda h: h)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_bias, use_final_bias", [(True, False), (False, True)])
def test_bias_flags(use_bias, use_final_bias):
    mlp = ptm.nn.MLP(
        2,
        3,
        4,
        2,
        use_bias=use_bias,
        use_final_bias=use_final_bias,
        key=jax.random.key(0),
    )
    assert [layer.bias is not None for layer in mlp.layers] == [
        use_bias,
        use_bias,
        use_final_bias,
    ]


def test_dtype():
    mlp = ptm.nn.MLP(2, 3, 4, 2, dtype=jnp.bfloat16, key=jax.random.key(0))
    arrays = jax.tree_util.tree_leaves(ptm.filter(mlp, ptm.is_array))
    assert {leaf.dtype for leaf in arrays} == {jnp.dtype(jnp.bfloat16)}
    assert mlp(jnp.ones(2, jnp.bfloat16)).dtype == jnp.bfloat16


def test_activations_act_on_each_scalar():
    # As in Equinox: an activation sees one scalar at a time, so normalising
    # by the sum gives 1 everywhere instead of a distribution.
    mlp = ptm.nn.MLP(
        2, 3, 4, 1, final_activation=lambda h: h / jnp.sum(h), key=jax.random.key(0)
    )
    np.testing.assert_allclose(mlp(jnp.ones(2)), jnp.ones(3))


def test_learnt_activation_gets_a_copy_per_neuron():
    mlp = ptm.nn.MLP(
        2,
        3,
        width_size=4,
        depth=2,
        activation=ptm.nn.PReLU(0.1),
        final_activation=ptm.nn.PReLU(0.5),
        key=jax.random.key(0),
    )
    assert mlp.activation.negative_slope.shape == (2, 4)
    assert mlp.final_activation.negative_slope.shape == (3,)
    grads = ptm.filter_grad(lambda m, x: jnp.sum(m(x)))(mlp, jnp.array([1.0, -3.0]))
    assert grads.activation.negative_slope.shape == (2, 4)
    prelu = lambda h: np.where(h >= 0, h, 0.1 * h)
    final = lambda h: np.where(h >= 0, h, 0.5 * h)
    expected = _numpy_mlp(mlp, jnp.array([1.0, -3.0]), prelu, final)
    np.testing.assert_allclose(mlp(jnp.array([1.0, -3.0])), expected, rtol=1e-5)


def test_gradients_finite():
    mlp = ptm.nn.MLP(2, 3, 4, 2, activation=jnp.tanh, key=jax.random.key(0))
    grads = ptm.filter_grad(lambda m, x: jnp.sum(m(x) ** 2))(mlp, jnp.ones(2))
    leaves = jax.tree_util.tree_leaves(grads)
    assert len(leaves) == 6
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)


def test_filter_jit_and_filter_vmap():
    mlp = ptm.nn.MLP(2, 3, 4, 2, key=jax.random.key(0))
    xs = jnp.arange(10.0).reshape(5, 2)
    ys = ptm.filter_jit(ptm.filter_vmap(lambda m, x: m(x), in_axes=(None, 0)))(mlp, xs)
    assert ys.shape == (5, 3)
    np.testing.assert_allclose(ys[2], mlp(xs[2]), rtol=1e-5)


def test_repr_is_readable():
    text = repr(ptm.nn.MLP(2, 3, 4, 1, key=jax.random.key(0)))
    assert text.startswith("MLP(")
    assert "weight=f32[4,2]" in text and "activation=<function relu>" in text


def test_bad_input_shape():
    mlp = ptm.nn.MLP(2, 3, 4, 1, key=jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"MLP\(in_size=2, out_size=3\): `x` must have shape \(2,\)"
    ):
        mlp(jnp.ones(3))


def test_bad_depth():
    with pytest.raises(ValueError, match="`depth` must be a non-negative int"):
        ptm.nn.MLP(2, 3, 4, -1, key=jax.random.key(0))
