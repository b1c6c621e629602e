"""Case `construction`: building the Linear layers of an MLP from keys.

Each call builds `depth + 1` Linear layers (width 8), drawing their weights.
The floor draws the same weights with `jax.random` and wraps them in a frozen
dataclass registered with `jax.tree_util.register_dataclass`: what is left
over is the Module machinery (metaclass, field checks, freezing).

Every library draws its initial values its own way (NNX even from another
distribution), so the check compares what was built, layer by layer: the
shapes and dtypes of weight and bias, in the `(out, in)` layout.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from types import ModuleType
from typing import Any

import jax.random as jr
import numpy as np

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
    SEED,
    FloorLinear,
    building_pytreemod,
    contender,
    count_arrays,
    layer_sizes,
    linear_answer,
    pytreemod_features,
)


def shapes(arrays: Sequence[Any]) -> list[tuple[tuple[int, ...], str]]:
    """`(shape, dtype name)` of each array: what the construction check compares."""
    return [(tuple(np.shape(a)), str(a.dtype)) for a in arrays]


def _library(name: str, lib: ModuleType, depth: int) -> Contender:
    sizes = layer_sizes(depth)
    keys = list(jr.split(jr.key(SEED), len(sizes)))

    def call() -> list[Any]:
        return [
            lib.nn.Linear(i, o, key=k) for (i, o), k in zip(sizes, keys, strict=True)
        ]

    return contender(name, call, lambda layers: shapes(linear_answer(layers)))


def _nnx(nnx: ModuleType, depth: int) -> Contender:
    from . import _nnx_models

    sizes = layer_sizes(depth)

    def call() -> list[Any]:
        rngs = nnx.Rngs(SEED)
        return [nnx.Linear(i, o, rngs=rngs) for i, o in sizes]

    return contender(
        "nnx", call, lambda layers: shapes(_nnx_models.linear_answer(layers))
    )


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for the `depth + 1` Linear layers of an MLP of `depth`."""
    ptm = pytreemod_features("nn.Linear")
    with building_pytreemod():
        mine = _library(PYTREEMOD, ptm, depth)
        leaves = count_arrays(mine.call())
    sizes = layer_sizes(depth)
    keys = list(jr.split(jr.key(SEED), len(sizes)))

    def floor_call() -> list[FloorLinear]:
        return [
            FloorLinear.create(i, o, k) for (i, o), k in zip(sizes, keys, strict=True)
        ]

    floor = contender(FLOOR, floor_call, lambda ls: shapes(linear_answer(ls)))
    built, absent = build_peers(
        {
            "equinox": lambda eqx: _library("equinox", eqx, depth),
            "nnx": lambda nnx: _nnx(nnx, depth),
        },
        peers,
    )
    return Setup(leaves, [mine, floor, *built], absent)


CASE = Case(
    name="construction",
    summary="building the depth + 1 Linear layers (width 8) of an MLP",
    size_label="depth",
    sizes=(2, 8, 32),
    quick_sizes=(2, 32),
    build=build,
)
