"""`filter_grad` and `filter_value_and_grad`."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod


class Model(pytreemod.Module):
    weight: jax.Array
    counts: jax.Array  # integer: not differentiated
    scale: float  # a Python float: not differentiated
    activation: Any
    name: str = pytreemod.field(static=True, default="model")

    def loss(self, x: jax.Array) -> jax.Array:
        return jnp.sum(self.activation(self.weight * x) * self.scale)

    @pytreemod.filter_grad
    def grad_of_loss(self, x: jax.Array) -> Any:
        return self.loss(x)

    @pytreemod.filter_value_and_grad(has_aux=True)
    def value_and_grad_with_aux(self, x: jax.Array) -> Any:
        return self.loss(x), "aux"


MODEL = Model(jnp.array([0.5, -1.0]), jnp.arange(2), 2.0, jnp.tanh)
X = jnp.array([1.0, 3.0])


def _expected_weight_grad(weight, x=X):
    return jax.grad(lambda w: jnp.sum(jnp.tanh(w * x) * 2.0))(weight)


def _loss(model, x):
    return model.loss(x)


def _close(a, b):
    return np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_grad_differentiates_the_inexact_arrays_of_the_first_argument():
    grads = pytreemod.filter_grad(_loss)(MODEL, X)
    assert _close(grads.weight, _expected_weight_grad(MODEL.weight))
    assert grads.counts is None and grads.scale is None and grads.activation is None
    assert grads.name == "model"
    assert jax.tree_util.tree_structure(
        grads, is_leaf=lambda x: x is None
    ) == jax.tree_util.tree_structure(
        pytreemod.filter(MODEL, pytreemod.is_inexact_array),
        is_leaf=lambda x: x is None,
    )


def test_grad_of_a_tuple_of_several_things():
    def f(pair, factor):
        a, b = pair
        return jnp.sum(a * b) * factor

    a, b = jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])
    ga, gb = pytreemod.filter_grad(f)((a, b), 2.0)
    assert ga.tolist() == [6.0, 8.0] and gb.tolist() == [2.0, 4.0]


def test_grad_passes_other_arguments_through_untouched():
    seen = {}

    def f(x, label, fn, n, array, *, key):
        seen.update(label=label, fn=fn, n=n, array=array, key=key)
        return fn(x * n)

    array = jnp.ones(2)
    grad = pytreemod.filter_grad(f)(jnp.array(1.0), "a", jnp.sin, 3, array, key="k")
    assert _close(grad, 3 * jnp.cos(3.0))
    assert seen["label"] == "a" and seen["fn"] is jnp.sin and seen["n"] == 3
    assert seen["array"] is array and seen["key"] == "k"


def test_numpy_float_arrays_are_differentiated():
    grad = pytreemod.filter_grad(lambda x: jnp.sum(x**2))(
        np.array([1.0, 2.0], np.float32)
    )
    assert grad.tolist() == [2.0, 4.0]


def test_a_first_argument_without_inexact_arrays_gets_all_none():
    grads = pytreemod.filter_grad(lambda t, x: jnp.sum(x))((1, "a", jnp.arange(2)), X)
    assert grads == (None, None, None)


def test_value_and_grad_returns_the_value_too():
    value, grads = pytreemod.filter_value_and_grad(_loss)(MODEL, X)
    assert _close(value, MODEL.loss(X))
    assert _close(grads.weight, _expected_weight_grad(MODEL.weight))


@pytest.mark.parametrize("with_value", [False, True])
def test_has_aux(with_value):
    def f(model, x):
        return model.loss(x), {"note": "aux", "y": x}

    if with_value:
        (value, aux), grads = pytreemod.filter_value_and_grad(f, has_aux=True)(MODEL, X)
        assert _close(value, MODEL.loss(X))
    else:
        grads, aux = pytreemod.filter_grad(f, has_aux=True)(MODEL, X)
    assert aux["note"] == "aux" and aux["y"] is X
    assert _close(grads.weight, _expected_weight_grad(MODEL.weight))


def test_decorator_forms():
    @pytreemod.filter_grad
    def bare(x):
        return jnp.sum(x**2)

    @pytreemod.filter_grad(has_aux=True)
    def with_aux(x):
        return jnp.sum(x**2), 1

    assert bare(X).tolist() == [2.0, 6.0]
    grads, aux = with_aux(X)
    assert grads.tolist() == [2.0, 6.0] and aux == 1


def test_wrapper_looks_like_the_function():
    wrapped = pytreemod.filter_grad(_loss)
    assert wrapped.__name__ == "_loss" and wrapped.__wrapped__ is _loss


def test_decorated_method_differentiates_with_respect_to_the_instance():
    grads = MODEL.grad_of_loss(X)
    assert isinstance(grads, Model)
    assert _close(grads.weight, _expected_weight_grad(MODEL.weight))
    (value, aux), grads = MODEL.value_and_grad_with_aux(X)
    assert aux == "aux" and _close(value, MODEL.loss(X))
    assert _close(grads.weight, _expected_weight_grad(MODEL.weight))


def test_grad_of_a_bound_method_differentiates_its_first_argument():
    grad_x = pytreemod.filter_grad(MODEL.loss)(X)
    expected = jax.grad(lambda x: jnp.sum(jnp.tanh(MODEL.weight * x) * 2.0))(X)
    assert _close(grad_x, expected)


def test_the_wrapper_of_a_bound_method_is_a_pytree_of_its_module():
    wrapped = pytreemod.filter_grad(MODEL.loss)
    leaves = jax.tree_util.tree_leaves(wrapped)
    assert any(leaf is MODEL.weight for leaf in leaves)


def test_grad_inside_filter_jit():
    traces = []

    @pytreemod.filter_jit
    def step(model, x):
        traces.append(None)
        return pytreemod.filter_value_and_grad(_loss)(model, x)

    value, grads = step(MODEL, X)
    assert _close(value, MODEL.loss(X))
    assert _close(grads.weight, _expected_weight_grad(MODEL.weight))
    assert grads.counts is None and grads.activation is None
    step(MODEL, X + 1.0)
    assert len(traces) == 1


def test_filter_jit_of_the_wrapper_of_a_bound_method():
    value, grad_x = pytreemod.filter_jit(pytreemod.filter_value_and_grad(MODEL.loss))(X)
    assert _close(value, MODEL.loss(X))
    assert grad_x.shape == X.shape


def test_grad_under_jax_jit_and_vmap():
    grad = pytreemod.filter_grad(lambda x, n: jnp.sum(x**n))
    jitted = jax.jit(lambda x: grad(x, 2))
    assert jitted(X).tolist() == [2.0, 6.0]
    batched = jax.vmap(lambda x: grad(x, 2))(jnp.stack([X, 2 * X]))
    assert batched.tolist() == [[2.0, 6.0], [4.0, 12.0]]


def test_second_order():
    grad = pytreemod.filter_grad(lambda x: jnp.sum(x**3))
    second = pytreemod.filter_grad(lambda x: jnp.sum(grad(x)))(X)
    assert second.tolist() == [6.0, 18.0]


# --- misuse --------------------------------------------------------------------


@pytest.mark.parametrize(
    "transform", [pytreemod.filter_grad, pytreemod.filter_value_and_grad]
)
def test_calling_without_a_positional_argument_is_an_error(transform):
    wrapped = transform(lambda x: jnp.sum(x))
    with pytest.raises(TypeError, match="called with no arguments"):
        wrapped()
    with pytest.raises(TypeError, match="keyword arguments only(.|\n)*by position"):
        wrapped(x=X)


def test_has_aux_without_a_pair_is_an_error():
    with pytest.raises(TypeError, match=r"return a pair(.|\n)*returned a `\w+`"):
        pytreemod.filter_grad(lambda x: jnp.sum(x), has_aux=True)(X)
    with pytest.raises(TypeError, match=r"returned a `tuple` of length 3"):
        pytreemod.filter_grad(lambda x: (jnp.sum(x), 1, 2), has_aux=True)(X)


def test_a_non_scalar_output_is_an_error_that_gives_the_shape():
    with pytest.raises(TypeError, match=r"scalar(.|\n)*shape \(2,\)"):
        pytreemod.filter_grad(lambda x: x**2)(X)


def test_a_tuple_output_suggests_has_aux():
    with pytest.raises(TypeError, match=r"`tuple` of length 2(.|\n)*has_aux=True"):
        pytreemod.filter_value_and_grad(lambda x: (jnp.sum(x), "aux"))(X)


def test_an_integer_output_is_an_error():
    with pytest.raises(TypeError, match="floating-point dtype(.|\n)*int32"):
        pytreemod.filter_grad(lambda x: jnp.sum(x).astype(jnp.int32))(X)


def test_wrapping_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="needs a callable"):
        pytreemod.filter_grad(MODEL.weight)


def test_extra_keywords_go_to_jax_value_and_grad():
    # As Equinox: `**gradkwargs` are passed on (here `holomorphic=True`).
    f = pytreemod.filter_grad(lambda z: z**2, holomorphic=True)
    assert complex(f(jnp.array(1.0 + 1.0j))) == 2.0 + 2.0j
    value, grad = pytreemod.filter_value_and_grad(lambda z: z**2, holomorphic=True)(
        jnp.array(1.0j)
    )
    assert complex(value) == -1.0 and complex(grad) == 2.0j
    # Rebuilt wrappers with equal options compare equal (one jit cache entry).
    g = lambda x: x  # noqa: E731
    assert pytreemod.filter_grad(g, allow_int=True) == pytreemod.filter_grad(
        g, allow_int=True
    )


def test_argnums_is_refused_with_a_way_out():
    with pytest.raises(TypeError, match="does not take `argnums`"):
        pytreemod.filter_grad(lambda x, y: x, argnums=1)


def test_first_argument_by_keyword_gives_equinoxs_first_sentence():
    with pytest.raises(TypeError, match=r"^Functions wrapped with `filter_\{grad"):
        pytreemod.filter_value_and_grad(lambda x, y: x + y)(x=1.0, y=1.0)
