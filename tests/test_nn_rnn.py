"""`pytreemod.nn.GRUCell` and `pytreemod.nn.LSTMCell`, against the textbook
equations written in NumPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod as ptm


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _numpy_gru(cell, x, h):
    w_ir, w_iz, w_in = np.split(np.asarray(cell.weight_ih, np.float64), 3)
    w_hr, w_hz, w_hn = np.split(np.asarray(cell.weight_hh, np.float64), 3)
    if cell.use_bias:
        b_r, b_z, b_n = np.split(np.asarray(cell.bias, np.float64), 3)
        b_hn = np.asarray(cell.bias_n, np.float64)
    else:
        b_r = b_z = b_n = b_hn = 0.0
    r = _sigmoid(w_ir @ x + b_r + w_hr @ h)
    z = _sigmoid(w_iz @ x + b_z + w_hz @ h)
    n = np.tanh(w_in @ x + b_n + r * (w_hn @ h + b_hn))
    return (1 - z) * n + z * h


def _numpy_lstm(cell, x, h, c):
    w_ih = np.asarray(cell.weight_ih, np.float64)
    w_hh = np.asarray(cell.weight_hh, np.float64)
    b = np.asarray(cell.bias, np.float64) if cell.use_bias else 0.0
    i, f, g, o = np.split(w_ih @ x + w_hh @ h + b, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    return h, c


X = np.array([0.5, -1.0, 2.0], np.float32)
H = np.array([0.1, -0.2, 0.3, 0.7], np.float32)
C = np.array([1.0, -0.5, 0.0, 0.25], np.float32)


@pytest.mark.parametrize("use_bias", [True, False])
def test_gru_matches_textbook(use_bias):
    cell = ptm.nn.GRUCell(3, 4, use_bias=use_bias, key=jax.random.key(0))
    assert cell.weight_ih.shape == (12, 3) and cell.weight_hh.shape == (12, 4)
    if use_bias:
        assert cell.bias.shape == (12,) and cell.bias_n.shape == (4,)
    np.testing.assert_allclose(
        cell(jnp.asarray(X), jnp.asarray(H)), _numpy_gru(cell, X, H), rtol=1e-5
    )


@pytest.mark.parametrize("use_bias", [True, False])
def test_lstm_matches_textbook(use_bias):
    cell = ptm.nn.LSTMCell(3, 4, use_bias=use_bias, key=jax.random.key(0))
    assert cell.weight_ih.shape == (16, 3) and cell.weight_hh.shape == (16, 4)
    h, c = cell(jnp.asarray(X), (jnp.asarray(H), jnp.asarray(C)))
    h_ref, c_ref = _numpy_lstm(cell, X, H, C)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls", [ptm.nn.GRUCell, ptm.nn.LSTMCell])
def test_init_is_uniform_within_one_over_sqrt_hidden_size(cls):
    cell = cls(3, 4, key=jax.random.key(0))
    lim = 1 / math.sqrt(4)
    values = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(cell)])
    assert np.abs(values).max() <= lim
    assert values.max() > 0.9 * lim and values.min() < -0.9 * lim


def test_a_sequence_with_scan_matches_a_python_loop():
    cell = ptm.nn.LSTMCell(3, 4, key=jax.random.key(0))
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    (h, c), _ = jax.lax.scan(
        lambda hc, x: (cell(x, hc), None), (jnp.zeros(4), jnp.zeros(4)), xs
    )
    h_ref, c_ref = np.zeros(4), np.zeros(4)
    for x in np.asarray(xs):
        h_ref, c_ref = _numpy_lstm(cell, x, h_ref, c_ref)
    np.testing.assert_allclose(h, h_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(c, c_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16])
def test_dtype(dtype):
    cell = ptm.nn.GRUCell(3, 4, dtype=dtype, key=jax.random.key(0))
    assert {a.dtype for a in jax.tree_util.tree_leaves(cell)} == {jnp.dtype(dtype)}
    assert cell(jnp.ones(3, dtype), jnp.ones(4, dtype)).dtype == dtype


def test_gradients_finite():
    gru = ptm.nn.GRUCell(3, 4, key=jax.random.key(0))
    lstm = ptm.nn.LSTMCell(3, 4, key=jax.random.key(1))

    def loss(cells, x):
        gru, lstm = cells
        h = gru(x, jnp.ones(4))
        h, c = lstm(x, (h, h))
        return jnp.sum(h**2 + c)

    grads = ptm.filter_grad(loss)((gru, lstm), jnp.asarray(X))
    leaves = jax.tree_util.tree_leaves(grads)
    assert len(leaves) == 7
    assert all(bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g != 0)) for g in leaves)


def test_filter_jit_and_filter_vmap():
    gru = ptm.nn.GRUCell(3, 4, key=jax.random.key(0))
    lstm = ptm.nn.LSTMCell(3, 4, key=jax.random.key(1))
    xs = jnp.stack([jnp.asarray(X), -jnp.asarray(X)])
    hs = jnp.stack([jnp.asarray(H), jnp.asarray(H)])

    @ptm.filter_jit
    def step(cells, xs, hs):
        gru, lstm = cells
        h = ptm.filter_vmap(gru)(xs, hs)
        return ptm.filter_vmap(lambda x, h: lstm(x, (h, h)))(xs, h)

    h, c = step((gru, lstm), xs, hs)
    assert h.shape == c.shape == (2, 4)
    h1 = gru(xs[1], hs[1])
    np.testing.assert_allclose(h[1], lstm(xs[1], (h1, h1))[0], rtol=1e-5)


def test_repr_is_readable():
    text = repr(ptm.nn.GRUCell(3, 4, key=jax.random.key(0)))
    assert text.startswith("GRUCell(") and "weight_ih=f32[12,3]" in text
    assert "bias_n=f32[4]" in text
    assert "weight_hh=f32[16,4]" in repr(ptm.nn.LSTMCell(3, 4, key=jax.random.key(0)))


@pytest.mark.parametrize(
    "cls, input_shape, hidden, match",
    [
        (
            ptm.nn.GRUCell,
            (2,),
            np.zeros(4),
            r"GRUCell\(3, 4\): `input` must have shape \(3,\); got shape \(2,\)",
        ),
        (
            ptm.nn.GRUCell,
            (3,),
            np.zeros(5),
            r"GRUCell\(3, 4\): `hidden` must have shape \(4,\); got shape \(5,\)",
        ),
        (
            ptm.nn.LSTMCell,
            (3,),
            np.zeros(4),
            r"LSTMCell\(3, 4\): `hidden` must be a pair `\(h, c\)`",
        ),
        (
            ptm.nn.LSTMCell,
            (3,),
            (np.zeros(4), np.zeros(3)),
            r"LSTMCell\(3, 4\): `hidden\[1\]` must have shape \(4,\); got shape \(3,\)",
        ),
        (
            ptm.nn.LSTMCell,
            (7, 3),
            (np.zeros(4), np.zeros(4)),
            r"`input` must have shape \(3,\); got shape \(7, 3\)\..*jax\.vmap",
        ),
    ],
)
def test_bad_input_shape(cls, input_shape, hidden, match):
    cell = cls(3, 4, key=jax.random.key(0))
    with pytest.raises(ValueError, match=match):
        cell(jnp.ones(input_shape), hidden)
