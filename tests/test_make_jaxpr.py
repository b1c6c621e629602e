"""`filter_make_jaxpr`."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod as eqx


class Affine(eqx.Module):
    weight: jax.Array
    bias: jax.Array
    activation: str = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.weight @ x + self.bias
        return jnp.tanh(y) if self.activation == "tanh" else y


def _primitives(closed: jax.extend.core.ClosedJaxpr) -> list[str]:
    return [eqn.primitive.name for eqn in closed.jaxpr.eqns]


def test_arrays_are_inputs_and_everything_else_static():
    def f(x, n, how, *, scale):
        y = x * n * scale
        return (jnp.sin(y) if how == "sin" else y), how, n

    closed, shapes, static = eqx.filter_make_jaxpr(f)(
        jnp.ones(3), 2, "sin", scale=np.float32(0.5)
    )
    assert isinstance(closed, jax.extend.core.ClosedJaxpr)
    assert [v.aval.shape for v in closed.jaxpr.invars] == [(3,), ()]
    assert "sin" in _primitives(closed)
    assert shapes == (jax.ShapeDtypeStruct((3,), jnp.float32), None, None)
    assert static == (None, "sin", 2)
    # The jaxpr computes what `f` does.
    (out,) = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, jnp.ones(3), 0.5)
    np.testing.assert_allclose(out, np.sin(np.ones(3)))


def test_shape_dtype_structs_and_modules_as_arguments():
    model = Affine(jnp.ones((2, 3)), jnp.zeros(2), "tanh")
    x = jax.ShapeDtypeStruct((3,), jnp.float32)
    closed, shapes, static = eqx.filter_make_jaxpr(lambda m, x: m(x))(model, x)
    # weight, bias, x: the static activation is not an input.
    assert [v.aval.shape for v in closed.jaxpr.invars] == [(2, 3), (2,), (3,)]
    assert "tanh" in _primitives(closed)
    assert shapes == jax.ShapeDtypeStruct((2,), jnp.float32)
    assert static is None


def test_a_module_as_the_function_closes_over_its_arrays():
    model = Affine(jnp.ones((2, 3)), jnp.zeros(2), "identity")
    closed, shapes, _ = eqx.filter_make_jaxpr(model)(jnp.ones(3))
    assert [v.aval.shape for v in closed.jaxpr.invars] == [(3,)]
    assert "tanh" not in _primitives(closed)
    assert shapes.shape == (2,)


def test_output_modules_keep_their_static_fields():
    def build(w):
        return Affine(w, jnp.zeros(w.shape[0]), "relu")

    _, shapes, static = eqx.filter_make_jaxpr(build)(jnp.ones((4, 2)))
    assert isinstance(shapes, Affine) and isinstance(static, Affine)
    assert shapes.weight == jax.ShapeDtypeStruct((4, 2), jnp.float32)
    assert static.weight is None and static.activation == "relu"


def test_wrapper_looks_like_the_function():
    def my_function(x):
        return x

    wrapped = eqx.filter_make_jaxpr(my_function)
    assert wrapped.__name__ == "my_function"
    assert wrapped.__wrapped__ is my_function


def test_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="needs a callable to trace"):
        eqx.filter_make_jaxpr("f")
