"""Which process writes which shard of a save on many processes.

Every process computes the same plan from what all of them know alike: the
global shape and sharding of every array. An array split across processes
has one shard per distinct box of `sharding.devices_indices_map`, held by the
processes whose devices hold that box; anything else (a NumPy array, a Python
number, a `jax.Array` that lives on one process's devices) is one shard, held
by every process alike (by the convention that all processes call `save`
with the same values). Each shard is written by exactly one of its holders:
the one with the fewest bytes to write so far, the lowest process index on a
tie, so replicated arrays spread over the processes instead of all landing
on process 0.
"""

import dataclasses
import math
from typing import Any

import jax
import numpy as np

Box = tuple[tuple[int, ...], tuple[int, ...]]  # (start, stop)


@dataclasses.dataclass(frozen=True)
class PlannedShard:
    start: tuple[int, ...]
    stop: tuple[int, ...]
    owner: int
    member: str

    @property
    def box(self) -> Box:
        return self.start, self.stop


def box_of(index: tuple, shape: tuple[int, ...]) -> Box:
    """The `(start, stop)` box of a tuple of slices over `shape`."""
    start, stop = [], []
    for dim, size in enumerate(shape):
        part = index[dim] if dim < len(index) else slice(None)
        a, b, step = part.indices(size)
        if step != 1:  # pragma: no cover - JAX shardings never step
            raise ValueError(f"a shard with step {step} cannot be saved")
        start.append(a)
        stop.append(max(a, b))
    return tuple(start), tuple(stop)


def spans_processes(leaf: Any) -> bool:
    """Whether `leaf` is a `jax.Array` whose shards live on several processes
    (so that no single process can read all of it)."""
    return isinstance(leaf, jax.Array) and not leaf.is_fully_addressable


def _held(leaf: Any, processes: int) -> list[tuple[Box, tuple[int, ...]]]:
    shape = tuple(np.shape(leaf))
    if not spans_processes(leaf):
        return [(((0,) * len(shape), shape), tuple(range(processes)))]
    holders: dict[Box, set[int]] = {}
    for device, index in leaf.sharding.devices_indices_map(shape).items():
        holders.setdefault(box_of(index, shape), set()).add(device.process_index)
    return sorted((box, tuple(sorted(who))) for box, who in holders.items())


def plan(leaves: list[Any], processes: int) -> list[list[PlannedShard]]:
    """The shards of each leaf, each with the process that writes it."""
    load = [0] * processes
    planned = []
    for number, leaf in enumerate(leaves):
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        itemsize = np.dtype(dtype).itemsize
        shards = []
        for position, (box, holders) in enumerate(_held(leaf, processes)):
            owner = min(holders, key=lambda p: (load[p], p))
            start, stop = box
            size = math.prod(b - a for a, b in zip(start, stop, strict=True))
            load[owner] += size * itemsize
            shards.append(
                PlannedShard(start, stop, owner, f"leaves/{number}/{position}")
            )
        planned.append(shards)
    return planned


def shard_data(leaf: Any, shard: PlannedShard) -> np.ndarray:
    """The values of `shard`, from this process's part of `leaf`."""
    if not spans_processes(leaf):
        return np.asarray(leaf)
    shape = tuple(leaf.shape)
    for local in leaf.addressable_shards:
        if box_of(local.index, shape) == shard.box:
            return np.asarray(local.data)
    raise RuntimeError(  # pragma: no cover - the plan only assigns held shards
        f"this process holds no shard {shard.box} of an array it was asked to "
        "write; every process must call `save` with the same arrays"
    )
