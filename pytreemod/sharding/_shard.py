"""`shard` and `named_shardings`: logical names mapped to mesh axes.

`axis_rules` maps each logical name to a mesh axis, a tuple of mesh axes, or
`None` (not sharded): `{"batch": "data", "mlp": "model", "embed": None}`.
Placement itself is `filter_shard`'s: `jax.device_put` outside `jit`, a
sharding constraint inside (`with_sharding_constraint` on `Auto` mesh axes,
`reshard` on `Explicit` ones).
"""

import math
from collections.abc import Mapping
from typing import Any, TypeVar

import jax
import jax.tree_util as jtu
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._transform._shard import filter_shard
from ._rules import RulesLike
from ._specs import is_array_leaf, logical_specs

__all__ = ["named_shardings", "shard"]

_T = TypeVar("_T")

_UNKNOWN_NAME = """\
The array at `{path}` has the logical axis name {name!r} (in {spec}), which
`axis_rules` does not map. Map every logical name the model uses, to a mesh
axis or to `None` (not sharded), e.g.
    axis_rules = {{{example}}}
`axis_rules` has: {known}."""

_INDIVISIBLE = """\
The array at `{path}` has shape {shape}: its dimension {dim} (size {size}, \
logical name {name!r}) is
not divisible by the mesh axes {axes} (total size {parts}) of the mesh \
{mesh}.
Choose sizes that the mesh divides, map {name!r} to another mesh axis, or to
`None` to leave the dimension whole."""


def _check_axis_rules(axis_rules: Any, mesh: Mesh) -> dict[str, tuple[str, ...]]:
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"`mesh` must be a `jax.sharding.Mesh`, e.g. `jax.make_mesh((2, 4), "
            f"('data', 'model'))`; got {mesh!r} of type {type(mesh).__name__}."
        )
    if not isinstance(axis_rules, Mapping):
        raise TypeError(
            "`axis_rules` must be a mapping from logical names to mesh axes, "
            f"e.g. {{'batch': 'data', 'mlp': 'model', 'embed': None}}; got "
            f"{axis_rules!r}."
        )
    resolved = {}
    for name, target in axis_rules.items():
        if target is None:
            axes: tuple = ()
        elif isinstance(target, str):
            axes = (target,)
        elif isinstance(target, (tuple, list)) and all(
            isinstance(a, str) for a in target
        ):
            axes = tuple(target)
        else:
            raise TypeError(
                f"`axis_rules[{name!r}]` must be a mesh axis name, a tuple of "
                f"them, or `None`; got {target!r}."
            )
        for axis in axes:
            if axis not in mesh.axis_names:
                raise ValueError(
                    f"`axis_rules[{name!r}]` is {target!r}, but the mesh has no "
                    f"axis {axis!r}: its axes are {tuple(mesh.axis_names)}."
                )
        resolved[name] = axes
    return resolved


def _mesh_spec(
    path: str,
    shape: tuple[int, ...],
    logical: PartitionSpec,
    axis_rules: dict[str, tuple[str, ...]],
    mesh: Mesh,
) -> PartitionSpec:
    entries: list[Any] = []
    used: dict[str, str] = {}
    for dim, name in enumerate(logical):
        if name is None:
            entries.append(None)
            continue
        if name not in axis_rules:
            example = ", ".join(
                [
                    f"{k!r}: {v[0]!r}" if v else f"{k!r}: None"
                    for k, v in axis_rules.items()
                ]
                + [f"{name!r}: None"]
            )
            raise ValueError(
                _UNKNOWN_NAME.format(
                    path=path,
                    name=name,
                    spec=logical,
                    example=example,
                    known=sorted(axis_rules) or "nothing",
                )
            )
        axes = axis_rules[name]
        for axis in axes:
            if axis in used:
                raise ValueError(
                    f"The array at `{path}` ({logical}) maps both {used[axis]!r} "
                    f"and {name!r} to the mesh axis {axis!r}; an array can be "
                    "split along a mesh axis only once. Map one of them to "
                    "another axis or to `None` in `axis_rules`."
                )
            used[axis] = name
        parts = math.prod(mesh.shape[axis] for axis in axes)
        if shape[dim] % parts:
            raise ValueError(
                _INDIVISIBLE.format(
                    path=path,
                    shape=shape,
                    dim=dim,
                    size=shape[dim],
                    name=name,
                    axes=axes,
                    parts=parts,
                    mesh=dict(mesh.shape),
                )
            )
        entries.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while entries and entries[-1] is None:
        entries.pop()
    return PartitionSpec(*entries)


def named_shardings(
    tree: Any,
    mesh: Mesh,
    axis_rules: Mapping[str, str | tuple[str, ...] | None],
    rules: RulesLike | None = None,
    *,
    like: Any = None,
    missing_ok: bool = False,
) -> Any:
    """The `NamedSharding` of every array of `tree` on `mesh`, from its
    logical names (see `logical_specs`) and `axis_rules`.

    Args:
        tree: any pytree.
        mesh: the `jax.sharding.Mesh` to place on.
        axis_rules: logical name -> mesh axis, tuple of mesh axes, or `None`.
        rules: `(selection, axes)` pairs, as for `logical_specs`.
        like: a model whose names `tree` follows by key-path suffix (an
            optimiser state), as for `logical_specs`.
        missing_ok: allow rules that match nothing.

    Returns:
        A pytree of `tree`'s structure, a `NamedSharding` for every array
        (unnamed arrays replicated) and `None` for every other leaf; ready for
        `jax.jit(..., out_shardings=...)` or `pytreemod.load(shardings=...)`.

    Raises:
        ValueError: as `shard`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from pytreemod.sharding import named_shardings
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> tree = {"w": jnp.ones((4, 2)), "n": 3}
        >>> rules = [(r".*'w'.*", ("mlp", None))]
        >>> out = named_shardings(tree, mesh, {"mlp": "model"}, rules)
        >>> out["w"].spec, out["n"]
        (P('model',), None)
    """
    resolved = _check_axis_rules(axis_rules, mesh)
    specs = logical_specs(tree, rules, like=like, missing_ok=missing_ok)

    def one(path: tuple, leaf: Any, spec: Any) -> Any:
        if not is_array_leaf(leaf):
            return None
        shape = tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)
        mesh_spec = _mesh_spec(jtu.keystr(path), shape, spec, resolved, mesh)
        return NamedSharding(mesh, mesh_spec)

    return jtu.tree_map_with_path(one, tree, specs, is_leaf=lambda x: x is None)


def shard(
    tree: _T,
    mesh: Mesh,
    axis_rules: Mapping[str, str | tuple[str, ...] | None],
    rules: RulesLike | None = None,
    *,
    like: Any = None,
    missing_ok: bool = False,
) -> _T:
    """Place every array of `tree` on `mesh` by its logical axis names.

    Each array gets `NamedSharding(mesh, spec)` where `spec` maps its logical
    names (`pytreemod.field(axes=...)`, `rules`, or `like`: see
    `logical_specs`) through `axis_rules`; arrays without names are
    replicated; other leaves are left alone. Outside `jit` the arrays are
    moved with `jax.device_put`; inside `jit` (or `filter_jit`) it is a
    sharding constraint, on `Auto` and `Explicit` meshes alike (see
    `pytreemod.filter_shard`). A `ShapeDtypeStruct` (an abstract model from
    `filter_eval_shape`) gets the sharding as its `.sharding`, ready to be the
    `like` of `pytreemod.load`.

    Optimiser states: the arrays of an optax state built from `model` follow
    the model's names with `shard(opt_state, mesh, axis_rules, like=model)`
    (pass the model's `rules` too): `mu` and `nu` are placed like their
    parameters, by key-path suffix and shape; the step count is replicated.

    Args:
        tree: any pytree: a model, an abstract model, an optimiser state.
        mesh: a `jax.sharding.Mesh`.
        axis_rules: logical name -> mesh axis name, a tuple of them (split
            over several mesh axes), or `None` (that dimension not sharded),
            e.g. `{"batch": "data", "mlp": "model", "embed": None}`.
        rules: `(selection, axes)` pairs naming arrays by key path, type or
            any `pytreemod.select` selection (see `logical_specs`), for
            classes you do not own.
        like: a model whose names `tree`'s arrays follow (optimiser states).
        missing_ok: allow rules that match nothing.

    Returns:
        `tree` with every array placed (or constrained).

    Raises:
        ValueError: if an array uses a logical name `axis_rules` does not map,
            a mesh axis does not divide the dimension it shards (naming the
            key path, the shape and the mesh), two dimensions of one array map
            to one mesh axis, `axis_rules` names an axis `mesh` lacks, or a
            rule matches nothing (unless `missing_ok`).
        TypeError: if `mesh`, `axis_rules` or `rules` is of the wrong kind.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod
        >>> from pytreemod.sharding import shard
        >>> class Mlp(pytreemod.Module):
        ...     up: jax.Array = pytreemod.field(axes=("mlp", "embed"))
        ...     bias: jax.Array
        >>> mesh = jax.make_mesh((1,), ("model",))
        >>> model = shard(Mlp(jnp.ones((8, 4)), jnp.ones(8)), mesh,
        ...               {"mlp": "model", "embed": None})
        >>> model.up.sharding.spec, model.bias.sharding.spec
        (P('model',), P())
    """
    shardings = named_shardings(
        tree, mesh, axis_rules, rules, like=like, missing_ok=missing_ok
    )

    def abstract(leaf: Any, sharding: Any) -> Any:
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(
                leaf.shape, leaf.dtype, sharding=sharding, weak_type=leaf.weak_type
            )
        return leaf

    tree = jtu.tree_map(abstract, tree, shardings, is_leaf=lambda x: x is None)
    return filter_shard(tree, shardings)
