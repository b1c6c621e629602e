"""Case `jit_forward`: `filter_jit` dispatch of an MLP's forward pass.

A batch of 4 examples through an MLP of width 8, on CPU, so that the compiled
work is tiny and the time is mostly dispatch: flattening the arguments,
splitting arrays from static values, finding the compiled function, calling it.

The floor is `jax.jit` of a function taking the model's array leaves as one
flat list and rebuilding the model inside the trace: the same compiled
program, with the least Python-side work JAX allows per call.
"""

from __future__ import annotations

from collections.abc import Collection
from types import ModuleType
from typing import Any

import jax

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
    batch_inputs,
    building_pytreemod,
    canonical_params,
    contender,
    library_mlp,
    pytreemod_features,
    split_arrays,
)


def forward(model: Any, x: jax.Array) -> jax.Array:
    """The model on each example of the batch."""
    return jax.vmap(model)(x)


def _library(name: str, lib: ModuleType, model: Any, x: jax.Array) -> Contender:
    jitted = lib.filter_jit(forward)
    return contender(name, lambda: jitted(model, x), lambda y: [y])


def _nnx(nnx: ModuleType, depth: int, x: jax.Array) -> Contender:
    from . import _nnx_models

    model = _nnx_models.canonical_model(_nnx_models.MLP, depth)
    jitted = nnx.jit(lambda model, x: model(x))
    return contender("nnx", lambda: jitted(model, x), lambda y: [y])


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for an MLP of `depth` hidden layers."""
    ptm = pytreemod_features("nn.MLP", "filter_jit")
    x, _ = batch_inputs()
    with building_pytreemod():
        model = library_mlp(ptm, depth, canonical_params(depth))
        mine = _library(PYTREEMOD, ptm, model, x)
    arrays, rebuild = split_arrays(model)
    floor_jitted = jax.jit(lambda arrays, x: forward(rebuild(arrays), x))
    floor = contender(FLOOR, lambda: floor_jitted(arrays, x), lambda y: [y])
    built, absent = build_peers(
        {
            "equinox": lambda eqx: _library(
                "equinox", eqx, library_mlp(eqx, depth, canonical_params(depth)), x
            ),
            "nnx": lambda nnx: _nnx(nnx, depth, x),
        },
        peers,
    )
    return Setup(len(arrays), [mine, floor, *built], absent)


CASE = Case(
    name="jit_forward",
    summary="filter_jit dispatch of an MLP forward pass (width 8, batch 4, CPU)",
    size_label="depth",
    sizes=(2, 8, 32),
    quick_sizes=(2, 32),
    build=build,
)
