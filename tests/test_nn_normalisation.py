"""`pytreemod.nn.LayerNorm`, `RMSNorm` and `GroupNorm`, against NumPy."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as ptm

EPS = 1e-5

# Each norm with affine parameters, and an input shape it takes.
NORMS_AND_INPUT_SHAPES = [
    (ptm.nn.LayerNorm(3), (3,)),
    (ptm.nn.RMSNorm(3), (3,)),
    (ptm.nn.GroupNorm(1, 3), (3, 2)),
]


def _numpy_layer_norm(x, weight, bias):
    x = np.asarray(x, np.float64)
    return (x - x.mean()) / np.sqrt(x.var() + EPS) * weight + bias


def _numpy_rms_norm(x, weight, bias):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x**2) + EPS) * weight + bias


def _numpy_group_norm(x, groups, weight, bias):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    size = x.shape[0] // groups
    for g in range(groups):
        block = x[g * size : (g + 1) * size]
        out[g * size : (g + 1) * size] = (block - block.mean()) / np.sqrt(
            block.var() + EPS
        )
    for c in range(x.shape[0]):
        out[c] = out[c] * weight[c] + bias[c]
    return out


def _atol(x, weight, groups=1):
    """float32 loses about `1e-7 * max|x|` in `x - mean`, which dividing by
    the standard deviation magnifies: near-constant inputs are ill-conditioned
    whatever the implementation, so the tolerance follows the conditioning."""
    x = np.asarray(x, np.float64).reshape(groups, -1)
    std = np.sqrt(x.var(axis=1).min() + EPS)
    return 1e-4 + 1e-6 * np.abs(x).max() / std * np.abs(np.asarray(weight)).max()


def _with_random_affine(norm, shape, seed=0):
    rng = np.random.default_rng(seed)
    weight = jnp.asarray(rng.normal(size=shape), jnp.float32)
    bias = jnp.asarray(rng.normal(size=shape), jnp.float32)
    return ptm.tree_at(lambda n: (n.weight, n.bias), norm, (weight, bias))


_values = hnp.arrays(
    np.float32,
    (2, 3),
    elements=st.floats(-100, 100, width=32, allow_nan=False),
)


@settings(max_examples=30, deadline=None)
@given(x=_values)
def test_layer_norm_matches_numpy(x):
    norm = _with_random_affine(ptm.nn.LayerNorm((2, 3)), (2, 3))
    expected = _numpy_layer_norm(x, norm.weight, norm.bias)
    atol = _atol(x, norm.weight)
    np.testing.assert_allclose(norm(jnp.asarray(x)), expected, rtol=1e-4, atol=atol)


@settings(max_examples=30, deadline=None)
@given(x=_values)
def test_rms_norm_matches_numpy(x):
    norm = _with_random_affine(ptm.nn.RMSNorm((2, 3)), (2, 3))
    expected = _numpy_rms_norm(x, norm.weight, norm.bias)
    np.testing.assert_allclose(norm(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    x=hnp.arrays(
        np.float32, (4, 3), elements=st.floats(-100, 100, width=32, allow_nan=False)
    ),
    groups=st.sampled_from([1, 2, 4]),
)
def test_group_norm_matches_numpy(x, groups):
    norm = _with_random_affine(ptm.nn.GroupNorm(groups, 4), (4,))
    expected = _numpy_group_norm(x, groups, norm.weight, norm.bias)
    atol = _atol(x, norm.weight, groups)
    np.testing.assert_allclose(norm(jnp.asarray(x)), expected, rtol=1e-4, atol=atol)


def test_defaults_normalise_to_mean_zero_variance_one():
    x = jnp.array([1.0, 2.0, 4.0, 9.0])
    y = ptm.nn.LayerNorm(4)(x)
    assert abs(float(y.mean())) < 1e-6 and abs(float(y.var()) - 1) < 1e-4
    z = ptm.nn.RMSNorm(4)(x)
    assert abs(float(jnp.mean(z**2)) - 1) < 1e-4


@pytest.mark.parametrize(
    "norm",
    [
        ptm.nn.LayerNorm(3, use_weight=False, use_bias=False),
        ptm.nn.RMSNorm(3, use_weight=False, use_bias=False),
        ptm.nn.GroupNorm(1, channelwise_affine=False),
    ],
)
def test_without_affine_parameters(norm):
    assert jax.tree_util.tree_leaves(norm) == []
    x = jnp.array([1.0, 2.0, 6.0])
    if isinstance(norm, ptm.nn.RMSNorm):
        expected = _numpy_rms_norm(x, 1.0, 0.0)
    else:
        expected = _numpy_layer_norm(x, 1.0, 0.0)
    np.testing.assert_allclose(norm(x), expected, rtol=1e-5)


@pytest.mark.parametrize("norm, shape", NORMS_AND_INPUT_SHAPES)
def test_half_precision_input_keeps_its_dtype(norm, shape):
    x = jnp.arange(float(np.prod(shape))).reshape(shape).astype(jnp.bfloat16)
    y = norm(x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        y.astype(jnp.float32), norm(x.astype(jnp.float32)), atol=2e-2
    )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_parameter_dtype(dtype):
    for norm in (
        ptm.nn.LayerNorm(3, dtype=dtype),
        ptm.nn.RMSNorm(3, dtype=dtype),
        ptm.nn.GroupNorm(1, 3, dtype=dtype),
    ):
        assert norm.weight.dtype == dtype and norm.bias.dtype == dtype


def test_group_norm_over_images_and_instance_norm():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 3)), jnp.float32)
    norm = ptm.nn.GroupNorm(4, 4)  # one channel per group: instance norm
    y = norm(x)
    assert y.shape == (4, 2, 3)
    np.testing.assert_allclose(y.mean(axis=(1, 2)), np.zeros(4), atol=1e-5)
    expected = _numpy_group_norm(x, 4, np.ones(4), np.zeros(4))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "norm", [ptm.nn.LayerNorm(3), ptm.nn.RMSNorm(3), ptm.nn.GroupNorm(1, 3)]
)
def test_state_is_passed_through(norm):
    index = ptm.nn.StateIndex(jnp.zeros(1))
    state = ptm.nn.State(index)
    x = jnp.array([1.0, 2.0, 3.0])
    y, same = norm(x, state)
    assert same is state
    np.testing.assert_array_equal(y, norm(x))


def test_sequential_calls_them_without_a_state():
    model = ptm.nn.Sequential(
        [ptm.nn.LayerNorm(3), ptm.nn.RMSNorm(3), ptm.nn.GroupNorm(1, 3)]
    )
    assert not model.is_stateful()
    assert model(jnp.array([1.0, 2.0, 3.0])).shape == (3,)


@pytest.mark.parametrize("norm, shape", NORMS_AND_INPUT_SHAPES)
def test_gradients_finite(norm, shape):
    x = jnp.arange(float(np.prod(shape))).reshape(shape)
    grads = ptm.filter_grad(lambda m, x: jnp.sum(m(x) ** 3))(norm, x)
    leaves = jax.tree_util.tree_leaves(grads)
    assert len(leaves) == 2
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)


def test_gradient_finite_for_a_constant_input():
    # The variance is 0 there: eps keeps the gradient finite.
    grad = jax.grad(lambda x: jnp.sum(ptm.nn.LayerNorm(3)(x) ** 2))(jnp.ones(3))
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_filter_jit_and_filter_vmap():
    norms = (ptm.nn.LayerNorm(3), ptm.nn.RMSNorm(3), ptm.nn.GroupNorm(3, 3))
    xs = jnp.arange(12.0).reshape(4, 3)

    @ptm.filter_jit
    def run(norms, xs):
        return [ptm.filter_vmap(lambda x, n=n: n(x))(xs) for n in norms]

    for norm, ys in zip(norms, run(norms, xs), strict=True):
        assert ys.shape == (4, 3)
        np.testing.assert_allclose(ys[1], norm(xs[1]), rtol=1e-5, atol=1e-6)


def test_repr_is_readable():
    assert repr(ptm.nn.GroupNorm(2, 4)) == (
        "GroupNorm(\n  groups=2,\n  channels=4,\n  eps=1e-05,\n"
        "  channelwise_affine=True,\n  weight=f32[4],\n  bias=f32[4]\n)"
    )
    assert "weight=f32[2,3]" in repr(ptm.nn.LayerNorm((2, 3)))
    assert repr(ptm.nn.RMSNorm(2)).startswith("RMSNorm(")


@pytest.mark.parametrize(
    "norm, shape, match",
    [
        (
            ptm.nn.LayerNorm(3),
            (4,),
            r"LayerNorm\(shape=\(3,\)\): `x` must have shape \(3,\); got shape \(4,\)",
        ),
        (ptm.nn.LayerNorm(3), (2, 3), r"got shape \(2, 3\)\..*jax\.vmap"),
        (
            ptm.nn.RMSNorm((2, 2)),
            (4,),
            r"RMSNorm\(shape=\(2, 2\)\): `x` must have shape \(2, 2\); "
            r"got shape \(4,\)",
        ),
        (
            ptm.nn.GroupNorm(2, 4),
            (3, 5),
            r"GroupNorm\(groups=2, channels=4\): `x` must have shape \(4, \*spatial\); "
            r"got shape \(3, 5\)",
        ),
        (
            ptm.nn.GroupNorm(2, channelwise_affine=False),
            (3,),
            r"x\.shape\[0\] = 3, must be divisible by groups = 2",
        ),
        (ptm.nn.GroupNorm(1, 3), (), r"must have shape \(channels, \*spatial\)"),
    ],
)
def test_bad_input_shape(norm, shape, match):
    with pytest.raises(ValueError, match=match):
        norm(jnp.ones(shape))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((3, 4), {}, r"`groups` must divide `channels`; got groups=3, channels=4"),
        ((2,), {}, r"`channels` is needed"),
        ((0, 4), {}, r"`groups` must be at least 1"),
    ],
)
def test_group_norm_bad_construction(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ptm.nn.GroupNorm(*args, **kwargs)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_elementwise_affine_is_the_deprecated_name_of_both_flags(affine):
    # Equinox still accepts `elementwise_affine=`; code written for it must run.
    with pytest.warns(
        DeprecationWarning, match="elementwise_affine=.... is deprecated"
    ):
        norm = ptm.nn.LayerNorm(3, elementwise_affine=affine)
    assert (norm.use_weight, norm.use_bias) == (affine, affine)
    assert len(jax.tree_util.tree_leaves(norm)) == (2 if affine else 0)
