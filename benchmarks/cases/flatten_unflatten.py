"""Case `flatten_unflatten`: one `tree_flatten` + `tree_unflatten` of an MLP.

This is the cost a Module pays at every transform boundary. The floor is the
same MLP built from frozen dataclasses registered with
`jax.tree_util.register_dataclass`, whose flatten/unflatten runs in JAX's C++
pytree code; NNX's counterpart is `nnx.split` + `nnx.merge`.
"""

from __future__ import annotations

from collections.abc import Collection
from types import ModuleType
from typing import Any

import jax

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
    FloorMLP,
    building_pytreemod,
    canonical_params,
    contender,
    count_arrays,
    library_mlp,
    linear_answer,
    pytreemod_features,
)


def roundtrip(tree: Any) -> Any:
    """Flattens `tree` and builds it again from its leaves."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _library(name: str, lib: ModuleType, depth: int) -> Contender:
    model = library_mlp(lib, depth, canonical_params(depth))
    return contender(name, lambda: roundtrip(model), lambda m: linear_answer(m.layers))


def _nnx(nnx: ModuleType, depth: int) -> Contender:
    from . import _nnx_models

    model = _nnx_models.canonical_model(_nnx_models.MLP, depth)
    return contender(
        "nnx",
        lambda: nnx.merge(*nnx.split(model)),
        lambda m: _nnx_models.linear_answer(m.layers),
    )


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for an MLP of `depth` hidden layers."""
    ptm = pytreemod_features("nn.MLP")
    with building_pytreemod():
        mine = _library(PYTREEMOD, ptm, depth)
        leaves = count_arrays(mine.call())
    floor_model = FloorMLP.from_params(canonical_params(depth))
    floor = contender(
        FLOOR, lambda: roundtrip(floor_model), lambda m: linear_answer(m.layers)
    )
    built, absent = build_peers(
        {
            "equinox": lambda eqx: _library("equinox", eqx, depth),
            "nnx": lambda nnx: _nnx(nnx, depth),
        },
        peers,
    )
    return Setup(leaves, [mine, floor, *built], absent)


CASE = Case(
    name="flatten_unflatten",
    summary="tree_flatten + tree_unflatten of an MLP (width 8)",
    size_label="depth",
    sizes=(2, 8, 32),
    quick_sizes=(2, 32),
    build=build,
)
