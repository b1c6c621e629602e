"""`nn.ConvTranspose` and `nn.ConvTranspose1d`/`2d`/`3d`."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import random_layer, rng_array
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import pytreemod as eqx

KEY = jax.random.key(0)


def _output_padding_for(size, k, s, d, padding):
    """The `output_padding` that makes the transposed convolution return `size`,
    from the forward convolution's shape arithmetic."""
    if padding in ("SAME", "SAME_LOWER"):
        return math.ceil(size / s) * s - size
    lo, hi = (0, 0) if padding == "VALID" else padding
    return (size + lo + hi - (d * (k - 1) + 1)) % s


def _transpose_weight(weight, groups):
    """The weight of the transposed convolution that is the exact adjoint of a
    convolution with `weight`: swap in/out channels within each group and flip
    the kernel."""
    out_channels, group_in = weight.shape[:2]
    kernel = weight.shape[2:]
    w = weight.reshape(groups, out_channels // groups, group_in, *kernel)
    w = jnp.swapaxes(w, 1, 2).reshape(
        groups * group_in, out_channels // groups, *kernel
    )
    return jnp.flip(w, axis=tuple(range(2, w.ndim)))


@jax.jit
def _adjoint_pair(conv, transpose, x, y):
    _, pullback = jax.vjp(conv, x)
    return pullback(y)[0], transpose(y)


def _check_adjoint(n, size, channels, kernel, stride, padding, dilation, groups, mode):
    cin, cout = channels
    conv = random_layer(
        lambda: eqx.nn.Conv(
            n, cin, cout, kernel, stride, padding, dilation, groups,
            use_bias=False, padding_mode=mode, key=KEY,
        )
    )  # fmt: skip
    pads = conv.padding
    output_padding = [
        _output_padding_for(size, k, s, d, pads if isinstance(pads, str) else pads[i])
        for i, (k, s, d) in enumerate(
            zip(conv.kernel_size, conv.stride, conv.dilation, strict=True)
        )
    ]
    transpose = jax.eval_shape(
        lambda: eqx.nn.ConvTranspose(
            n, cout, cin, kernel, stride, padding, output_padding, dilation, groups,
            use_bias=False, padding_mode=mode, key=KEY,
        )
    )  # fmt: skip
    transpose = eqx.tree_at(
        lambda t: t.weight, transpose, _transpose_weight(conv.weight, groups)
    )
    x = rng_array((cin,) + (size,) * n)
    y = rng_array(jax.eval_shape(conv, x).shape, seed=1)
    expected, out = _adjoint_pair(conv, transpose, x, y)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


# Each example compiles one small program; 15 keep the file fast.
@settings(max_examples=15, deadline=None)
@given(
    size=st.integers(3, 8),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    padding=st.one_of(
        st.sampled_from(["SAME", "SAME_LOWER", "VALID"]),
        st.tuples(st.integers(0, 2), st.integers(0, 2)).map(lambda p: [p]),
    ),
    mode=st.sampled_from(["ZEROS", "REFLECT", "REPLICATE", "CIRCULAR"]),
    groups=st.sampled_from([1, 2]),
)
def test_is_the_adjoint_of_conv_1d(
    size, kernel, stride, dilation, padding, mode, groups
):
    if mode == "REFLECT" and not isinstance(padding, str):
        # Reflecting needs the input longer than the padding.
        padding = [(min(padding[0][0], size - 1), min(padding[0][1], size - 1))]
    extent = dilation * (kernel - 1) + 1
    if padding == "VALID" or not isinstance(padding, str):
        lo, hi = (0, 0) if padding == "VALID" else padding[0]
        assume(size + lo + hi >= extent)
    _check_adjoint(1, size, (2, 4), kernel, stride, padding, dilation, groups, mode)


@pytest.mark.parametrize(
    "n, size, kernel, stride, padding, dilation, groups, mode",
    [
        (2, 5, (3, 2), (2, 1), "SAME", (1, 2), 1, "ZEROS"),
        (2, 6, 3, 2, [(1, 0), (2, 1)], 1, 2, "CIRCULAR"),
        (2, 5, 2, (1, 2), "SAME_LOWER", 1, 2, "REFLECT"),
        (2, 4, 2, 2, 1, 1, 1, "REPLICATE"),
    ],
)
def test_is_the_adjoint_of_conv_2d(
    n, size, kernel, stride, padding, dilation, groups, mode
):
    _check_adjoint(n, size, (2, 4), kernel, stride, padding, dilation, groups, mode)


def numpy_conv_transpose(x, weight, stride, pads, dilation, out_size, groups):
    """Zero-padding transposed convolution in 1d as a scatter: input position
    `j` adds `weight[..., q] * x[j]` to output position
    `j * stride + (k - 1 - q) * dilation - before`."""
    out_channels, group_in, k = weight.shape
    group_out = out_channels // groups
    out = np.zeros((out_channels, out_size))
    for o in range(out_channels):
        group = o // group_out
        for c in range(group_in):
            for j in range(x.shape[1]):
                for q in range(k):
                    p = j * stride + (k - 1 - q) * dilation - pads[0]
                    if 0 <= p < out_size:
                        out[o, p] += weight[o, c, q] * x[group * group_in + c, j]
    return out


@pytest.mark.parametrize(
    "stride, padding, output_padding, dilation, groups, expected_size",
    [
        # (n - 1) * s + d * (k - 1) + 1 - lo - hi + a, with n = 5 and k = 3
        (1, (0, 0), 0, 1, 1, 7),
        (2, (1, 1), 1, 1, 2, 10),
        (3, (2, 0), 2, 2, 1, 17),
        (2, (0, 3), 0, 1, 2, 8),
    ],
)
def test_matches_a_numpy_scatter_loop(
    stride, padding, output_padding, dilation, groups, expected_size
):
    layer = random_layer(
        lambda: eqx.nn.ConvTranspose1d(
            4, 2, 3, stride, output_padding, [padding], dilation, groups, key=KEY
        )
    )
    x = rng_array((4, 5))
    out = jax.jit(layer)(x)
    assert out.shape == (2, expected_size)
    expected = numpy_conv_transpose(
        x, np.asarray(layer.weight), stride, padding, dilation, expected_size, groups
    )
    expected = expected + np.asarray(layer.bias)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def _output_shape(make_layer, input_shape):
    """The output shape of the layer `make_layer()` builds, with nothing
    computed or compiled: the layer and its input stay abstract."""

    def apply():
        return make_layer()(jnp.zeros(input_shape))

    return jax.eval_shape(apply).shape


@pytest.mark.parametrize(
    "padding, output_padding, expected",
    [("SAME", 0, 12), ("SAME", 2, 10), ("SAME_LOWER", 1, 11), ("VALID", 2, 15)],
)
def test_same_padding_gives_size_times_stride_minus_output_padding(
    padding, output_padding, expected
):
    def make_layer():
        return eqx.nn.ConvTranspose1d(
            1, 1, 4, stride=3, output_padding=output_padding, padding=padding, key=KEY
        )

    assert _output_shape(make_layer, (1, 4)) == (1, expected)


@pytest.mark.parametrize(
    "cls, n",
    [
        (eqx.nn.ConvTranspose1d, 1),
        (eqx.nn.ConvTranspose2d, 2),
        (eqx.nn.ConvTranspose3d, 3),
    ],
)
def test_dimension_specific_classes_take_output_padding_before_padding(cls, n):
    layer = jax.eval_shape(lambda: cls(2, 3, 3, 2, 1, 1, key=KEY))
    assert isinstance(layer, eqx.nn.ConvTranspose)
    assert layer.num_spatial_dims == n
    assert layer.output_padding == (1,) * n
    assert layer.padding == ((1, 1),) * n
    # (4 - 1) * 2 + 3 - 2 + 1 = 8
    shape = _output_shape(lambda: cls(2, 3, 3, 2, 1, 1, key=KEY), (2,) + (4,) * n)
    assert shape == (3,) + (8,) * n


def test_default_initialisation_uses_the_fan_in_of_its_input_channels():
    layer = eqx.nn.ConvTranspose2d(6, 4, (2, 3), groups=2, key=KEY)
    lim = 1 / math.sqrt(6 // 2 * 6)
    assert layer.weight.shape == (4, 3, 2, 3)
    assert layer.bias.shape == (4, 1, 1)
    assert float(jnp.max(jnp.abs(layer.weight))) <= lim
    assert float(jnp.max(jnp.abs(layer.weight))) > 0.7 * lim
    assert float(jnp.max(jnp.abs(layer.bias))) <= lim


def test_dtype_and_use_bias():
    layer = eqx.nn.ConvTranspose1d(2, 3, 3, use_bias=False, dtype=jnp.float16, key=KEY)
    assert layer.bias is None and layer.weight.dtype == jnp.float16
    assert layer(jnp.ones((2, 4), jnp.float16)).dtype == jnp.float16


def test_gradients_are_finite_and_it_works_under_filter_jit_and_filter_vmap():
    layer = random_layer(
        lambda: eqx.nn.ConvTranspose2d(
            2, 3, 3, stride=2, padding="SAME", padding_mode="CIRCULAR", key=KEY
        )
    )
    batch = rng_array((3, 2, 4, 4))

    @eqx.filter_jit
    @eqx.filter_value_and_grad
    def loss(model, batch):
        return jnp.mean(eqx.filter_vmap(model)(batch) ** 2)

    value, grads = loss(layer, batch)
    assert bool(jnp.isfinite(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert float(jnp.max(jnp.abs(grads.weight))) > 0
    out = eqx.filter_vmap(layer)(batch)
    assert out.shape == (3, 3, 8, 8)
    np.testing.assert_allclose(out[1], layer(batch[1]), rtol=1e-5, atol=1e-5)


def test_prints_readably():
    text = repr(
        random_layer(
            lambda: eqx.nn.ConvTranspose1d(2, 3, 3, stride=2, output_padding=1, key=KEY)
        )
    )
    assert text.startswith("ConvTranspose1d(")
    assert "weight=f32[3,2,3]" in text and "output_padding=(1,)" in text


@pytest.mark.parametrize(
    "shape, match",
    [
        (
            (3, 4),
            r"ConvTranspose1d\(2, 3, kernel_size=\(3,\)\): `x` must have "
            r"shape \(2, dim_1\).*got shape \(3, 4\)",
        ),
        ((5, 2, 4), r"got shape \(5, 2, 4\).*leading batch axis"),
    ],
)
def test_bad_input_shapes_name_the_layer_and_both_shapes(shape, match):
    layer = random_layer(lambda: eqx.nn.ConvTranspose1d(2, 3, 3, key=KEY))
    with pytest.raises(ValueError, match=match):
        layer(jnp.ones(shape))


def test_an_empty_output_is_refused():
    layer = random_layer(lambda: eqx.nn.ConvTranspose1d(1, 1, 1, padding=2, key=KEY))
    with pytest.raises(ValueError, match=r"has size 2, which gives an output of size"):
        layer(jnp.ones((1, 2)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stride": 2, "output_padding": 2}, r"`output_padding` must be smaller"),
        ({"output_padding": -1}, r"`output_padding` must hold non-negative ints"),
        ({"groups": 4}, r"must be divisible by `groups`"),
        ({"padding_mode": "edge"}, r"`padding_mode` must be one of"),
    ],
)
def test_bad_constructor_arguments_are_refused_early(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eqx.nn.ConvTranspose1d(2, 6, 3, **kwargs, key=KEY)
