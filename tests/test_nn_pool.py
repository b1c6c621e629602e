"""`nn.Pool`, `nn.MaxPool1d`-`3d`, `nn.AvgPool1d`-`3d`, `nn.AdaptivePool` and
`nn.AdaptiveAvgPool1d`-`3d` / `nn.AdaptiveMaxPool1d`-`3d`."""

import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import rng_array

import pytreemod as eqx


def numpy_pool(x, kind, kernel, stride, pads, use_ceil):
    """Max or average (padding counted as zeros, divided by the full window)
    pooling, as a loop over output positions. With `use_ceil`, one more window
    is taken at the end of a dimension if it still starts inside the input."""
    fill = -np.inf if kind == "max" else 0.0
    padded = np.pad(
        np.asarray(x, np.float64), [(0, 0)] + list(pads), constant_values=fill
    )
    counts = []
    for size, k, s, (lo, hi) in zip(x.shape[1:], kernel, stride, pads, strict=True):
        count = (size + lo + hi - k) // s + 1
        if use_ceil and (size + lo + hi - k) % s and count * s < size + lo:
            count += 1
        counts.append(count)
    # Windows running past the padded input see more padding.
    extra = [
        max(0, (c - 1) * s + k - p)
        for c, s, k, p in zip(counts, stride, kernel, padded.shape[1:], strict=True)
    ]
    padded = np.pad(padded, [(0, 0)] + [(0, e) for e in extra], constant_values=fill)
    out = np.zeros((x.shape[0], *counts))
    for c in range(x.shape[0]):
        for pos in np.ndindex(*counts):
            window = padded[
                (c,)
                + tuple(
                    slice(p * s, p * s + k)
                    for p, s, k in zip(pos, stride, kernel, strict=True)
                )
            ]
            out[(c, *pos)] = (
                window.max() if kind == "max" else window.sum() / window.size
            )
    return out


POOL_CASES = [
    # (num_spatial_dims, kernel, stride, padding, use_ceil, input spatial shape)
    (1, 2, 2, 0, False, (7,)),
    (1, 3, 2, 1, True, (8,)),
    (1, 3, 1, [(2, 0)], False, (5,)),
    (2, (2, 3), (2, 1), (1, 0), False, (5, 6)),
    (2, 3, 3, 1, True, (7, 8)),
    (3, 2, 2, 0, True, (3, 4, 5)),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pools_match_a_numpy_loop(case, kind):
    n, kernel, stride, padding, use_ceil, spatial = case
    cls = getattr(eqx.nn, f"{'MaxPool' if kind == 'max' else 'AvgPool'}{n}d")
    pool = cls(kernel, stride, padding, use_ceil)
    x = rng_array((2, *spatial))
    out = jax.jit(pool)(x)
    expected = numpy_pool(
        x, kind, pool.kernel_size, pool.stride, pool.padding, use_ceil
    )
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_max_and_avg_pool_2d_on_a_known_input():
    x = jnp.arange(16.0).reshape(1, 4, 4)
    np.testing.assert_array_equal(
        eqx.nn.MaxPool2d(2, stride=2)(x), [[[5.0, 7.0], [13.0, 15.0]]]
    )
    np.testing.assert_array_equal(
        eqx.nn.AvgPool2d(2, stride=2)(x), [[[2.5, 4.5], [10.5, 12.5]]]
    )


def test_generic_pool_with_a_custom_reduction():
    x = jnp.array([[1.0, -2.0, 3.0, 4.0]])
    total = eqx.nn.Pool(0.0, jax.lax.add, 1, kernel_size=2)
    np.testing.assert_array_equal(total(x), [[-1.0, 1.0, 7.0]])
    smallest = eqx.nn.Pool(jnp.array(jnp.inf), jax.lax.min, 1, kernel_size=3, stride=1)
    np.testing.assert_array_equal(smallest(x), [[-2.0, -2.0]])
    assert smallest.init == math.inf  # a 0-d array is kept as a Python number


def test_integer_inputs():
    x = jnp.array([[1, 5, 2, 0]], dtype=jnp.int32)
    maximum = eqx.nn.MaxPool1d(2, stride=2, padding=1)(x)
    assert maximum.dtype == jnp.int32
    np.testing.assert_array_equal(maximum, [[1, 5, 0]])
    np.testing.assert_allclose(eqx.nn.AvgPool1d(2, stride=2)(x), [[3.0, 1.0]])


def test_pools_hold_no_arrays_and_print_readably():
    pool = eqx.nn.MaxPool2d(2, stride=2)
    assert jax.tree_util.tree_leaves(eqx.filter(pool, eqx.is_array)) == []
    text = repr(pool)
    assert text.startswith("MaxPool2d(")
    assert "kernel_size=(2, 2)" in text and "stride=(2, 2)" in text


def test_gradients_are_finite_and_flow_to_the_maxima():
    x = jnp.array([[1.0, 3.0, 2.0, 0.0]])
    grad = jax.grad(lambda x: eqx.nn.MaxPool1d(2, stride=2)(x).sum())(x)
    np.testing.assert_array_equal(grad, [[0.0, 1.0, 1.0, 0.0]])
    grad = jax.grad(lambda x: eqx.nn.AvgPool1d(2, stride=2)(x).sum())(x)
    np.testing.assert_array_equal(grad, [[0.5, 0.5, 0.5, 0.5]])


def test_work_under_filter_jit_and_filter_vmap():
    batch = rng_array((3, 2, 6, 6))
    model = (eqx.nn.MaxPool2d(2, 2), eqx.nn.AdaptiveAvgPool2d(2))

    @eqx.filter_jit
    def apply(model, batch):
        return eqx.filter_vmap(lambda x: model[1](model[0](x)))(batch)

    out = apply(model, batch)
    assert out.shape == (3, 2, 2, 2)
    np.testing.assert_allclose(out[2], model[1](model[0](batch[2])), rtol=1e-6)


@pytest.mark.parametrize(
    "pool, shape, match",
    [
        (
            eqx.nn.MaxPool2d(2),
            (4, 4),
            r"MaxPool2d\(kernel_size=\(2, 2\)\): `x` must have shape "
            r"\(channels, dim_1, dim_2\).*got shape \(4, 4\)",
        ),
        (eqx.nn.AvgPool1d(3), (2, 2), r"has size 2.*smaller than the window \(3\)"),
        (
            eqx.nn.AdaptiveMaxPool1d(4),
            (2, 3),
            r"AdaptiveMaxPool1d\(target_shape=\(4,\)\): spatial dimension 1 of `x` "
            r"has size 3, smaller than its target size 4",
        ),
        (eqx.nn.AdaptiveAvgPool2d(2), (3, 4, 4, 4), r"got shape \(3, 4, 4, 4\)"),
    ],
)
def test_bad_input_shapes_name_the_layer_and_both_shapes(pool, shape, match):
    with pytest.raises(ValueError, match=match):
        pool(jnp.ones(shape))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: eqx.nn.MaxPool1d(2, padding=3), r"at most `kernel_size`"),
        (lambda: eqx.nn.MaxPool2d((2, 2, 2)), r"`kernel_size` must be an int or"),
        (lambda: eqx.nn.AvgPool1d(2, stride=0), r"`stride` must hold positive ints"),
        (lambda: eqx.nn.AvgPool1d(2, padding="SAME"), r"`padding` must be one of"),
        (lambda: eqx.nn.AdaptiveAvgPool2d((1, 2, 3)), r"`target_shape` must be"),
    ],
)
def test_bad_constructor_arguments_are_refused_early(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- adaptive pools ----------------------------------------------------------


def _pieces(size, target):
    """The `target` contiguous pieces of `range(size)`: the first
    `size % target` one element longer."""
    small, big = divmod(size, target)
    lengths = [small + 1] * big + [small] * (target - big)
    starts = np.cumsum([0] + lengths[:-1])
    return [slice(int(a), int(a) + n) for a, n in zip(starts, lengths, strict=True)]


def numpy_adaptive_pool(x, target, reduce):
    pieces = [_pieces(n, t) for n, t in zip(x.shape[1:], target, strict=True)]
    out = np.zeros((x.shape[0], *target))
    for c in range(x.shape[0]):
        for pos in np.ndindex(*target):
            region = x[(c,) + tuple(p[i] for p, i in zip(pieces, pos, strict=True))]
            out[(c, *pos)] = reduce(region)
    return out


@pytest.mark.parametrize("kind", ["Avg", "Max"])
@pytest.mark.parametrize(
    "n, target, spatial",
    [(1, 3, (8,)), (1, 4, (4,)), (2, (2, 3), (5, 7)), (3, (1, 2, 2), (3, 5, 4))],
)
def test_adaptive_pools_match_numpy(n, target, spatial, kind):
    pool = getattr(eqx.nn, f"Adaptive{kind}Pool{n}d")(target)
    x = rng_array((2, *spatial))
    out = jax.jit(pool)(x)
    expected = numpy_adaptive_pool(
        x, pool.target_shape, np.mean if kind == "Avg" else np.max
    )
    assert out.shape == (2, *pool.target_shape)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_generic_adaptive_pool_with_a_custom_reduction():
    pool = eqx.nn.AdaptivePool((2, 1), num_spatial_dims=2, operation=jnp.sum)
    x = jnp.arange(6.0).reshape(1, 3, 2)
    # rows {0, 1} and {2}, then all columns
    np.testing.assert_array_equal(pool(x), [[[6.0], [9.0]]])
    assert jax.tree_util.tree_leaves(pool) == [jnp.sum]


@pytest.mark.parametrize(
    "pool, leaves",
    [
        (eqx.nn.MaxPool2d(2), [("init", -math.inf), ("operation", jax.lax.max)]),
        (eqx.nn.AvgPool1d(3), [("init", 0), ("operation", jax.lax.add)]),
        (eqx.nn.AdaptiveMaxPool1d(2), [("operation", jnp.max)]),
        (eqx.nn.AdaptiveAvgPool3d(2), [("operation", jnp.mean)]),
    ],
)
def test_pool_leaves_are_init_and_operation(pool, leaves):
    # As in Equinox, `init` and `operation` are (non-array) leaves, not static:
    # `tree_serialise_leaves` writes `init` (a Python number), so a file of a
    # model with pools lines up leaf for leaf with Equinox's. They used to be
    # static fields, and such files did not load.
    path_leaves = jax.tree_util.tree_flatten_with_path(pool)[0]
    assert [(path[0].name, leaf) for path, leaf in path_leaves] == leaves
    seen = []
    eqx.tree_serialise_leaves(
        io.BytesIO(), pool, filter_spec=lambda f, x: seen.append(x)
    )
    assert seen == [leaf for _, leaf in leaves]


def test_pool_leaves_stay_static_under_filtered_transforms():
    pool = eqx.nn.MaxPool1d(2, stride=2)
    x = jnp.array([[1.0, 3.0, 2.0, 0.0]])
    grads = eqx.filter_grad(lambda p, x: p(x).sum())(pool, x)
    assert jax.tree_util.tree_leaves(grads) == []
    assert eqx.filter_jit(lambda p, x: p(x))(pool, x).tolist() == [[3.0, 2.0]]


def test_adaptive_avg_pool_equals_avg_pool_when_the_size_divides():
    x = rng_array((3, 8, 6))
    np.testing.assert_allclose(
        eqx.nn.AdaptiveAvgPool2d((4, 2))(x),
        eqx.nn.AvgPool2d((2, 3), stride=(2, 3))(x),
        rtol=1e-5,
        atol=1e-6,
    )


def test_adaptive_pool_gradients_are_finite():
    x = jnp.asarray(rng_array((1, 5)))
    grad = jax.grad(lambda x: eqx.nn.AdaptiveAvgPool1d(2)(x).sum())(x)
    np.testing.assert_allclose(grad, [[1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 2]], rtol=1e-6)


def test_max_pool_is_differentiable_under_jit_and_vmap():
    # Regression: the initial value was a JAX array, which is traced under
    # `jit`; `lax.reduce_window` then failed to recognise the max reduction
    # and could not be differentiated.
    pool = eqx.nn.MaxPool2d(2, stride=2, padding=1)

    @eqx.filter_jit
    def grad(x):
        return jax.grad(lambda x: eqx.filter_vmap(pool)(x).sum())(x)

    g = grad(jnp.asarray(rng_array((2, 1, 3, 3))))
    assert g.shape == (2, 1, 3, 3)
    # Each of the 2 x 2 windows of each example passes gradient 1 to its maximum.
    np.testing.assert_allclose(g.sum(axis=(1, 2, 3)), [4.0, 4.0])
