"""`filter_shard`: place the arrays of any pytree on devices according to a
sharding, eagerly or inside `jit`.

Inside `jit` the sharding of a traced array is set by one of two JAX
functions, depending on the mesh's axis types: `jax.lax.with_sharding_constraint`
for `Auto` axes (a hint to the compiler), `jax.sharding.reshard` for
`Explicit` axes (part of the array's type; `with_sharding_constraint` refuses
them). A spec on a mesh with both kinds is split between the two.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.tree_util as jtu
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from .._module._is_array import is_array
from ._filters import _flatten_up_to

__all__ = ["filter_shard"]

_NOT_A_PREFIX = """\
`device_or_shardings` is not a prefix of `x`: at `x{path}` it has
{spec_side}
but `x` has
{tree_side}.
Pass a single device or sharding to use it for every array, or a pytree that
matches `x` down to its own leaves (devices, shardings or `None`), e.g.
    shardings = jax.tree_util.tree_map(lambda _: replicated, model)
    shardings = pytreemod.tree_at(lambda m: m.weight, shardings, row_sharded)"""

_BAD_SHARDING = (
    "`device_or_shardings` leaves must be a `jax.Device`, a "
    "`jax.sharding.Sharding` or `None`; got {got!r} of type `{type}` at "
    "`device_or_shardings{path}`. (A `PartitionSpec` needs its mesh: wrap it "
    "as `jax.sharding.NamedSharding(mesh, spec)`.)"
)


def _is_sharding_leaf(x: Any) -> bool:
    return x is None or isinstance(x, (jax.Device, jax.sharding.Sharding))


def _resolve_shardings(spec: Any, x: Any) -> list[Any]:
    """The sharding (or `None`) for every leaf of `x`, from the prefix `spec`."""
    spec_leaves, spec_def = jtu.tree_flatten_with_path(spec, is_leaf=_is_sharding_leaf)
    for path, leaf in spec_leaves:
        if not _is_sharding_leaf(leaf):
            raise ValueError(
                _BAD_SHARDING.format(
                    got=leaf, type=type(leaf).__name__, path=jtu.keystr(path)
                )
            )
    subtrees = _flatten_up_to(
        spec_def,
        spec,
        x,
        _is_sharding_leaf,
        lambda path, spec_side, tree_side: _NOT_A_PREFIX.format(
            path=jtu.keystr(path), spec_side=spec_side, tree_side=tree_side
        ),
        catch=(ValueError, TypeError),
    )
    shardings = []
    for (_, leaf), subtree in zip(spec_leaves, subtrees, strict=True):
        if isinstance(leaf, jax.Device):
            leaf = jax.sharding.SingleDeviceSharding(leaf)
        shardings.extend([leaf] * len(jtu.tree_leaves(subtree)))
    return shardings


def _keep_axes(entry: Any, keep: Callable[[str], bool]) -> Any:
    """One dimension's entry of a `PartitionSpec`, with only the axes `keep`s."""
    if entry is None or entry is PartitionSpec.UNCONSTRAINED:
        return entry
    names = entry if isinstance(entry, tuple) else (entry,)
    kept = tuple(name for name in names if keep(name))
    if not kept:
        return None
    return kept if isinstance(entry, tuple) else kept[0]


def _constrain(x: Any, sharding: Any) -> Any:
    """Give the traced array `x` the sharding `sharding`."""
    if not isinstance(sharding, NamedSharding):
        return jax.lax.with_sharding_constraint(x, sharding)
    mesh = sharding.mesh
    explicit = {
        name
        for name, kind in zip(mesh.axis_names, mesh.axis_types, strict=True)
        if kind == AxisType.Explicit
    }
    if not explicit:
        return jax.lax.with_sharding_constraint(x, sharding)
    explicit_spec = PartitionSpec(
        *(_keep_axes(entry, lambda n: n in explicit) for entry in sharding.spec)
    )
    x = jax.sharding.reshard(x, NamedSharding(mesh, explicit_spec))
    if len(explicit) < len(mesh.axis_names):  # the mesh has Auto axes too
        auto_spec = PartitionSpec(
            *(_keep_axes(entry, lambda n: n not in explicit) for entry in sharding.spec)
        )
        x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, auto_spec))
    return x


def _from_one_process(leaf: Any, sharding: Any) -> bool:
    """Whether `leaf` is a `jax.Array` on this process's devices only, to be
    placed on devices of several processes (JAX's multi-controller runtime)."""
    return (
        isinstance(leaf, jax.Array)
        and leaf.is_fully_addressable
        and not sharding.is_fully_addressable
    )


def _place_across_processes(x: jax.Array, sharding: Any) -> jax.Array:
    """`x`, which every process holds alike, placed on `sharding` from each
    process's own copy. `jax.device_put` would move a committed array between
    processes, which JAX's CPU backend cannot do ("does not support
    cross-host device transfers", or "input arrays must have one shard
    each"); here each process only slices its copy for its own devices."""
    shape = x.shape
    parts = [
        jax.device_put(x[index], device)
        for device, index in sharding.addressable_devices_indices_map(shape).items()
    ]
    return jax.make_array_from_single_device_arrays(shape, sharding, parts)


def filter_shard(x: Any, device_or_shardings: Any) -> Any:
    """Give the array leaves of `x` a sharding, leaving every other leaf alone.

    Outside `jit` the arrays are moved with `jax.device_put`; on JAX's
    multi-controller runtime an array that lives on one process's devices
    and is placed on devices of several processes is taken to be the same on
    every process (as after building the model from the same key), and each
    process places its own copy's slices on its own devices. Inside `jit`
    (traced arrays) the sharding is imposed with
    `jax.lax.with_sharding_constraint` on a mesh's `Auto` axes and with
    `jax.sharding.reshard` on its `Explicit` axes, so it works on meshes of
    either kind (and on one that mixes them). An `Explicit` sharding is part of
    an array's type: to shard inside `jit` arrays that start on one device,
    run under `jax.set_mesh(mesh)`, as JAX asks.

    Args:
        x: any pytree, such as a Module.
        device_or_shardings: a `jax.Device`, a `jax.sharding.Sharding`, or a
            pytree prefix of `x` whose leaves are those (or `None`, to leave
            that subtree as it is).

    Returns:
        `x` with its arrays sharded as asked.

    Raises:
        ValueError: if `device_or_shardings` is not a prefix of `x`, or one of
            its leaves is neither a device, a sharding nor `None`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> cpu = jax.devices("cpu")[0]
        >>> params = {"w": jnp.ones(3), "act": "relu"}
        >>> out = pytreemod.filter_shard(params, cpu)
        >>> out["w"].sharding == jax.sharding.SingleDeviceSharding(cpu), out["act"]
        (True, 'relu')
    """
    leaves, treedef = jtu.tree_flatten(x)
    shardings = _resolve_shardings(device_or_shardings, x)
    traced, concrete = [], []
    for index, (leaf, sharding) in enumerate(zip(leaves, shardings, strict=True)):
        if sharding is None or not is_array(leaf):
            continue
        group = traced if isinstance(leaf, jax.core.Tracer) else concrete
        group.append((index, leaf, sharding))
    new_leaves = list(leaves)
    for i, leaf, sharding in traced:
        new_leaves[i] = _constrain(leaf, sharding)
    local = [
        (i, leaf, sharding)
        for i, leaf, sharding in concrete
        if _from_one_process(leaf, sharding)
    ]
    for i, leaf, sharding in local:
        new_leaves[i] = _place_across_processes(leaf, sharding)
    concrete = [c for c in concrete if not _from_one_process(c[1], c[2])]
    if concrete:
        indices, arrays, targets = zip(*concrete, strict=True)
        placed = jax.device_put(list(arrays), list(targets))
        for i, y in zip(indices, placed, strict=True):
            new_leaves[i] = y
    return treedef.unflatten(new_leaves)
