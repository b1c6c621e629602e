"""Public signatures are Equinox's: parameter names, kinds and order, so that
code calling with keywords (`filter_grad(fun=f)`) runs unchanged."""

import inspect

import jax
import jax.numpy as jnp
import pytest

import pytreemod

P, K = "POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY"
VARARGS, VARKW = "VAR_POSITIONAL", "VAR_KEYWORD"

# Equinox 0.13.8's parameters, as (name, kind).
EXPECTED = {
    # `axes` is pytreemod's addition (logical axis names for sharding): a
    # keyword-only parameter, so every Equinox call still binds the same.
    "field": [("converter", K), ("static", K), ("axes", K), ("kwargs", VARKW)],
    "filter_jit": [("fun", P), ("donate", K), ("jitkwargs", VARKW)],
    "filter_pmap": [
        ("fun", P),
        ("in_axes", K),
        ("out_axes", K),
        ("axis_name", K),
        ("axis_size", K),
        ("donate", K),
        ("pmapkwargs", VARKW),
    ],
    "filter_grad": [("fun", P), ("has_aux", K), ("gradkwargs", VARKW)],
    "filter_value_and_grad": [("fun", P), ("has_aux", K), ("gradkwargs", VARKW)],
    "filter_checkpoint": [("fun", P), ("prevent_cse", K), ("policy", K)],
    "filter_eval_shape": [("fun", P), ("args", VARARGS), ("kwargs", VARKW)],
    "filter_make_jaxpr": [("fun", P)],
    "filter_vmap": [
        ("fun", P),
        ("in_axes", K),
        ("out_axes", K),
        ("axis_name", K),
        ("axis_size", K),
        ("vmapkwargs", VARKW),
    ],
    "debug.assert_max_traces": [("fn", P), ("max_traces", K)],
    "tree_inference": [("pytree", P), ("value", P)],
}


def _resolve(name):
    obj = pytreemod
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_signature_is_equinoxs(name):
    parameters = inspect.signature(_resolve(name)).parameters.values()
    assert [(p.name, p.kind.name) for p in parameters] == EXPECTED[name]


def _square_sum(x):
    return jnp.sum(x**2)


X = jnp.array([1.0, 2.0])


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: pytreemod.filter_grad(fun=_square_sum)(X), [2.0, 4.0]),
        (lambda: pytreemod.filter_value_and_grad(fun=_square_sum)(X)[1], [2.0, 4.0]),
        (lambda: jax.grad(pytreemod.filter_checkpoint(fun=_square_sum))(X), [2.0, 4.0]),
        (lambda: pytreemod.filter_vmap(fun=jnp.sin)(jnp.zeros(2)), [0.0, 0.0]),
        (
            lambda: pytreemod.debug.assert_max_traces(fn=jnp.sin, max_traces=1)(X * 0),
            [0.0, 0.0],
        ),
    ],
)
def test_the_function_may_be_given_by_keyword(make, expected):
    assert make().tolist() == expected


def test_eval_shape_and_make_jaxpr_take_fun_by_keyword():
    shape = pytreemod.filter_eval_shape(fun=_square_sum, x=X)
    assert (shape.shape, shape.dtype) == ((), jnp.float32)
    jaxpr, _, _ = pytreemod.filter_make_jaxpr(fun=_square_sum)(X)
    assert jaxpr.in_avals[0].shape == (2,)


def test_filter_vmap_passes_further_keywords_to_jax_vmap():
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        pytreemod.filter_vmap(jnp.sin, bogus=1)(jnp.zeros(2))
    decorated = pytreemod.filter_vmap(spmd_axis_name=None)(jnp.sin)
    assert decorated(jnp.zeros(2)).tolist() == [0.0, 0.0]
