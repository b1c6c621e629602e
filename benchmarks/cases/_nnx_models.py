"""The Flax NNX versions of the cases' models.

Imported only by a peer builder, which `build_peers` runs inside try/except:
`flax` is an optional peer, never a dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ._models import WIDTH, Params, canonical_params, layer_sizes, mse


class MLP(nnx.Module):
    """The MLP of the cases: `depth` hidden layers with ReLU, a linear output.

    NNX layers take batched input, so no `vmap` is needed around it.
    """

    def __init__(self, depth: int, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [nnx.Linear(i, o, rngs=rngs) for i, o in layer_sizes(depth)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class BatchNormMLP(nnx.Module):
    """The `stateful_step` model: Linear, BatchNorm (batch statistics), ReLU."""

    def __init__(self, depth: int, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [nnx.Linear(i, o, rngs=rngs) for i, o in layer_sizes(depth)]
        )
        self.norms = nnx.List(
            [
                nnx.BatchNorm(
                    WIDTH,
                    momentum=0.99,
                    epsilon=1e-5,
                    use_fast_variance=False,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer, norm in zip(self.layers[:-1], self.norms, strict=True):
            x = jax.nn.relu(norm(layer(x), use_running_average=False))
        return self.layers[-1](x)


def set_params(layers: Sequence[nnx.Linear], params: Params) -> None:
    """Writes canonical `(weight (..., out, in), bias)` pairs into NNX Linear layers,
    whose kernels are `(..., in, out)`."""
    for layer, (weight, bias) in zip(layers, params, strict=True):
        layer.kernel[...] = jnp.swapaxes(weight, -1, -2)
        layer.bias[...] = bias


def linear_answer(layers: Sequence[nnx.Linear]) -> list[Any]:
    """`[w0, b0, w1, b1, ...]` in the canonical `(out, in)` layout."""
    return [
        a
        for layer in layers
        for a in (jnp.swapaxes(layer.kernel[...], -1, -2), layer.bias[...])
    ]


def canonical_model(
    cls: Callable[[int, nnx.Rngs], Any], depth: int, seed: int = 0
) -> Any:
    """`cls(depth, rngs)` (`MLP` or `BatchNormMLP`) holding the canonical
    params of `seed` in its Linear layers."""
    model = cls(depth, nnx.Rngs(seed))
    set_params(model.layers, canonical_params(depth, seed=seed))
    return model


def train_step() -> Callable[[Any, Any, jax.Array, jax.Array], jax.Array]:
    """A training step as NNX's documentation writes one: `nnx.jit` of
    `step(model, optimizer, x, y)`, which takes a step of the `nnx.Optimizer`
    on the mean squared error of `model` over `(x, y)`, updating both in place,
    and returns the loss."""

    @nnx.jit
    def step(model: Any, optimizer: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        value, grads = nnx.value_and_grad(lambda m: mse(m(x), y))(model)
        optimizer.update(model, grads)
        return value

    return step


def first_step(
    make: Callable[[], Any],
    step: Callable[[Any, Any, jax.Array, jax.Array], jax.Array],
    optimiser: optax.GradientTransformation,
    x: jax.Array,
    y: jax.Array,
) -> tuple[jax.Array, Any]:
    """One `step` from a fresh model `make()` and a fresh optimiser: the loss and
    the updated model. NNX updates in place, so this is how a contender's
    answer stays the same before and after the timed calls."""
    model = make()
    value = step(model, nnx.Optimizer(model, optimiser, wrt=nnx.Param), x, y)
    return value, model
