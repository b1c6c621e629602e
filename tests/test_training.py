"""End to end: train a small MLP with optax, `filter_jit`,
`filter_value_and_grad`, `filter` and `apply_updates`."""

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

import pytreemod


class TinyMLP(pytreemod.Module):
    layers: list[tuple[jax.Array, jax.Array]]
    activation: Callable[[jax.Array], jax.Array]
    width: int = pytreemod.field(static=True)

    def __init__(self, width: int, *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.layers = [
            (jax.random.normal(k1, (width, 1)) * 0.5, jnp.zeros(width)),
            (jax.random.normal(k2, (1, width)) / jnp.sqrt(width), jnp.zeros(1)),
        ]
        self.activation = jnp.tanh
        self.width = width

    def __call__(self, x: jax.Array) -> jax.Array:
        (w1, b1), (w2, b2) = self.layers
        hidden = self.activation(x @ w1.T + b1[None, :])
        return hidden @ w2.T + b2[None, :]


def _loss(model: TinyMLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((model(x) - y) ** 2)


def test_a_small_mlp_learns_a_sine():
    start = time.perf_counter()
    x = jnp.linspace(-2.0, 2.0, 64)[:, None]
    y = jnp.sin(2.0 * x)
    model = TinyMLP(16, key=jax.random.key(0))
    optimiser = optax.adam(3e-2)
    opt_state = optimiser.init(pytreemod.filter(model, pytreemod.is_array))

    @pytreemod.filter_jit
    def step(model, opt_state, x, y):
        loss, grads = pytreemod.filter_value_and_grad(_loss)(model, x, y)
        updates, opt_state = optimiser.update(
            grads, opt_state, pytreemod.filter(model, pytreemod.is_array)
        )
        return pytreemod.apply_updates(model, updates), opt_state, loss

    first_loss = None
    loss = None
    # optax's Adam mixes Python floats with its int32 step count, which the
    # strict promotion of conftest.py refuses; that is optax's business, so
    # allow standard promotion for the optimiser here.
    with jax.numpy_dtype_promotion("standard"):
        for _ in range(300):
            model, opt_state, loss = step(model, opt_state, x, y)
            first_loss = loss if first_loss is None else first_loss
            if loss < first_loss / 10:
                break
    assert float(loss) < float(first_loss) / 10, (float(first_loss), float(loss))
    # The non-array parts of the model survive training untouched.
    assert model.activation is jnp.tanh and model.width == 16
    assert time.perf_counter() - start < 30
