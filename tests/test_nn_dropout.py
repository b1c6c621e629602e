"""`pytreemod.nn.Dropout`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod as ptm


def test_drops_a_fraction_p_and_rescales_the_rest():
    dropout = ptm.nn.Dropout(p=0.25)
    y = np.asarray(dropout(jnp.ones(4000), key=jax.random.key(0)))
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs((y == 0).mean() - 0.25) < 0.03
    assert abs(y.mean() - 1.0) < 0.05  # the expectation is unchanged


def test_same_key_same_mask_other_key_other_mask():
    dropout = ptm.nn.Dropout(0.5)
    x = jnp.arange(1.0, 65.0)
    a = dropout(x, key=jax.random.key(0))
    np.testing.assert_array_equal(a, dropout(x, key=jax.random.key(0)))
    assert not np.array_equal(a, dropout(x, key=jax.random.key(1)))
    kept = np.asarray(a) != 0
    np.testing.assert_allclose(np.asarray(a)[kept], np.asarray(x)[kept] * 2)


@pytest.mark.parametrize(
    "layer, call_kwargs",
    [
        (ptm.nn.Dropout(0.5, inference=True), {}),
        (ptm.nn.Dropout(0.5), {"inference": True}),
        (ptm.nn.Dropout(0.0), {}),
    ],
)
def test_inactive_returns_the_input_and_needs_no_key(layer, call_kwargs):
    x = jnp.arange(3.0)
    assert layer(x, **call_kwargs) is x


def test_call_argument_overrides_the_field():
    dropout = ptm.nn.Dropout(0.5, inference=True)
    y = dropout(jnp.ones(64), key=jax.random.key(0), inference=False)
    assert bool(jnp.any(y == 0))


def test_p_one_drops_everything_with_finite_gradient():
    dropout = ptm.nn.Dropout(1.0)
    x = jnp.ones(4)
    np.testing.assert_array_equal(dropout(x, key=jax.random.key(0)), np.zeros(4))
    grad = jax.grad(lambda x: jnp.sum(dropout(x, key=jax.random.key(0))))(x)
    np.testing.assert_array_equal(grad, np.zeros(4))


def test_missing_key_says_how_to_fix_it():
    with pytest.raises(RuntimeError, match=r"called without a key(.|\n)*inference"):
        ptm.nn.Dropout(0.5)(jnp.ones(3))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_p(p):
    with pytest.raises(ValueError, match=r"`p` must be a probability in \[0, 1\]"):
        ptm.nn.Dropout(p)


def test_gradient_is_the_mask_over_keep_probability():
    dropout = ptm.nn.Dropout(0.5)
    key = jax.random.key(3)
    x = jnp.arange(1.0, 9.0)
    grad = jax.grad(lambda x: jnp.sum(dropout(x, key=key)))(x)
    mask = np.asarray(dropout(x, key=key)) != 0
    assert bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_allclose(grad, mask * 2.0)


def test_traced_p():
    x = jnp.ones(2000)
    y = jax.jit(lambda p: ptm.nn.Dropout(p)(x, key=jax.random.key(0)))(0.75)
    assert abs(float(jnp.mean(y == 0)) - 0.75) < 0.04


def test_filter_jit_and_filter_vmap_with_a_key_per_example():
    dropout = ptm.nn.Dropout(0.5)
    keys = jax.random.split(jax.random.key(0), 2)
    xs = jnp.ones((2, 32))
    ys = ptm.filter_jit(
        ptm.filter_vmap(lambda m, x, k: m(x, key=k), in_axes=(None, 0, 0))
    )(dropout, xs, keys)
    assert ys.shape == (2, 32)
    np.testing.assert_array_equal(ys[1], dropout(xs[1], key=keys[1]))
    assert not np.array_equal(ys[0], ys[1])


def test_repr_is_readable():
    assert repr(ptm.nn.Dropout(0.1)) == "Dropout(p=0.1, inference=False)"


def test_deterministic_is_the_deprecated_name_of_inference():
    x = jnp.arange(1.0, 5.0)
    with pytest.warns(DeprecationWarning, match=r"^Dropout\(deterministic=...\)"):
        layer = ptm.nn.Dropout(deterministic=True)
    assert layer.inference and layer.deterministic
    assert jnp.array_equal(layer(x), x)
    active = ptm.nn.Dropout(p=0.9)
    with pytest.warns(DeprecationWarning, match=r"^Dropout\(\)\(deterministic="):
        assert jnp.array_equal(active(x, deterministic=True), x)


def test_attention_accepts_deterministic_with_a_warning():
    attention = ptm.nn.MultiheadAttention(2, 4, dropout_p=0.5, key=jax.random.key(0))
    x = jnp.ones((3, 4))
    with pytest.warns(DeprecationWarning, match=r"^MultiheadAttention\(\)\("):
        out = attention(x, x, x, deterministic=True)
    assert jnp.array_equal(out, attention(x, x, x, inference=True))
