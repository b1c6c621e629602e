"""`filter_shard`: place the arrays of any pytree on devices according to a
sharding, eagerly or inside `jit`."""

from typing import Any

import jax
import jax.tree_util as jtu

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


def filter_shard(x: Any, device_or_shardings: Any) -> Any:
    """Give the array leaves of `x` a sharding, leaving every other leaf alone.

    Outside `jit` the arrays are moved with `jax.device_put`; inside `jit`
    (traced arrays) the sharding is imposed with
    `jax.lax.with_sharding_constraint`.

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
    if traced:
        indices, arrays, targets = zip(*traced, strict=True)
        placed = jax.lax.with_sharding_constraint(list(arrays), list(targets))
        for i, y in zip(indices, placed, strict=True):
            new_leaves[i] = y
    if concrete:
        indices, arrays, targets = zip(*concrete, strict=True)
        placed = jax.device_put(list(arrays), list(targets))
        for i, y in zip(indices, placed, strict=True):
            new_leaves[i] = y
    return treedef.unflatten(new_leaves)
