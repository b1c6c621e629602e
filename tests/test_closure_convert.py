"""`filter_closure_convert`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod

X = jnp.array([0.5, -1.0, 2.0])


def _close(a, b):
    return np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_closed_over_tracers_become_consts_and_gradients_flow_through():
    def outer(x):
        scale = jnp.sin(x)
        converted = pytreemod.filter_closure_convert(lambda y, n: scale * y * n, x, 2)
        assert any(c is scale for c in converted.consts)
        return jnp.sum(converted(x, 2))

    plain = lambda x: jnp.sum(jnp.sin(x) * x * 2)  # noqa: E731
    assert _close(jax.grad(outer)(X), jax.grad(plain)(X))


def test_matches_jax_closure_convert():
    weight = jnp.array([1.0, 2.0, 3.0])

    def make(w):
        return lambda x: jnp.tanh(w * x)

    ours = pytreemod.filter_closure_convert(make(weight), X)
    theirs, consts = jax.closure_convert(make(weight), X)
    assert _close(ours(X), theirs(X, *consts))
    assert len(jax.tree_util.tree_leaves(ours.consts)) >= 1


def test_non_array_arguments_and_outputs_pass_through():
    offset = jnp.array(1.0)

    def f(x, activation, label, *, power):
        return {"y": activation(x) ** power + offset, "label": label}

    converted = pytreemod.filter_closure_convert(f, X, jnp.exp, "a", power=2)
    out = converted(2 * X, jnp.exp, "a", power=2)
    assert out["label"] == "a"
    assert _close(out["y"], jnp.exp(2 * X) ** 2 + 1.0)
    assert out.keys() == converted.out_struct.keys()
    assert converted.out_struct["y"].shape == (3,)


def test_shape_dtype_structs_serve_as_example_arguments():
    captured = jnp.ones(3)
    converted = pytreemod.filter_closure_convert(
        lambda x: x + captured, jax.ShapeDtypeStruct((3,), jnp.float32)
    )
    assert _close(converted(X), X + 1.0)


def test_a_function_without_a_closure_is_called_as_it_is():
    def plain(x, n):
        return x * n

    converted = pytreemod.filter_closure_convert(plain, X, 3)
    assert converted.consts == []
    assert _close(converted(X, 3), 3 * X)
    (args, kwargs) = converted.in_struct
    assert args[0].shape == (3,) and args[1] == 3 and kwargs == {}
    assert converted.out_struct.shape == (3,)


def test_the_converted_function_passes_through_filter_jit():
    captured = jnp.array(2.0)
    converted = pytreemod.filter_closure_convert(lambda x: x * captured, X)

    @pytreemod.filter_jit
    def call(fn, x):
        return fn(x)

    assert _close(call(converted, X), 2 * X)


def test_arrays_of_another_shape_are_an_error():
    captured = jnp.array(2.0)
    converted = pytreemod.filter_closure_convert(lambda x: x * captured, X)
    with pytest.raises(ValueError, match=r"arrays that differ(.|\n)*shape=\(2,\)"):
        converted(jnp.ones(2))


def test_other_non_array_arguments_are_an_error():
    converted = pytreemod.filter_closure_convert(lambda x, n: x * n, X, 2)
    with pytest.raises(ValueError, match=r"non-array arguments(.|\n)*\(None, 3\)"):
        converted(X, 3)


def test_converting_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="needs a callable"):
        pytreemod.filter_closure_convert(X, X)
