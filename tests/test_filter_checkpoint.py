"""`filter_checkpoint` (gradient checkpointing, `jax.checkpoint`)."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pytreemod

X = jnp.array([0.5, -1.0, 2.0])


def _close(a, b):
    return np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def _block(x, activation, n, label):
    return {"y": activation(jnp.sin(x) * n), "label": label, "n": n}


def test_values_and_gradients_match_jax_checkpoint():
    checkpointed = pytreemod.filter_checkpoint(_block)
    out = checkpointed(X, jnp.tanh, 3, "block")
    assert out["label"] == "block" and out["n"] == 3
    plain = jax.checkpoint(lambda x: jnp.tanh(jnp.sin(x) * 3))
    assert _close(out["y"], plain(X))

    grad = jax.grad(lambda x: jnp.sum(checkpointed(x, jnp.tanh, 3, "b")["y"]))(X)
    assert _close(grad, jax.grad(lambda x: jnp.sum(plain(x)))(X))


def test_the_gradient_recomputes_under_a_checkpoint():
    checkpointed = pytreemod.filter_checkpoint(_block)
    jaxpr = jax.make_jaxpr(
        jax.grad(lambda x: jnp.sum(checkpointed(x, jnp.tanh, 3, "b")["y"]))
    )(X)
    assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)


@pytest.mark.parametrize(
    "options",
    [
        {"prevent_cse": False},
        {"policy": jax.checkpoint_policies.nothing_saveable},
        {"policy": jax.checkpoint_policies.dots_saveable, "prevent_cse": True},
    ],
)
def test_options_as_a_decorator(options):
    @pytreemod.filter_checkpoint(**options)
    def f(x, fn):
        return fn(x @ x)

    grad = jax.grad(f)(X, jnp.sin)
    assert _close(grad, jax.grad(lambda x: jnp.sin(x @ x))(X))


class Layer(pytreemod.Module):
    weight: jax.Array
    activation: Any = pytreemod.field(static=True)

    @pytreemod.filter_checkpoint
    def __call__(self, x):
        return self.activation(self.weight * x)


def test_on_a_method_and_under_filter_grad_and_filter_jit():
    layer = Layer(jnp.array([1.0, 2.0, 3.0]), jnp.tanh)
    assert _close(layer(X), jnp.tanh(layer.weight * X))

    @pytreemod.filter_jit
    @pytreemod.filter_grad
    def loss(model, x):
        return jnp.sum(model(x))

    grads = loss(layer, X)
    expected = jax.grad(lambda w: jnp.sum(jnp.tanh(w * X)))(layer.weight)
    assert _close(grads.weight, expected)


def test_the_wrapper_looks_like_the_function():
    wrapped = pytreemod.filter_checkpoint(_block)
    assert wrapped.__name__ == "_block" and wrapped.__wrapped__ is _block


def test_checkpointing_a_non_callable_is_an_error():
    with pytest.raises(TypeError, match="needs a callable"):
        pytreemod.filter_checkpoint(3)
