"""`nn.Conv` and `nn.Conv1d`/`Conv2d`/`Conv3d`."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import random_layer

import pytreemod as eqx

KEY = jax.random.key(0)


NUMPY_MODE = {
    "ZEROS": "constant",
    "REFLECT": "reflect",
    "REPLICATE": "edge",
    "CIRCULAR": "wrap",
}


def _same_pads(size, k, s, d, lower):
    """The 'SAME' padding of one dimension, written out from its definition:
    pad just enough for `ceil(size / s)` windows, the odd element at the end
    (or at the start for 'SAME_LOWER')."""
    extent = d * (k - 1) + 1
    total = max((math.ceil(size / s) - 1) * s + extent - size, 0)
    lo = (total + 1) // 2 if lower else total // 2
    return lo, total - lo


def numpy_conv(x, weight, bias, stride, padding, dilation, groups, mode):
    """A direct loop over output positions, kernel positions and channels."""
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    spatial = x.shape[1:]
    kernel = weight.shape[2:]
    if padding == "VALID":
        pads = [(0, 0)] * len(spatial)
    elif padding in ("SAME", "SAME_LOWER"):
        pads = [
            _same_pads(n, k, s, d, padding == "SAME_LOWER")
            for n, k, s, d in zip(spatial, kernel, stride, dilation, strict=True)
        ]
    else:
        pads = list(padding)
    x = np.pad(x, [(0, 0)] + pads, mode=NUMPY_MODE[mode])
    out_channels, group_in = weight.shape[:2]
    group_out = out_channels // groups
    out_spatial = [
        (n - (d * (k - 1) + 1)) // s + 1
        for n, k, s, d in zip(x.shape[1:], kernel, stride, dilation, strict=True)
    ]
    out = np.zeros((out_channels, *out_spatial))
    for o in range(out_channels):
        group = o // group_out
        inputs = x[group * group_in : (group + 1) * group_in]
        for pos in np.ndindex(*out_spatial):
            for kpos in np.ndindex(*kernel):
                index = tuple(
                    p * s + q * d
                    for p, q, s, d in zip(pos, kpos, stride, dilation, strict=True)
                )
                out[(o, *pos)] += (
                    weight[(o, slice(None), *kpos)] @ inputs[(slice(None), *index)]
                )
    if bias is not None:
        out = out + np.asarray(bias)
    return out


# Small cases covering every padding form and every padding mode, with stride,
# dilation and groups, in one and two dimensions.
CASES = [
    # (num_spatial_dims, in, out, kernel, stride, padding, dilation, groups, mode)
    (1, 2, 4, 3, 1, 0, 1, 1, "ZEROS"),
    (1, 4, 6, 3, 2, 1, 1, 2, "ZEROS"),
    (1, 4, 6, 3, 2, 1, 1, 2, "REFLECT"),
    (1, 2, 2, 2, 1, [(2, 1)], 2, 1, "REPLICATE"),
    (1, 2, 2, 2, 1, [(2, 1)], 2, 1, "CIRCULAR"),
    (1, 3, 3, 3, 3, "SAME", 1, 3, "ZEROS"),
    (1, 3, 3, 3, 3, "SAME", 1, 3, "REFLECT"),
    (1, 2, 4, 4, 2, "SAME_LOWER", 1, 1, "ZEROS"),
    (1, 2, 4, 4, 2, "SAME_LOWER", 1, 1, "CIRCULAR"),
    (1, 2, 4, 3, 2, "VALID", 2, 2, "REPLICATE"),
    (2, 2, 4, (3, 2), (2, 1), [1, 0], (1, 2), 2, "ZEROS"),
    (2, 2, 4, (3, 2), (2, 1), [1, 0], (1, 2), 2, "CIRCULAR"),
    (2, 3, 3, 3, 1, "SAME", 1, 1, "REPLICATE"),
    (2, 2, 2, (2, 3), 2, "SAME_LOWER", 1, 2, "REFLECT"),
    (2, 1, 2, 2, 1, [(1, 0), (0, 2)], 1, 1, "ZEROS"),
]


def _input(conv, size=7):
    shape = (conv.in_channels,) + (size,) * conv.num_spatial_dims
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("case", CASES)
def test_conv_matches_a_numpy_loop(case):
    *args, mode = case
    conv = random_layer(lambda: eqx.nn.Conv(*args, padding_mode=mode, key=KEY))
    x = _input(conv)
    expected = numpy_conv(
        x,
        conv.weight,
        conv.bias,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        mode,
    )
    out = jax.jit(conv)(x)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_conv_eagerly_equals_conv_under_jit():
    conv = random_layer(
        lambda: eqx.nn.Conv1d(2, 3, 3, padding="SAME", padding_mode="CIRCULAR", key=KEY)
    )
    x = _input(conv)
    np.testing.assert_allclose(conv(x), jax.jit(conv)(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "n, padding, mode",
    [(1, "SAME", "ZEROS"), (2, 1, "CIRCULAR"), (3, [(1, 0), (0, 1), (2, 2)], "ZEROS")],
)
def test_conv_matches_lax_conv_general_dilated(n, padding, mode):
    conv = random_layer(
        lambda: eqx.nn.Conv(
            n, 4, 6, 3, 2, padding, 1, 2, padding_mode=mode, key=KEY, use_bias=False
        )
    )
    x = _input(conv, size=5)
    if mode == "CIRCULAR":
        if padding == "SAME":
            pads = [_same_pads(5, 3, 2, 1, False)]
        elif padding == "VALID":
            pads = [(0, 0)] * n
        else:
            pads = padding if isinstance(padding, list) else [(padding, padding)] * n
        x_padded = np.pad(np.asarray(x), [(0, 0)] + list(pads), mode="wrap")
        lax_padding = "VALID"
    else:
        x_padded, lax_padding = x, padding
        if isinstance(padding, int):
            lax_padding = [(padding, padding)] * n
    dims = "NC" + "DHW"[3 - n :]
    expected = jax.lax.conv_general_dilated(
        jnp.asarray(x_padded)[None],
        conv.weight,
        window_strides=(2,) * n,
        padding=lax_padding,
        feature_group_count=2,
        dimension_numbers=(dims, "OI" + "DHW"[3 - n :], dims),
    )[0]
    np.testing.assert_allclose(jax.jit(conv)(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "cls, n, kwargs",
    [
        (eqx.nn.Conv1d, 1, {}),
        (eqx.nn.Conv2d, 2, {"padding": "same", "stride": (1, 2)}),
        (eqx.nn.Conv3d, 3, {"padding": 1, "padding_mode": "replicate"}),
    ],
)
def test_dimension_specific_classes_equal_conv(cls, n, kwargs):
    conv = random_layer(lambda: cls(2, 3, 3, key=KEY, **kwargs))
    generic = random_layer(lambda: eqx.nn.Conv(n, 2, 3, 3, key=KEY, **kwargs))
    assert conv.num_spatial_dims == n
    x = _input(conv, size=4)
    np.testing.assert_array_equal(jax.jit(conv)(x), jax.jit(generic)(x))
    assert isinstance(conv, eqx.nn.Conv)


def test_conv2d_output_shape_with_stride_padding_dilation():
    def apply():
        conv = eqx.nn.Conv2d(
            3, 5, (3, 5), stride=(2, 3), padding=(1, 2), dilation=2, key=KEY
        )
        return conv(jnp.zeros((3, 9, 10)))

    # Nothing is computed: height (9 + 2 - 5) // 2 + 1 = 4, width
    # (10 + 4 - 9) // 3 + 1 = 2.
    assert jax.eval_shape(apply).shape == (5, 4, 2)


def test_default_initialisation_is_uniform_in_the_fan_in_bound():
    groups = 3
    conv = eqx.nn.Conv2d(6, 12, (3, 4), groups=groups, key=KEY)
    lim = 1 / math.sqrt(6 // groups * 12)
    assert conv.weight.shape == (12, 6 // groups, 3, 4)
    assert conv.bias.shape == (12, 1, 1)
    for param in (conv.weight, conv.bias):
        assert param.dtype == jnp.float32
        assert float(jnp.max(jnp.abs(param))) <= lim
    # The draws fill the interval rather than sit at zero.
    assert float(jnp.max(jnp.abs(conv.weight))) > 0.8 * lim


def test_keys_give_different_weights_and_use_bias_false_drops_the_bias():
    a = eqx.nn.Conv1d(2, 2, 3, key=jax.random.key(1))
    b = eqx.nn.Conv1d(2, 2, 3, key=jax.random.key(2))
    assert not np.allclose(a.weight, b.weight)
    no_bias = eqx.nn.Conv1d(2, 2, 3, use_bias=False, key=KEY)
    assert no_bias.bias is None
    assert len(jax.tree_util.tree_leaves(no_bias)) == 1


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_dtype_sets_the_parameter_and_output_dtype(dtype):
    conv = eqx.nn.Conv1d(2, 3, 3, dtype=dtype, key=KEY)
    assert conv.weight.dtype == dtype and conv.bias.dtype == dtype
    assert conv(jnp.ones((2, 5), dtype)).dtype == dtype


def test_gradients_are_finite_and_nonzero():
    conv = random_layer(
        lambda: eqx.nn.Conv2d(2, 3, 3, padding=1, padding_mode="REFLECT", key=KEY)
    )
    x = jnp.ones((2, 4, 4))

    @eqx.filter_grad
    def grads(model, x):
        return jnp.sum(model(x) ** 2)

    g = grads(conv, x)
    for leaf in (g.weight, g.bias):
        assert bool(jnp.all(jnp.isfinite(leaf)))
        assert float(jnp.max(jnp.abs(leaf))) > 0


def test_works_under_filter_jit_and_filter_vmap():
    conv = random_layer(
        lambda: eqx.nn.Conv2d(2, 3, 3, stride=2, padding="SAME", key=KEY)
    )
    batch = jax.random.normal(jax.random.key(3), (4, 2, 5, 5))
    expected = np.stack([conv(x) for x in batch])
    vmapped = eqx.filter_vmap(conv)(batch)
    np.testing.assert_allclose(vmapped, expected, rtol=1e-6, atol=1e-6)
    jitted = eqx.filter_jit(lambda m, x: eqx.filter_vmap(m)(x))(conv, batch)
    np.testing.assert_allclose(jitted, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(conv))(batch), expected, atol=1e-6)


def test_is_a_pytree_with_static_configuration():
    conv = random_layer(lambda: eqx.nn.Conv2d(2, 3, 3, key=KEY))
    leaves, treedef = jax.tree_util.tree_flatten(conv)
    assert [leaf.shape for leaf in leaves] == [(3, 2, 3, 3), (3, 1, 1)]
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.kernel_size == (3, 3) and rebuilt.padding == ((0, 0), (0, 0))


def test_prints_readably():
    text = repr(random_layer(lambda: eqx.nn.Conv2d(2, 3, 3, key=KEY)))
    assert text.startswith("Conv2d(")
    assert "weight=f32[3,2,3,3]" in text
    assert "bias=f32[3,1,1]" in text
    assert "kernel_size=(3, 3)" in text


@pytest.mark.parametrize(
    "shape, match",
    [
        (
            (5, 5),
            r"Conv2d\(2, 3, kernel_size=\(3, 3\)\): `x` must have shape "
            r"\(2, dim_1, dim_2\).*got shape \(5, 5\)",
        ),
        ((3, 5, 5), r"must have shape \(2, dim_1, dim_2\).*got shape \(3, 5, 5\)"),
        ((4, 2, 5, 5), r"got shape \(4, 2, 5, 5\).*jax\.vmap\(layer\)"),
        ((2, 2, 5), r"spatial dimension 1 of `x` has size 2.*kernel extent 3"),
    ],
)
def test_bad_input_shapes_name_the_layer_and_both_shapes(shape, match):
    conv = random_layer(lambda: eqx.nn.Conv2d(2, 3, 3, key=KEY))
    with pytest.raises(ValueError, match=match):
        conv(jnp.ones(shape))


def test_bad_input_dtype_says_how_to_fix_it():
    conv = random_layer(lambda: eqx.nn.Conv1d(2, 3, 3, key=KEY))
    with pytest.raises(TypeError, match=r"dtype int32 but the weights are float32"):
        conv(jnp.ones((2, 5), jnp.int32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"padding": "FULL"}, r"(?s)`padding` must be one of.*'FULL'"),
        ({"padding": [1, 2, 3]}, r"`padding` must be one of"),
        ({"padding": -1}, r"`padding` must be one of"),
        ({"padding_mode": "mirror"}, r"`padding_mode` must be one of.*'mirror'"),
        ({"kernel_size": (3, 3, 3)}, r"`kernel_size` must be an int or a sequence "),
        ({"stride": 0}, r"`stride` must hold positive ints"),
        ({"groups": 4}, r"`in_channels` \(=6\) must be divisible by `groups`"),
        ({"groups": 3, "out_channels": 4}, r"`out_channels` \(=4\) must be divis"),
    ],
)
def test_bad_constructor_arguments_are_refused_early(kwargs, match):
    arguments = {"in_channels": 6, "out_channels": 6, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        eqx.nn.Conv2d(**arguments, key=KEY)


def test_padding_strings_are_case_insensitive_and_stored_upper_case():
    for padding, mode in itertools.product(["same", "Valid"], ["zeros", "Circular"]):
        conv = eqx.nn.Conv1d(1, 1, 3, padding=padding, padding_mode=mode, key=KEY)
        assert conv.padding == padding.upper()
        assert conv.padding_mode == mode.upper()
