"""Case `stateful_step`: a training step of an MLP with BatchNorm and a `State`.

Each hidden layer is Linear, then `nn.BatchNorm` (`mode="batch"`: normalise
with the batch's statistics, keep running averages in the `State`), then ReLU.
The step runs the model under `filter_vmap(..., axis_name="batch")`, takes
`filter_value_and_grad` with the new `State` as auxiliary output, and applies
an optax SGD update, all under `filter_jit`; it returns loss, model, `State`
and optimiser state. The floor is `jax.jit` of the same step over flat lists of
the model's, the `State`'s and the optimiser state's array leaves.

NNX's `BatchNorm` also normalises with the batch's statistics in training, so
its step is like for like; it takes the batch directly instead of a vmap, and
computes the variance as E[(x - E[x])^2] (`use_fast_variance=False`) like the
others, not as E[x^2] - E[x]^2, whose rounding differs.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from types import ModuleType
from typing import Any

import jax
import jax.random as jr
import optax

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
    SEED,
    WIDTH,
    Params,
    batch_inputs,
    building_pytreemod,
    canonical_params,
    contender,
    is_inexact_array,
    layer_sizes,
    linear_answer,
    mse,
    params_by_path,
    pytreemod_features,
    replace_leaves,
    split_arrays,
)
from .train_step import optimiser

#: The vmapped axis BatchNorm takes its statistics over.
AXIS = "batch"


@functools.cache
def model_class(lib: ModuleType) -> type:
    """The case's model as a `lib.Module` (pytreemod's or Equinox's)."""

    class BatchNormMLP(lib.Module):
        layers: tuple
        norms: tuple

        def __init__(self, depth: int, key: jax.Array):
            keys = jr.split(key, depth + 1)
            sizes = layer_sizes(depth)
            self.layers = tuple(
                lib.nn.Linear(i, o, key=k)
                for (i, o), k in zip(sizes, keys, strict=True)
            )
            self.norms = tuple(
                lib.nn.BatchNorm(WIDTH, axis_name=AXIS, mode="batch")
                for _ in range(depth)
            )

        def __call__(self, x: jax.Array, state: Any) -> tuple[jax.Array, Any]:
            for layer, norm in zip(self.layers[:-1], self.norms, strict=True):
                x, state = norm(layer(x), state)
                x = jax.nn.relu(x)
            return self.layers[-1](x), state

    return BatchNormMLP


def make_model(lib: ModuleType, depth: int, params: Params) -> tuple[Any, Any]:
    """`(model, state)` from `lib.nn.make_with_state`, holding `params`."""
    model, state = lib.nn.make_with_state(model_class(lib))(depth, jr.key(SEED))
    return replace_leaves(model, params_by_path(params)), state


def answer(value: jax.Array, model: Any) -> list[jax.Array]:
    """Loss, then the weights of the Linear and BatchNorm layers."""
    return [value, *linear_answer(model.layers), *linear_answer(model.norms)]


def _library(
    name: str, lib: ModuleType, model: Any, state: Any, x: Any, y: Any
) -> Contender:
    optim = optimiser()
    opt_state = optim.init(lib.filter(model, lib.is_inexact_array))

    def loss(model: Any, state: Any, x: jax.Array, y: jax.Array) -> Any:
        batched = lib.filter_vmap(
            model, in_axes=(0, None), out_axes=(0, None), axis_name=AXIS
        )
        pred, state = batched(x, state)
        return mse(pred, y), state

    @lib.filter_jit
    def step(model: Any, state: Any, opt_state: Any, x: Any, y: Any) -> Any:
        (value, state), grads = lib.filter_value_and_grad(loss, has_aux=True)(
            model, state, x, y
        )
        updates, opt_state = optim.update(grads, opt_state)
        return value, lib.apply_updates(model, updates), state, opt_state

    return contender(
        name,
        lambda: step(model, state, opt_state, x, y),
        lambda out: answer(out[0], out[1]),
    )


def _floor(model: Any, state: Any, x: jax.Array, y: jax.Array) -> Contender:
    optim = optimiser()
    arrays, rebuild = split_arrays(model, is_inexact_array)
    state_arrays, rebuild_state = split_arrays(state)
    opt_arrays, rebuild_opt = split_arrays(optim.init(arrays))

    def loss(arrays: list, state: Any, x: jax.Array, y: jax.Array) -> Any:
        batched = jax.vmap(
            rebuild(arrays), in_axes=(0, None), out_axes=(0, None), axis_name=AXIS
        )
        pred, state = batched(x, state)
        return mse(pred, y), state

    @jax.jit
    def step(arrays: list, state_arrays: list, opt_arrays: list, x: Any, y: Any) -> Any:
        (value, state), grads = jax.value_and_grad(loss, has_aux=True)(
            arrays, rebuild_state(state_arrays), x, y
        )
        updates, opt_state = optim.update(grads, rebuild_opt(opt_arrays))
        new_arrays = optax.apply_updates(arrays, updates)
        leaves = jax.tree_util.tree_leaves
        return value, new_arrays, leaves(state), leaves(opt_state)

    return contender(
        FLOOR,
        lambda: step(arrays, state_arrays, opt_arrays, x, y),
        lambda out: answer(out[0], rebuild(out[1])),
    )


def _nnx(nnx: ModuleType, depth: int, x: jax.Array, y: jax.Array) -> Contender:
    from . import _nnx_models

    def make() -> Any:
        return _nnx_models.canonical_model(_nnx_models.BatchNormMLP, depth)

    step = _nnx_models.train_step()
    model = make()
    optimizer = nnx.Optimizer(model, optimiser(), wrt=nnx.Param)

    def result() -> list[Any]:
        value, fresh = _nnx_models.first_step(make, step, optimiser(), x, y)
        norms = [a for n in fresh.norms for a in (n.scale[...], n.bias[...])]
        return [value, *_nnx_models.linear_answer(fresh.layers), *norms]

    return Contender("nnx", lambda: step(model, optimizer, x, y), result)


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for `depth` hidden Linear-BatchNorm-ReLU layers."""
    ptm = pytreemod_features(
        "Module",
        "nn.Linear",
        "nn.BatchNorm",
        "nn.make_with_state",
        "filter",
        "filter_jit",
        "filter_vmap",
        "filter_value_and_grad",
        "apply_updates",
    )
    x, y = batch_inputs()
    with building_pytreemod():
        model, state = make_model(ptm, depth, canonical_params(depth))
        mine = _library(PYTREEMOD, ptm, model, state, x, y)
    floor = _floor(model, state, x, y)
    built, absent = build_peers(
        {
            "equinox": lambda eqx: _library(
                "equinox", eqx, *make_model(eqx, depth, canonical_params(depth)), x, y
            ),
            "nnx": lambda nnx: _nnx(nnx, depth, x, y),
        },
        peers,
    )
    arrays = split_arrays(model, is_inexact_array)[0]
    leaves = (
        len(arrays)
        + len(split_arrays(state)[0])
        + len(jax.tree_util.tree_leaves(optimiser().init(arrays)))
    )
    return Setup(leaves, [mine, floor, *built], absent)


CASE = Case(
    name="stateful_step",
    summary="filter_jit training step, BatchNorm MLP with State under filter_vmap",
    size_label="depth",
    # Not deeper: at initialisation a deep BatchNorm net's gradients explode
    # with depth, so float32 rounding differences between libraries' (equally
    # correct) BatchNorm code grow past any fair tolerance: at depth 32 the
    # updated weights of Equinox and pytreemod differ by up to ~1e-4 (batch 4)
    # or ~0.5 (batch 16) while their losses agree, and the check cannot pass.
    sizes=(2, 8),
    quick_sizes=(2,),
    build=build,
)
