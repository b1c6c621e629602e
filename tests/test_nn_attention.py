"""`nn.MultiheadAttention`, against the textbook formula
softmax(Q K^T / sqrt(d)) V."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import rng_array

import pytreemod as eqx

KEY = jax.random.key(0)


def _project(linear, x, heads):
    y = np.asarray(x, np.float64) @ np.asarray(linear.weight, np.float64).T
    if linear.bias is not None:
        y = y + np.asarray(linear.bias)
    return y.reshape(x.shape[0], heads, -1)


def numpy_attention(mha, query, key_, value, mask=None):
    """Project, then per head softmax(Q K^T / sqrt(qk_size)) V with masked-out
    logits at -inf, concatenate the heads and project the result."""
    heads = mha.num_heads
    q = _project(mha.query_proj, query, heads)
    k = _project(mha.key_proj, key_, heads)
    v = _project(mha.value_proj, value, heads)
    outputs = []
    for h in range(heads):
        logits = q[:, h] @ k[:, h].T / np.sqrt(mha.qk_size)
        if mask is not None:
            head_mask = mask[h] if mask.ndim == 3 else mask
            logits = np.where(head_mask, logits, -np.inf)
        weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
        weights = weights / weights.sum(axis=-1, keepdims=True)
        outputs.append(weights @ v[:, h])
    return _project(mha.output_proj, np.concatenate(outputs, axis=-1), 1)[:, 0]


SMALL = {"num_heads": 2, "query_size": 8}
CUSTOM = {
    "num_heads": 3,
    "query_size": 4,
    "key_size": 5,
    "value_size": 6,
    "output_size": 7,
    "qk_size": 2,
    "vo_size": 3,
    "use_query_bias": True,
    "use_key_bias": True,
    "use_value_bias": True,
    "use_output_bias": True,
}


def _inputs(mha, q_len=4, kv_len=5):
    return (
        rng_array((q_len, mha.query_size), 1),
        rng_array((kv_len, mha.key_size), 2),
        rng_array((kv_len, mha.value_size), 3),
    )


def _mask(shape, seed):
    mask = np.random.default_rng(seed).random(shape) < 0.6
    mask[..., 0] = True  # every query attends to something
    return mask


@pytest.mark.parametrize("mask_kind", [None, "2d", "3d", "causal"])
@pytest.mark.parametrize("config", [SMALL, CUSTOM], ids=["small", "custom"])
def test_matches_the_textbook_formula(config, mask_kind):
    mha = eqx.nn.MultiheadAttention(**config, key=KEY)
    query, key_, value = _inputs(mha)
    mask = {
        None: None,
        "2d": _mask((4, 5), 4),
        "3d": _mask((mha.num_heads, 4, 5), 5),
        "causal": np.tril(np.ones((4, 5), bool)),
    }[mask_kind]
    out = jax.jit(mha)(query, key_, value, mask)
    assert out.shape == (4, mha.output_size)
    expected = numpy_attention(mha, query, key_, value, mask)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_a_fully_masked_query_attends_uniformly():
    mha = eqx.nn.MultiheadAttention(1, 4, key=KEY)
    query, key_, value = _inputs(mha, q_len=2, kv_len=3)
    mask = np.array([[True, False, False], [False, False, False]])
    out = mha(query, key_, value, mask)
    v = _project(mha.value_proj, value, 1)[:, 0]
    uniform = _project(mha.output_proj, v.mean(axis=0, keepdims=True), 1)[:, 0]
    np.testing.assert_allclose(out[1], uniform[0], rtol=1e-5, atol=1e-6)
    expected_first = numpy_attention(mha, query[:1], key_, value, mask[:1])
    np.testing.assert_allclose(out[:1], expected_first, rtol=1e-5, atol=1e-6)


def test_constructor_defaults_and_parameter_shapes():
    mha = eqx.nn.MultiheadAttention(4, 8, key=KEY)
    assert (mha.key_size, mha.value_size, mha.output_size) == (8, 8, 8)
    assert (mha.qk_size, mha.vo_size) == (2, 2)
    assert mha.query_proj.weight.shape == (8, 8)
    assert mha.query_proj.bias is None and mha.output_proj.bias is None
    # Built abstractly: only the shapes and dtypes are looked at.
    custom = jax.eval_shape(
        lambda: eqx.nn.MultiheadAttention(**CUSTOM, dtype=jnp.float16, key=KEY)
    )
    assert custom.key_proj.weight.shape == (6, 5)
    assert custom.value_proj.weight.shape == (9, 6)
    assert custom.output_proj.weight.shape == (7, 9)
    assert custom.output_proj.bias.dtype == jnp.float16
    # The projections are `Linear` layers, with their fan-in bound.
    bound = 1 / np.sqrt(8)
    assert float(jnp.max(jnp.abs(mha.key_proj.weight))) <= bound


def test_dropout_acts_on_the_attention_weights():
    mha = eqx.nn.MultiheadAttention(2, 4, dropout_p=0.5, key=KEY)
    query, key_, value = _inputs(mha)
    plain = mha(query, key_, value, inference=True)
    np.testing.assert_allclose(
        plain, numpy_attention(mha, query, key_, value), atol=1e-5
    )
    a = mha(query, key_, value, key=jax.random.key(1))
    b = mha(query, key_, value, key=jax.random.key(1))
    c = mha(query, key_, value, key=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain) and not np.allclose(a, c)
    # Dropping every weight leaves only the output bias.
    drop_all = eqx.nn.MultiheadAttention(
        2, 4, dropout_p=1.0, use_output_bias=True, key=KEY
    )
    out = drop_all(query, key_, value, key=jax.random.key(1))
    np.testing.assert_allclose(out, np.broadcast_to(drop_all.output_proj.bias, (4, 4)))


def test_active_dropout_without_a_key_is_an_error_and_inference_turns_it_off():
    mha = eqx.nn.MultiheadAttention(2, 4, dropout_p=0.5, key=KEY)
    query, key_, value = _inputs(mha)
    with pytest.raises(RuntimeError, match="called without a key"):
        mha(query, key_, value)
    evaluation = eqx.nn.inference_mode(mha)
    assert evaluation.dropout.inference is True
    np.testing.assert_allclose(
        evaluation(query, key_, value), mha(query, key_, value, inference=True)
    )
    built_for_inference = eqx.nn.MultiheadAttention(
        2, 4, dropout_p=0.5, inference=True, key=KEY
    )
    np.testing.assert_array_equal(
        built_for_inference(query, key_, value), evaluation(query, key_, value)
    )


def test_process_heads_sees_the_heads_and_may_change_them():
    mha = eqx.nn.MultiheadAttention(2, 4, key=KEY)
    query, key_, value = _inputs(mha)
    seen = []

    def double_values(q, k, v):
        seen.append((q.shape, k.shape, v.shape))
        return q, k, 2 * v

    out = mha(query, key_, value, process_heads=double_values)
    assert seen == [((4, 2, 2), (5, 2, 2), (5, 2, 2))]
    np.testing.assert_allclose(out, 2 * mha(query, key_, value), rtol=1e-5)

    with pytest.raises(ValueError, match=r"`process_heads` must return .* shapes"):
        mha(query, key_, value, process_heads=lambda q, k, v: (q, k, v[:, :1]))


def test_gradients_are_finite_and_it_works_under_filter_jit_and_filter_vmap():
    mha = eqx.nn.MultiheadAttention(2, 4, dropout_p=0.2, key=KEY)
    batch = rng_array((3, 5, 4))
    keys = jax.random.split(jax.random.key(1), 3)

    @eqx.filter_jit
    @eqx.filter_value_and_grad
    def loss(model, batch, keys):
        out = eqx.filter_vmap(lambda x, k: model(x, x, x, key=k))(batch, keys)
        return jnp.mean(out**2)

    value, grads = loss(mha, batch, keys)
    assert bool(jnp.isfinite(value))
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    assert len(leaves) == 4
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.max(jnp.abs(grads.query_proj.weight))) > 0

    out = eqx.filter_vmap(lambda x: mha(x, x, x, inference=True))(batch)
    np.testing.assert_allclose(
        out[1], mha(batch[1], batch[1], batch[1], inference=True), rtol=1e-5, atol=1e-6
    )


def test_prints_readably():
    text = repr(eqx.nn.MultiheadAttention(2, 4, key=KEY))
    assert text.startswith("MultiheadAttention(")
    assert "query_proj=Linear(" in text and "weight=f32[4,4]" in text
    assert "num_heads=2" in text


@pytest.mark.parametrize(
    "shapes, mask_shape, match",
    [
        (
            ((4, 3), (5, 4), (5, 4)),
            None,
            r"MultiheadAttention\(num_heads=2, query_size=4\): `query` must have shape "
            r"\(query_seq_length, 4\); got shape \(4, 3\)",
        ),
        (
            ((4, 4), (5, 4), (6, 4)),
            None,
            r"`key_` and `value` must have the same sequence length",
        ),
        (((2, 4, 4), (5, 4), (5, 4)), None, r"got shape \(2, 4, 4\).*jax\.vmap"),
        (
            ((4, 4), (5, 4), (5, 4)),
            (5, 4),
            r"`mask` must have shape .* = \(4, 5\) or .* = \(2, 4, 5\); got shape "
            r"\(5, 4\)",
        ),
    ],
)
def test_bad_input_shapes_name_the_layer_and_both_shapes(shapes, mask_shape, match):
    mha = eqx.nn.MultiheadAttention(2, 4, key=KEY)
    args = [jnp.ones(s) for s in shapes]
    mask = None if mask_shape is None else jnp.ones(mask_shape, bool)
    with pytest.raises(ValueError, match=match):
        mha(*args, mask)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": 0, "query_size": 4}, r"`num_heads` must be a positive int"),
        ({"num_heads": 8, "query_size": 4}, r"`qk_size` is 0: with num_heads=8"),
    ],
)
def test_bad_constructor_arguments_are_refused_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eqx.nn.MultiheadAttention(**kwargs, key=KEY)


def test_half_precision_works_under_strict_dtype_promotion():
    # Regression: the float32 softmax once needed implicit promotion, which
    # strict promotion (on in this test suite) refuses.
    mha = eqx.nn.MultiheadAttention(2, 4, dtype=jnp.bfloat16, key=KEY)
    query, key_, value = (jnp.asarray(a, jnp.bfloat16) for a in _inputs(mha))
    out = mha(query, key_, value, np.tril(np.ones((4, 5), bool)))
    assert out.dtype == jnp.bfloat16
    expected = numpy_attention(
        mha,
        *(np.asarray(a, np.float32) for a in (query, key_, value)),
        np.tril(np.ones((4, 5), bool)),
    )
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=5e-2)
