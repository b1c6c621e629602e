"""Case `train_step`: one jitted SGD training step of an MLP.

The step is `filter_jit` around `filter_value_and_grad` of a mean squared
error, an optax SGD-with-momentum update and `apply_updates`; it is called
again and again on the same model and optimiser state, so every call does the
same work. The floor is `jax.jit` of the same step over flat lists: the
model's array leaves and the optimiser state's leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any

import jax
import optax

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
    LEARNING_RATE,
    MOMENTUM,
    batch_inputs,
    building_pytreemod,
    canonical_params,
    contender,
    library_mlp,
    linear_answer,
    mse,
    pytreemod_features,
    split_arrays,
)


def optimiser() -> optax.GradientTransformation:
    """SGD with momentum: its state has one array per parameter."""
    return optax.sgd(LEARNING_RATE, momentum=MOMENTUM)


def loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error of the model over the batch."""
    return mse(jax.vmap(model)(x), y)


def library_step(
    name: str,
    lib: ModuleType,
    model: Any,
    x: Any,
    y: Any,
    loss: Callable[[Any, jax.Array, jax.Array], jax.Array] = loss,
) -> Contender:
    """The library's (pytreemod's or Equinox's) `filter_jit` step of `loss`
    with the SGD update, on the same model and optimiser state every call;
    cases that change only the loss (mixed precision) share it."""
    optim = optimiser()
    opt_state = optim.init(lib.filter(model, lib.is_array))

    @lib.filter_jit
    def step(model: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        value, grads = lib.filter_value_and_grad(loss)(model, x, y)
        updates, opt_state = optim.update(grads, opt_state)
        return value, lib.apply_updates(model, updates), opt_state

    return contender(
        name,
        lambda: step(model, opt_state, x, y),
        lambda out: [out[0], *linear_answer(out[1].layers)],
    )


def _floor(model: Any, x: jax.Array, y: jax.Array) -> Contender:
    optim = optimiser()
    arrays, rebuild = split_arrays(model)
    opt_arrays, rebuild_opt = split_arrays(optim.init(arrays))

    @jax.jit
    def step(arrays: list, opt_arrays: list, x: jax.Array, y: jax.Array) -> Any:
        value, grads = jax.value_and_grad(lambda a: loss(rebuild(a), x, y))(arrays)
        updates, opt_state = optim.update(grads, rebuild_opt(opt_arrays))
        new_arrays = optax.apply_updates(arrays, updates)
        return value, new_arrays, jax.tree_util.tree_leaves(opt_state)

    return contender(
        FLOOR,
        lambda: step(arrays, opt_arrays, x, y),
        lambda out: [out[0], *linear_answer(rebuild(out[1]).layers)],
    )


def _nnx(nnx: ModuleType, depth: int, x: jax.Array, y: jax.Array) -> Contender:
    from . import _nnx_models

    def make() -> Any:
        return _nnx_models.canonical_model(_nnx_models.MLP, depth)

    step = _nnx_models.train_step()
    model = make()
    optimizer = nnx.Optimizer(model, optimiser(), wrt=nnx.Param)

    def result() -> list[Any]:
        value, fresh = _nnx_models.first_step(make, step, optimiser(), x, y)
        return [value, *_nnx_models.linear_answer(fresh.layers)]

    return Contender("nnx", lambda: step(model, optimizer, x, y), result)


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for an MLP of `depth` hidden layers."""
    ptm = pytreemod_features(
        "nn.MLP", "filter_jit", "filter_value_and_grad", "apply_updates", "filter"
    )
    x, y = batch_inputs()
    with building_pytreemod():
        model = library_mlp(ptm, depth, canonical_params(depth))
        mine = library_step(PYTREEMOD, ptm, model, x, y)
    floor = _floor(model, x, y)
    built, absent = build_peers(
        {
            "equinox": lambda eqx: library_step(
                "equinox", eqx, library_mlp(eqx, depth, canonical_params(depth)), x, y
            ),
            "nnx": lambda nnx: _nnx(nnx, depth, x, y),
        },
        peers,
    )
    arrays = split_arrays(model)[0]
    leaves = len(arrays) + len(jax.tree_util.tree_leaves(optimiser().init(arrays)))
    return Setup(leaves, [mine, floor, *built], absent)


CASE = Case(
    name="train_step",
    summary="filter_jit(filter_value_and_grad + optax SGD + apply_updates), MLP",
    size_label="depth",
    sizes=(2, 8, 32),
    quick_sizes=(8,),
    build=build,
)
