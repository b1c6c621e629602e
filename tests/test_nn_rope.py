"""`nn.RotaryPositionalEmbedding`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pytreemod as eqx


def numpy_rope(x, theta=10_000.0):
    """Rotate channel pairs (j, j + d/2) of position m by m * theta^(-2j/d)."""
    x = np.asarray(x, np.float64)
    seq_length, d = x.shape
    half = d // 2
    out = np.empty_like(x)
    for m in range(seq_length):
        for j in range(half):
            angle = m * theta ** (-2 * j / d)
            c, s = np.cos(angle), np.sin(angle)
            out[m, j] = x[m, j] * c - x[m, j + half] * s
            out[m, j + half] = x[m, j + half] * c + x[m, j] * s
    return out


@pytest.mark.parametrize("size, theta", [(2, 10_000.0), (6, 10_000.0), (8, 50.0)])
def test_matches_the_rotation_formula(size, theta):
    rope = eqx.nn.RotaryPositionalEmbedding(size, theta=theta)
    x = np.random.default_rng(0).normal(size=(5, size)).astype(np.float32)
    np.testing.assert_allclose(rope(x), numpy_rope(x, theta), rtol=1e-5, atol=1e-5)


def test_position_zero_is_unchanged_and_the_shape_and_dtype_are_kept():
    rope = eqx.nn.RotaryPositionalEmbedding(4)
    x = jnp.arange(12.0).reshape(3, 4)
    out = rope(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(out[0], x[0])
    assert not np.allclose(out[1], x[1])


VECTORS = hnp.arrays(
    np.float32, (6, 4), elements=st.floats(-10, 10, width=32, allow_subnormal=False)
)


@settings(max_examples=30, deadline=None)
@given(x=VECTORS)
def test_rotation_keeps_the_norm_of_every_position(x):
    out = eqx.nn.RotaryPositionalEmbedding(4)(x)
    np.testing.assert_allclose(
        np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-4, atol=1e-4
    )


@settings(max_examples=25, deadline=None)
@given(q=VECTORS, k=VECTORS)
def test_dot_products_depend_only_on_the_relative_position(q, k):
    rope = eqx.nn.RotaryPositionalEmbedding(4)
    # The same query vector at every position, and the same key vector.
    rq = np.asarray(rope(np.broadcast_to(q[0], (6, 4))), np.float64)
    rk = np.asarray(rope(np.broadcast_to(k[0], (6, 4))), np.float64)
    scores = rq @ rk.T
    scale = 1 + np.linalg.norm(q[0]) * np.linalg.norm(k[0])
    for offset in range(-2, 3):
        diagonal = np.diagonal(scores, offset)
        np.testing.assert_allclose(diagonal, diagonal[0], atol=1e-4 * scale)


def test_a_different_input_dtype_promotes_as_equinox():
    # As Equinox: ordinary promotion, so strict promotion refuses a mix and
    # standard promotion gives the promoted dtype.
    rope = eqx.nn.RotaryPositionalEmbedding(4, dtype=jnp.float32)
    x = jnp.ones((3, 4), jnp.bfloat16)
    with pytest.raises(jax.dtypes.TypePromotionError, match="bfloat16"):
        rope(x)
    with jax.numpy_dtype_promotion("standard"):
        out = rope(x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(out, np.float32), numpy_rope(np.ones((3, 4))), atol=1e-2
    )
    assert eqx.nn.RotaryPositionalEmbedding(4, dtype=jnp.float16).dtype == jnp.float16


def test_precompute_freqs_cis_gives_cos_and_sin_of_the_angles():
    cos, sin = eqx.nn.RotaryPositionalEmbedding.precompute_freqs_cis(
        8, 5, 10_000.0, jnp.float16
    )
    assert cos.shape == sin.shape == (5, 4) and cos.dtype == jnp.float16
    angles = np.outer(np.arange(5), 10_000.0 ** (-np.arange(0, 8, 2) / 8))
    np.testing.assert_allclose(np.asarray(cos, np.float32), np.cos(angles), atol=1e-3)
    np.testing.assert_allclose(np.asarray(sin, np.float32), np.sin(angles), atol=1e-3)


def test_under_filter_jit_and_vmap_over_heads_with_finite_gradients():
    rope = eqx.nn.RotaryPositionalEmbedding(4)
    heads = np.random.default_rng(1).normal(size=(5, 3, 4)).astype(np.float32)

    @eqx.filter_jit
    def apply(rope, heads):
        return eqx.filter_vmap(rope, in_axes=1, out_axes=1)(heads)

    out = apply(rope, heads)
    assert out.shape == (5, 3, 4)
    np.testing.assert_allclose(out[:, 2], numpy_rope(heads[:, 2]), atol=1e-5)
    grad = jax.grad(lambda x: jnp.sum(rope(x) ** 2))(jnp.asarray(heads[:, 0]))
    # A rotation preserves the squared norm, whose gradient is 2 x.
    np.testing.assert_allclose(grad, 2 * heads[:, 0], rtol=1e-5, atol=1e-5)


def test_holds_no_arrays_and_prints_readably():
    rope = eqx.nn.RotaryPositionalEmbedding(8, theta=500.0)
    assert jax.tree_util.tree_leaves(rope) == []
    text = repr(rope)
    assert text.startswith("RotaryPositionalEmbedding(")
    assert "embedding_size=8" in text and "theta=500.0" in text


@pytest.mark.parametrize("size", [3, -2, 2.0])
def test_embedding_size_must_be_even_and_non_negative(size):
    with pytest.raises(ValueError, match=r"`embedding_size` must be an even"):
        eqx.nn.RotaryPositionalEmbedding(size)


@pytest.mark.parametrize(
    "shape, match",
    [
        (
            (5, 6),
            r"RotaryPositionalEmbedding\(embedding_size=4\): `x` must have "
            r"shape \(seq_length, 4\); got shape \(5, 6\)",
        ),
        ((5, 2, 4), r"got shape \(5, 2, 4\).*in_axes=1, out_axes=1"),
    ],
)
def test_bad_input_shapes_name_the_layer_and_both_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        eqx.nn.RotaryPositionalEmbedding(4)(jnp.ones(shape))


def test_default_dtype_is_the_jnp_scalar_type():
    # Equinox keeps `jnp.float32` itself (not `np.dtype("float32")`) in the
    # static `dtype` field; a treedef or repr comparison sees the difference.
    rope = eqx.nn.RotaryPositionalEmbedding(4)
    assert rope.dtype is jnp.float32
