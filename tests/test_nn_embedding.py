"""`pytreemod.nn.Embedding`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod as ptm


def test_lookup_returns_the_row():
    table = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    embedding = ptm.nn.Embedding(weight=jnp.asarray(table))
    assert (embedding.num_embeddings, embedding.embedding_size) == (4, 3)
    for i in range(4):
        np.testing.assert_array_equal(embedding(jnp.array(i)), table[i])
    np.testing.assert_array_equal(embedding(2), table[2])  # a Python int


def test_random_table_is_standard_normal():
    embedding = ptm.nn.Embedding(64, 32, key=jax.random.key(0))
    weight = np.asarray(embedding.weight)
    assert weight.shape == (64, 32) and weight.dtype == np.float32
    assert abs(weight.mean()) < 0.1 and abs(weight.std() - 1) < 0.1


def test_dtype():
    embedding = ptm.nn.Embedding(4, 3, dtype=jnp.bfloat16, key=jax.random.key(0))
    assert embedding(1).dtype == jnp.bfloat16


def test_gradient_reaches_only_the_looked_up_row():
    embedding = ptm.nn.Embedding(4, 3, key=jax.random.key(0))
    grads = ptm.filter_grad(lambda m, i: jnp.sum(m(i) ** 2))(embedding, jnp.array(1))
    expected = np.zeros((4, 3), np.float32)
    expected[1] = 2 * np.asarray(embedding.weight[1])
    np.testing.assert_allclose(grads.weight, expected, rtol=1e-6)


def test_filter_jit_and_filter_vmap():
    embedding = ptm.nn.Embedding(4, 3, key=jax.random.key(0))
    indices = jnp.array([3, 0, 3])
    out = ptm.filter_jit(ptm.filter_vmap(lambda m, i: m(i), in_axes=(None, 0)))(
        embedding, indices
    )
    np.testing.assert_array_equal(out, np.asarray(embedding.weight)[[3, 0, 3]])


def test_repr_is_readable():
    text = repr(ptm.nn.Embedding(4, 3, key=jax.random.key(0)))
    assert text.startswith("Embedding(") and "weight=f32[4,3]" in text


@pytest.mark.parametrize(
    "x, match",
    [
        (
            jnp.array([1, 2]),
            r"Embedding\(4, 3\): `x` must be a scalar integer index "
            r"of shape \(\); got shape \(2,\).*jax\.vmap",
        ),
        (jnp.array(1.0), r"got shape \(\) and dtype float32"),
    ],
)
def test_bad_index(x, match):
    embedding = ptm.nn.Embedding(4, 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match=match):
        embedding(x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_embeddings=4, embedding_size=3), r"needs either its sizes and a key"),
        (dict(num_embeddings=4), r"Got num_embeddings=4, embedding_size=None"),
        (
            dict(num_embeddings=-1, embedding_size=3, key=jax.random.key(0)),
            r"`num_embeddings` must not be negative; got -1",
        ),
        (dict(weight=jnp.ones(3)), r"`weight` must have shape .*got shape \(3,\)"),
        (
            dict(num_embeddings=5, weight=jnp.ones((4, 3))),
            r"= \(5, 3\); got shape \(4, 3\)",
        ),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ptm.nn.Embedding(**kwargs)
