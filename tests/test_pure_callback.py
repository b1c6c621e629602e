"""`filter_pure_callback`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytreemod as eqx


class Config(eqx.Module):
    offset: jax.Array
    mode: str = eqx.field(static=True)


def _host(config, x, *, repeat):
    # Runs on the host: sees concrete arrays and the non-array leaves as passed.
    assert not isinstance(x, jax.core.Tracer) and eqx.is_array(config.offset)
    assert config.mode == "add" and repeat == 2
    y = np.concatenate([x] * repeat) + config.offset
    return {"y": y.astype(np.float32), "mode": config.mode, "count": repeat}


_RESULT = {
    "y": jax.ShapeDtypeStruct((6,), jnp.float32),
    "mode": "add",
    "count": 2,
}


def test_mixed_arguments_and_results_inside_jit():
    config = Config(jnp.array(1.0), "add")

    @jax.jit
    def f(config, x):
        out = eqx.filter_pure_callback(
            _host, config, x, repeat=2, result_shape_dtypes=_RESULT
        )
        assert out["mode"] == "add" and out["count"] == 2  # static, at trace time
        return out["y"] * 2

    np.testing.assert_allclose(f(config, jnp.arange(3.0)), [2, 4, 6, 2, 4, 6])


def test_eagerly_and_under_vmap_with_a_vmap_method():
    def host(x, power):
        return np.asarray(x) ** power

    def f(x):
        return eqx.filter_pure_callback(
            host,
            x,
            2,
            result_shape_dtypes=jax.ShapeDtypeStruct(x.shape, x.dtype),
            vmap_method="sequential",
        )

    np.testing.assert_allclose(f(jnp.array(3.0)), 9.0)
    np.testing.assert_allclose(eqx.filter_vmap(f)(jnp.arange(3.0)), [0.0, 1.0, 4.0])


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.floats(-10, 10, width=32), min_size=1, max_size=4),
    tag=st.text(max_size=3),
)
def test_an_identity_callback_round_trips(values, tag):
    tree = {"x": np.asarray(values, np.float32), "tag": tag, "n": len(values)}
    shapes = {"x": jax.ShapeDtypeStruct((len(values),), jnp.float32), "tag": tag}
    shapes["n"] = len(values)
    out = eqx.filter_pure_callback(lambda t: t, tree, result_shape_dtypes=shapes)
    assert out["tag"] == tag and out["n"] == len(values)
    np.testing.assert_array_equal(out["x"], tree["x"])


# --- misuse -----------------------------------------------------------------


@pytest.mark.parametrize(
    "returned, match",
    [
        (
            {"y": np.zeros(6, np.float32), "mode": "sub", "count": 2},
            r"'sub' at\s+`result\['mode'\]`",
        ),
        ({"y": 1.0, "mode": "add", "count": 2}, r"returned 1.0 at\s+`result\['y'\]`"),
        (
            {"y": np.zeros(6, np.float32)},
            "structure differs from `result_shape_dtypes`",
        ),
    ],
)
def test_a_result_that_does_not_fit_is_an_error(returned, match):
    f = jax.jit(
        lambda x: eqx.filter_pure_callback(
            lambda x: returned, x, result_shape_dtypes=_RESULT
        )["y"]
    )
    with pytest.raises(jax.errors.JaxRuntimeError, match=match):
        f(jnp.ones(3)).block_until_ready()


def test_vectorized_is_refused_with_the_replacement():
    with pytest.raises(TypeError, match="vmap_method='expand_dims'"):
        eqx.filter_pure_callback(
            lambda x: x,
            jnp.ones(2),
            result_shape_dtypes=jax.ShapeDtypeStruct((2,), jnp.float32),
            vectorized=True,
        )
