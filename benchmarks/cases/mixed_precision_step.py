"""Case `mixed_precision_step`: a bfloat16 training step set by a policy.

pytreemod's step is `train_step`'s (`filter_jit` around
`filter_value_and_grad` of an MSE, optax SGD with momentum, `apply_updates`)
with a `pytreemod.policy.MixedPrecision`: float32 master weights, compute in
bfloat16, output in float32, and a rule keeping the last layer in float32.
The policy selects what to cast when the step is traced, so per call it
should cost nothing: the floor is `jax.jit` of the same step over flat lists
of the model's and optimiser state's arrays, with every cast written by hand
(the last layer's arrays left alone). Equinox, which has no precision policy,
runs the same step with the casts written by hand as its documentation
suggests (`jax.tree.map` of `astype`, the last layer put back with
`tree_at`); NNX has no like-for-like version.
"""

from __future__ import annotations

from collections.abc import Collection
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import optax

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
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
from .train_step import library_step, optimiser


def _bf16(x: Any) -> Any:
    """`x` in bfloat16 if it is a floating array, else `x`."""
    floating = isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)
    return x.astype(jnp.bfloat16) if floating else x


def _library(name: str, lib: ModuleType, model: Any, x: Any, y: Any) -> Contender:
    """pytreemod with its policy."""
    depth = len(model.layers) - 1
    policy = lib.policy.MixedPrecision(
        param="float32",
        compute="bfloat16",
        output="float32",
        rules=[(lib.select.path(rf"\.layers\[{depth}\]"), "float32")],
    )

    def loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        run = policy.cast_to_compute(model)
        pred = jax.vmap(run)(policy.cast_inputs(x))
        return mse(policy.cast_to_output(pred), y)

    return library_step(name, lib, model, x, y, loss)


def _by_hand(name: str, lib: ModuleType, model: Any, x: Any, y: Any) -> Contender:
    """Equinox's way: the same casts, written by hand."""

    def loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        run = jax.tree_util.tree_map(_bf16, model)
        run = lib.tree_at(lambda m: m.layers[-1], run, model.layers[-1])
        pred = jax.vmap(run)(x.astype(jnp.bfloat16))
        return mse(pred.astype(jnp.float32), y)

    return library_step(name, lib, model, x, y, loss)


def _floor(model: Any, x: jax.Array, y: jax.Array) -> Contender:
    optim = optimiser()
    arrays, rebuild = split_arrays(model)
    # the last layer's weight and bias, kept in float32, are the last two
    kept = len(arrays) - 2
    opt_arrays, rebuild_opt = split_arrays(optim.init(arrays))

    def loss(arrays: list, x: jax.Array, y: jax.Array) -> jax.Array:
        cast = [_bf16(a) if i < kept else a for i, a in enumerate(arrays)]
        pred = jax.vmap(rebuild(cast))(x.astype(jnp.bfloat16))
        return mse(pred.astype(jnp.float32), y)

    @jax.jit
    def step(arrays: list, opt_arrays: list, x: jax.Array, y: jax.Array) -> Any:
        value, grads = jax.value_and_grad(loss)(arrays, x, y)
        updates, opt_state = optim.update(grads, rebuild_opt(opt_arrays))
        new_arrays = optax.apply_updates(arrays, updates)
        return value, new_arrays, jax.tree_util.tree_leaves(opt_state)

    return contender(
        FLOOR,
        lambda: step(arrays, opt_arrays, x, y),
        lambda out: [out[0], *linear_answer(rebuild(out[1]).layers)],
    )


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for an MLP of `depth` hidden layers."""
    ptm = pytreemod_features(
        "nn.MLP",
        "policy.MixedPrecision",
        "select.path",
        "filter_jit",
        "filter_value_and_grad",
        "apply_updates",
        "filter",
    )
    x, y = batch_inputs()
    with building_pytreemod():
        model = library_mlp(ptm, depth, canonical_params(depth))
        mine = _library(PYTREEMOD, ptm, model, x, y)
    floor = _floor(model, x, y)
    built, absent = build_peers(
        {
            "equinox": lambda eqx: _by_hand(
                "equinox", eqx, library_mlp(eqx, depth, canonical_params(depth)), x, y
            ),
        },
        peers,
    )
    arrays = split_arrays(model)[0]
    leaves = len(arrays) + len(jax.tree_util.tree_leaves(optimiser().init(arrays)))
    return Setup(leaves, [mine, floor, *built], absent)


CASE = Case(
    name="mixed_precision_step",
    summary="train_step in bfloat16 by a MixedPrecision policy vs hand casts",
    size_label="depth",
    sizes=(2, 8, 32),
    quick_sizes=(8,),
    build=build,
)
