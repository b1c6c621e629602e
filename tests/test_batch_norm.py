import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod
from pytreemod.nn import BatchNorm, make_with_state

EPS = 1e-5
MOMENTUM = 0.9


def _batched(bn, inference=None):
    """`bn` mapped over a batch whose axis is named "batch"."""
    return jax.vmap(
        lambda x, state: bn(x, state, inference=inference),
        axis_name="batch",
        in_axes=(0, None),
        out_axes=(0, None),
    )


def _reference_stats(xs):
    axes = (0,) + tuple(range(2, xs.ndim))
    mean = xs.mean(axis=axes)
    var = ((xs - _channels(mean, xs.ndim)) ** 2).mean(axis=axes)
    return mean, var


def _channels(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _reference_normalise(xs, mean, var, weight, bias):
    y = (xs - _channels(mean, xs.ndim)) / np.sqrt(_channels(var, xs.ndim) + EPS)
    return y * _channels(weight, xs.ndim) + _channels(bias, xs.ndim)


def _reference(batches, test_batch, mode, weight, bias):
    """NumPy BatchNorm: outputs of training on `batches` in order, then the
    inference output on `test_batch`."""
    m = MOMENTUM
    outputs = []
    running = None
    average = (np.zeros(weight.shape), np.zeros(weight.shape))
    for xs in batches:
        batch_mean, batch_var = _reference_stats(xs)
        if mode == "ema":
            if running is None:
                running = (batch_mean, batch_var)
            else:
                running = (
                    m * running[0] + (1 - m) * batch_mean,
                    m * running[1] + (1 - m) * batch_var,
                )
            mean, var = running
        else:
            average = (
                m * average[0] + (1 - m) * batch_mean,
                m * average[1] + (1 - m) * batch_var,
            )
            mean, var = batch_mean, batch_var
        outputs.append(_reference_normalise(xs, mean, var, weight, bias))
    if mode == "ema":
        mean, var = running
    else:
        correction = 1 - m ** len(batches)
        mean, var = average[0] / correction, average[1] / correction
    return outputs, _reference_normalise(test_batch, mean, var, weight, bias)


@pytest.mark.parametrize("mode", ["ema", "batch"])
@pytest.mark.parametrize("shape", [(4, 3), (5, 2, 3)], ids=["vector", "spatial"])
def test_against_numpy(mode, shape):
    channels = shape[1]
    rng = np.random.default_rng(0)
    bn, state = make_with_state(BatchNorm)(
        channels, "batch", eps=EPS, momentum=MOMENTUM, mode=mode
    )
    weight = rng.normal(size=channels).astype(np.float32)
    bias = rng.normal(size=channels).astype(np.float32)
    bn = pytreemod.tree_at(
        lambda b: (b.weight, b.bias), bn, (jnp.asarray(weight), jnp.asarray(bias))
    )
    batches = [
        (rng.normal(size=shape) * (i + 1) + i).astype(np.float32) for i in range(3)
    ]
    test_batch = rng.normal(size=shape).astype(np.float32)
    expected, expected_inference = _reference(
        [b.astype(np.float64) for b in batches],
        test_batch.astype(np.float64),
        mode,
        weight.astype(np.float64),
        bias.astype(np.float64),
    )
    train = jax.jit(_batched(bn))
    for xs, want in zip(batches, expected, strict=True):
        ys, state = train(jnp.asarray(xs), state)
        np.testing.assert_allclose(ys, want, rtol=1e-4, atol=1e-4)
    ys, after = _batched(bn, inference=True)(jnp.asarray(test_batch), state)
    np.testing.assert_allclose(ys, expected_inference, rtol=1e-4, atol=1e-4)
    assert pytreemod.tree_equal(after, state)


def test_no_affine():
    bn, state = make_with_state(BatchNorm)(
        2, "batch", channelwise_affine=False, mode="ema"
    )
    assert bn.weight is None and bn.bias is None
    xs = jnp.array([[1.0, 2.0], [3.0, 6.0]])
    ys, _ = _batched(bn)(xs, state)
    np.testing.assert_allclose(ys, [[-1.0, -1.0], [1.0, 1.0]], atol=1e-4)


def test_batch_mode_inference_before_training_is_identity_like():
    bn, state = make_with_state(BatchNorm)(2, "batch", mode="batch", inference=True)
    x = jnp.array([3.0, -1.0])
    y, _ = bn(x, state)  # inference needs no vmap
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_inference_mode_flag_leaves_state_unchanged():
    bn, state = make_with_state(BatchNorm)(2, "batch", mode="ema")
    xs = jnp.array([[1.0, 2.0], [3.0, 6.0]])
    _, state = _batched(bn)(xs, state)
    before = [leaf.tolist() for leaf in jax.tree_util.tree_leaves(state)]
    evaluation = pytreemod.nn.inference_mode(bn)
    _, state = _batched(evaluation)(xs * 10, state)
    assert [leaf.tolist() for leaf in jax.tree_util.tree_leaves(state)] == before


def test_with_filter_vmap_and_several_axis_names():
    xs = jax.random.normal(jax.random.key(0), (2, 3, 4))  # (a, b, channels)
    bn2, state2 = make_with_state(BatchNorm)(4, ("a", "b"), mode="batch")
    inner = pytreemod.filter_vmap(
        bn2, in_axes=(0, None), out_axes=(0, None), axis_name="b"
    )
    ys, state2 = pytreemod.filter_vmap(
        inner, in_axes=(0, None), out_axes=(0, None), axis_name="a"
    )(xs, state2)
    bn1, state1 = make_with_state(BatchNorm)(4, "batch", mode="batch")
    flat, state1 = _batched(bn1)(xs.reshape(6, 4), state1)
    np.testing.assert_allclose(ys.reshape(6, 4), flat, rtol=1e-5, atol=1e-6)


def test_gradients_are_finite():
    bn, state = make_with_state(BatchNorm)(3, "batch", mode="ema")
    xs = jax.random.normal(jax.random.key(1), (4, 3))

    @pytreemod.filter_value_and_grad(has_aux=True)
    def loss(bn, state, xs):
        ys, state = _batched(bn)(xs, state)
        return jnp.sum(ys[:, 0] * jnp.arange(4.0)), state

    (value, state), grads = loss(bn, state, xs)
    assert np.isfinite(value)
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
    assert np.abs(grads.weight).sum() > 0


def test_stats_keep_the_layer_dtype():
    bn, state = make_with_state(BatchNorm)(2, "batch", dtype=jnp.bfloat16, mode="ema")
    assert bn.weight.dtype == jnp.bfloat16
    xs = jnp.ones((3, 2), jnp.bfloat16)
    ys, state = _batched(bn)(xs, state)
    assert ys.dtype == jnp.bfloat16
    mean, var = state.get(bn.ema_state_index)
    assert mean.dtype == var.dtype == jnp.bfloat16


@pytest.mark.parametrize("vmap_name", [None, "other"])
def test_without_a_matching_vmap_axis_is_a_clear_error(vmap_name):
    bn, state = make_with_state(BatchNorm)(2, "batch", mode="ema")
    with pytest.raises(NameError, match=r"axis_name='batch'"):
        if vmap_name is None:
            bn(jnp.ones(2), state)
        else:
            jax.vmap(bn, axis_name=vmap_name, in_axes=(0, None), out_axes=(0, None))(
                jnp.ones((3, 2)), state
            )


def test_wrong_input_shape():
    bn, state = make_with_state(BatchNorm)(3, "batch", mode="ema")
    with pytest.raises(ValueError, match=r"BatchNorm\(3\): `x` must have shape"):
        _batched(bn)(jnp.ones((2, 4)), state)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "fast"}, r"^Invalid mode, must be 'ema' or 'batch'\. "),
        ({"momentum": 1.0}, r"`momentum` must be in \[0, 1\)"),
        ({"input_size": 0}, "`input_size` must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"input_size": 2, "axis_name": "batch", "mode": "ema", **kwargs}
    with pytest.raises(ValueError, match=match):
        BatchNorm(**arguments)


def test_mode_left_out_is_ema_with_equinox_warning():
    # Equinox 0.13.8 defaults to mode="legacy": "ema", plus a UserWarning that
    # code filters on by its first sentence.
    first = (
        r"^When `eqx\.nn\.BatchNorm\(\.\.\., mode=\.\.\.\)` is unspecified it "
        r"defaults to 'ema', for backward compatibility\. "
    )
    with pytest.warns(UserWarning, match=first) as record:
        implicit, implicit_state = make_with_state(BatchNorm)(2, "batch")
    # It points at the line that built the layer, not into pytreemod.
    assert [w.filename for w in record] == [__file__]
    with pytest.warns(UserWarning, match=first):
        legacy = BatchNorm(2, "batch", mode="legacy")
    explicit, explicit_state = make_with_state(BatchNorm)(2, "batch", mode="ema")
    assert implicit.mode == legacy.mode == "ema"
    assert implicit.ema_state_index is not None and implicit.batch_counter is None
    xs = jnp.array([[1.0, 2.0], [3.0, 7.0]])
    ys, implicit_state = _batched(implicit)(xs, implicit_state)
    want, explicit_state = _batched(explicit)(xs, explicit_state)
    np.testing.assert_array_equal(ys, want)
    assert pytreemod.tree_equal(implicit_state, explicit_state)


@pytest.mark.parametrize("mode", ["ema", "batch"])
def test_explicit_mode_does_not_warn(mode):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BatchNorm(2, "batch", mode=mode).mode == mode


def test_equinox_signature_and_state_layout():
    bn = BatchNorm(3, "batch", 1e-3, False, 0.5, True, jnp.float32, "batch")
    assert (bn.eps, bn.channelwise_affine, bn.momentum, bn.inference, bn.mode) == (
        1e-3,
        False,
        0.5,
        True,
        "batch",
    )
    assert bn.ema_state_index is None and bn.batch_counter is not None


def test_batch_mode_counter_is_weakly_typed_and_stays_so():
    # As in Equinox: the step counter starts as `jnp.array(0)` (weakly typed
    # int), so States of the two line up leaf for leaf, type for type.
    bn, state = make_with_state(BatchNorm)(2, "batch", mode="batch")
    counter = state.get(bn.batch_counter)
    assert counter.dtype == jnp.int32 and jax.typeof(counter).weak_type
    x = jnp.arange(6.0).reshape(3, 2)
    _, state = jax.vmap(bn, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(
        x, state
    )
    counter = state.get(bn.batch_counter)
    assert counter.item() == 1 and jax.typeof(counter).weak_type
