"""Case `frozen_step`: a training step that updates only the last layer.

The MLP of `train_step`, with every layer but the last frozen. pytreemod
picks the trainable arrays with a selection
(`select.path(r"\\.layers\\[D\\]") & select.where(is_inexact_array)`, applied
once, when the step is set up), splits the model with `Selector.partition`,
and its `filter_jit` step differentiates and updates only those arrays; the
frozen half is passed in unchanged. The floor is the same step written by
hand: `jax.jit` over flat lists of the trainable arrays, the frozen arrays and
the optimiser state. Equinox spells the trainable arrays out with `tree_at` on
a filter spec, its documented way. The selection adds nothing per call (the
halves are those of a hand-built spec); the ratio to the floor is above
`train_step`'s because the floor differentiates two arrays while pytreemod
flattens and rebuilds two Module-shaped halves every call.
"""

from __future__ import annotations

from collections.abc import Collection
from types import ModuleType
from typing import Any

import jax
import optax

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
    batch_inputs,
    building_pytreemod,
    canonical_params,
    contender,
    is_inexact_array,
    library_mlp,
    linear_answer,
    pytreemod_features,
    split_arrays,
)
from .train_step import loss, optimiser


def _step(lib: ModuleType, optim: optax.GradientTransformation) -> Any:
    """The library's step on `(trainable, frozen)` halves of the model."""

    @lib.filter_jit
    def step(params: Any, frozen: Any, opt_state: Any, x: Any, y: Any) -> Any:
        value, grads = lib.filter_value_and_grad(
            lambda p: loss(lib.combine(p, frozen), x, y)
        )(params)
        updates, opt_state = optim.update(grads, opt_state)
        return value, lib.apply_updates(params, updates), opt_state

    return step


def _contender(name: str, lib: ModuleType, params: Any, frozen: Any, x, y) -> Contender:
    optim = optimiser()
    opt_state = optim.init(params)
    step = _step(lib, optim)
    return contender(
        name,
        lambda: step(params, frozen, opt_state, x, y),
        lambda out: [out[0], *linear_answer(lib.combine(out[1], frozen).layers)],
    )


def _pytreemod(ptm: ModuleType, model: Any, depth: int, x: Any, y: Any) -> Contender:
    select = ptm.select
    head = select.path(rf"\.layers\[{depth}\]") & select.where(ptm.is_inexact_array)
    params, frozen = head.partition(model)
    return _contender(PYTREEMOD, ptm, params, frozen, x, y)


def _equinox(eqx: ModuleType, depth: int, x: Any, y: Any) -> Contender:
    model = library_mlp(eqx, depth, canonical_params(depth))
    spec = jax.tree_util.tree_map(lambda _: False, model)
    spec = eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias), spec, replace=(True, True)
    )
    params, frozen = eqx.partition(model, spec)
    return _contender("equinox", eqx, params, frozen, x, y)


def _floor(model: Any, depth: int, x: jax.Array, y: jax.Array) -> Contender:
    optim = optimiser()
    arrays, rebuild = split_arrays(model, is_inexact_array)
    head = slice(2 * depth, 2 * depth + 2)  # the last layer's weight and bias
    frozen = arrays[: head.start]
    opt_arrays, rebuild_opt = split_arrays(optim.init(arrays[head]))

    @jax.jit
    def step(trainable: list, frozen: list, opt_arrays: list, x: Any, y: Any) -> Any:
        def of(t: list) -> jax.Array:
            return loss(rebuild([*frozen, *t]), x, y)

        value, grads = jax.value_and_grad(of)(trainable)
        updates, opt_state = optim.update(grads, rebuild_opt(opt_arrays))
        new = optax.apply_updates(trainable, updates)
        return value, new, jax.tree_util.tree_leaves(opt_state)

    return contender(
        FLOOR,
        lambda: step(arrays[head], frozen, opt_arrays, x, y),
        lambda out: [out[0], *linear_answer(rebuild([*frozen, *out[1]]).layers)],
    )


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for an MLP of `depth` hidden layers, all but the last frozen."""
    ptm = pytreemod_features(
        "nn.MLP", "select", "filter_jit", "filter_value_and_grad", "apply_updates"
    )
    x, y = batch_inputs()
    with building_pytreemod():
        model = library_mlp(ptm, depth, canonical_params(depth))
        mine = _pytreemod(ptm, model, depth, x, y)
    floor = _floor(model, depth, x, y)
    built, absent = build_peers(
        {"equinox": lambda eqx: _equinox(eqx, depth, x, y)}, peers
    )
    # Handled per call: every array of the model, and the head's optimiser state.
    leaves = len(split_arrays(model)[0]) + 2 + 2
    return Setup(leaves, [mine, floor, *built], absent)


CASE = Case(
    name="frozen_step",
    summary="training step of the last layer only, chosen by a selection",
    size_label="depth",
    sizes=(2, 8, 32),
    quick_sizes=(8,),
    build=build,
)
