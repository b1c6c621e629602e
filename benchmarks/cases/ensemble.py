"""Case `ensemble`: the forward pass of an ensemble of 8 MLPs.

The ensemble is built with `filter_vmap` over 8 keys (one MLP whose array
leaves have a leading axis of 8) and called through
`filter_jit(filter_vmap(...))`, the batch of inputs shared by all members.
The floor is `jax.jit` over the stacked array leaves as a flat list, with
`jax.vmap` over the members inside.
"""

from __future__ import annotations

from collections.abc import Collection
from types import ModuleType
from typing import Any

import jax
import jax.random as jr

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
    params_by_path,
    pytreemod_features,
    replace_leaves,
    split_arrays,
    stack_params,
)
from .jit_forward import forward

#: Members of the ensemble.
MEMBERS = 8


def ensemble_params(depth: int) -> Params:
    """Each member's canonical params, stacked."""
    return stack_params([canonical_params(depth, seed=s) for s in range(MEMBERS)])


def make_ensemble(lib: ModuleType, depth: int) -> Any:
    """`lib.nn.MLP`s built by `lib.filter_vmap` over keys, holding the case's params."""

    def make(key: jax.Array) -> Any:
        return lib.nn.MLP(WIDTH, WIDTH, WIDTH, depth, key=key)

    ensemble = lib.filter_vmap(make)(jr.split(jr.key(SEED), MEMBERS))
    return replace_leaves(ensemble, params_by_path(ensemble_params(depth)))


def _library(name: str, lib: ModuleType, ensemble: Any, x: jax.Array) -> Contender:
    @lib.filter_jit
    def run(ensemble: Any, x: jax.Array) -> jax.Array:
        members = lib.filter_vmap(forward, in_axes=(lib.if_array(0), None))
        return members(ensemble, x)

    return contender(name, lambda: run(ensemble, x), lambda y: [y])


def _nnx(nnx: ModuleType, depth: int, x: jax.Array) -> Contender:
    from . import _nnx_models

    @nnx.split_rngs(splits=MEMBERS)
    @nnx.vmap(in_axes=(0,))
    def make(rngs: Any) -> Any:
        return _nnx_models.MLP(depth, rngs)

    ensemble = make(nnx.Rngs(SEED))
    _nnx_models.set_params(ensemble.layers, ensemble_params(depth))

    @nnx.jit
    def run(ensemble: Any, x: jax.Array) -> jax.Array:
        return nnx.vmap(lambda member, x: member(x), in_axes=(0, None))(ensemble, x)

    return contender("nnx", lambda: run(ensemble, x), lambda y: [y])


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for members of `depth` hidden layers."""
    ptm = pytreemod_features("nn.MLP", "filter_jit", "filter_vmap", "if_array")
    x, _ = batch_inputs()
    with building_pytreemod():
        ensemble = make_ensemble(ptm, depth)
        mine = _library(PYTREEMOD, ptm, ensemble, x)
    arrays, rebuild = split_arrays(ensemble)

    @jax.jit
    def floor_run(arrays: list, x: jax.Array) -> jax.Array:
        return jax.vmap(lambda a: forward(rebuild(a), x))(arrays)

    floor = contender(FLOOR, lambda: floor_run(arrays, x), lambda y: [y])
    built, absent = build_peers(
        {
            "equinox": lambda eqx: _library(
                "equinox", eqx, make_ensemble(eqx, depth), x
            ),
            "nnx": lambda nnx: _nnx(nnx, depth, x),
        },
        peers,
    )
    return Setup(len(arrays), [mine, floor, *built], absent)


CASE = Case(
    name="ensemble",
    summary="filter_jit(filter_vmap(...)) forward of 8 MLPs built by filter_vmap",
    size_label="depth",
    sizes=(2, 8),
    quick_sizes=(2,),
    build=build,
)
