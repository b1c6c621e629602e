"""Case `sharded_step`: a model-parallel SGD step placed by logical names.

The pytreemod contender names the MLP's dimensions with rules, places model,
optimiser state and batch with `pytreemod.sharding.shard` (the state with
`like=model`), and keeps the layout inside the step with `shard` again (a
sharding constraint). The floor is the same step under `jax.jit` over flat
leaves, placed by hand: one `NamedSharding` per array, `device_put` outside,
`with_sharding_constraint` inside. Both compile to the same program, so the
per-step cost should be the same: `shard` runs at trace time only.

The mesh is `("data", "model")` over as many of the process's devices as
divide the layer width (one on a plain CPU run; eight with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`). The peers have no
logical-axis sharding, so none is compared.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from .._case import FLOOR, PEERS, PYTREEMOD, Case, Contender, Setup
from .._peers import build_peers
from ._models import (
    WIDTH,
    batch_inputs,
    building_pytreemod,
    canonical_params,
    contender,
    library_mlp,
    linear_answer,
    pytreemod_features,
    split_arrays,
)
from .train_step import loss, optimiser

# Every layer's output dimension (weight rows, bias) is split over "model".
RULES = [
    (r"\.layers\[\d+\]\.weight", ("hidden", None)),
    (r"\.layers\[\d+\]\.bias", ("hidden",)),
]
# The batch `(x, y)`: split along the batch dimension.
BATCH_RULES = [(r"\[0\]|\[1\]", ("batch", None))]
AXIS_RULES = {"hidden": "model", "batch": "data"}


def _mesh() -> Mesh:
    devices = jax.devices()
    n = math.gcd(len(devices), WIDTH)
    return Mesh(
        np.array(devices[:n]).reshape(1, n),
        ("data", "model"),
        axis_types=(AxisType.Auto, AxisType.Auto),
    )


def _pytreemod(ptm: Any, mesh: Mesh, model: Any, x: Any, y: Any) -> Contender:
    from pytreemod.sharding import shard

    optim = optimiser()
    model = shard(model, mesh, AXIS_RULES, RULES)
    opt_state = shard(
        optim.init(ptm.filter(model, ptm.is_array)),
        mesh,
        AXIS_RULES,
        RULES,
        like=model,
    )
    x, y = shard((x, y), mesh, AXIS_RULES, BATCH_RULES)

    @ptm.filter_jit
    def step(model: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
        value, grads = ptm.filter_value_and_grad(loss)(model, x, y)
        updates, opt_state = optim.update(grads, opt_state)
        model = shard(ptm.apply_updates(model, updates), mesh, AXIS_RULES, RULES)
        opt_state = shard(opt_state, mesh, AXIS_RULES, RULES, like=model)
        return value, model, opt_state

    return contender(
        PYTREEMOD,
        lambda: step(model, opt_state, x, y),
        lambda out: [out[0], *linear_answer(out[1].layers)],
    )


def _by_hand(mesh: Mesh, model: Any) -> list[NamedSharding]:
    """One `NamedSharding` per array of the MLP, in leaf order: weights and
    biases split by rows, everything else replicated."""
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(model):
        if not isinstance(leaf, jax.Array):
            continue
        name = getattr(path[-1], "name", None)
        spec = PartitionSpec("model") if name in ("weight", "bias") else PartitionSpec()
        out.append(NamedSharding(mesh, spec))
    return out


def _floor(mesh: Mesh, model: Any, x: Any, y: Any) -> Contender:
    optim = optimiser()
    arrays, rebuild = split_arrays(model)
    opt_arrays, rebuild_opt = split_arrays(optim.init(arrays))
    param_shardings = _by_hand(mesh, rebuild(arrays))
    # The momentum of each array is placed like the array; the state holds
    # nothing else (SGD's momentum trace is one array per parameter).
    opt_shardings = param_shardings
    assert len(opt_arrays) == len(arrays)
    batch = NamedSharding(mesh, PartitionSpec("data"))
    arrays = jax.device_put(arrays, param_shardings)
    opt_arrays = jax.device_put(opt_arrays, opt_shardings)
    x, y = jax.device_put((x, y), batch)
    constrain = jax.lax.with_sharding_constraint

    @jax.jit
    def step(arrays: list, opt_arrays: list, x: jax.Array, y: jax.Array) -> Any:
        value, grads = jax.value_and_grad(lambda a: loss(rebuild(a), x, y))(arrays)
        updates, opt_state = optim.update(grads, rebuild_opt(opt_arrays))
        new_arrays = constrain(optax.apply_updates(arrays, updates), param_shardings)
        new_opt = constrain(jax.tree_util.tree_leaves(opt_state), opt_shardings)
        return value, new_arrays, new_opt

    return contender(
        FLOOR,
        lambda: step(arrays, opt_arrays, x, y),
        lambda out: [out[0], *linear_answer(rebuild(out[1]).layers)],
    )


def build(depth: int, peers: Collection[str] = PEERS) -> Setup:
    """The case for an MLP of `depth` hidden layers."""
    ptm = pytreemod_features(
        "nn.MLP", "filter_jit", "filter_value_and_grad", "sharding.shard"
    )
    mesh = _mesh()
    x, y = batch_inputs()
    with building_pytreemod():
        model = library_mlp(ptm, depth, canonical_params(depth))
        mine = _pytreemod(ptm, mesh, model, x, y)
    floor = _floor(mesh, model, x, y)
    _, absent = build_peers({}, peers)  # no peer has logical-axis sharding
    arrays = split_arrays(model)[0]
    leaves = len(arrays) + len(jax.tree_util.tree_leaves(optimiser().init(arrays)))
    return Setup(leaves, [mine, floor], absent)


CASE = Case(
    name="sharded_step",
    summary="train_step placed by sharding.shard vs NamedShardings by hand",
    size_label="depth",
    sizes=(2, 8, 32),
    quick_sizes=(8,),
    build=build,
)
