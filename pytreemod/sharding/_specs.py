"""`logical_specs`: the logical axis names of every array of a pytree.

Names come from, in this order: the first rule whose pattern matches the
array's key path; `like`'s array at the longest key-path suffix with the same
shape (for optimiser states); the `axes` of the Module fields on the way down
(`field(axes=...)`: a field holding a subtree names the leading dimensions of
every array below it, as `nn.Stacked` does for its layer axis).
"""

import dataclasses
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np
from jax.sharding import PartitionSpec

from .._module._field import AXES, check_axes
from .._module._is_array import is_array
from .._module._module import Module
from ..select._rules import Rule, first_matches
from ._rules import RulesLike, parse_rules

__all__ = ["logical_specs"]

_WRONG_NUMBER = """\
The array at `{path}` has shape {shape} ({ndim} dimension{s}), but {source}
names {count} axes: {axes}. Give one logical name (or `None`) per dimension{hint}."""

_OPTIMISER_HINT = """\
.
If this pytree is an optimiser state (its arrays may be shaped unlike the
parameters they belong to), place it by the model's names instead:
    pytreemod.sharding.shard(opt_state, mesh, axis_rules, like=model)"""


def is_array_leaf(x: Any) -> bool:
    """What `logical_specs` names: arrays, tracers and `ShapeDtypeStruct`s."""
    return is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else tuple(np.shape(x))


@dataclasses.dataclass(frozen=True)
class _Named:
    """Logical names on the way down: `axes` from `source` (for errors)."""

    axes: tuple[str | None, ...]
    source: str


def _spec(path: str, shape: tuple, axes: Any, source: str, hint: str) -> Any:
    if axes is None:
        return PartitionSpec()
    if len(axes) != len(shape):
        raise ValueError(
            _WRONG_NUMBER.format(
                path=path,
                shape=shape,
                ndim=len(shape),
                s="" if len(shape) == 1 else "s",
                source=source,
                count=len(axes),
                axes=axes,
                hint=hint,
            )
        )
    named = [name for name in axes if name is not None]
    for name in named:
        if named.count(name) > 1:
            raise ValueError(
                f"The array at `{path}` names two dimensions {name!r} ({source}: "
                f"{axes}); each logical name may appear once per array."
            )
    if not named:
        return PartitionSpec()
    return PartitionSpec(*axes)


def _from_fields(
    node: Any, path: tuple, leading: tuple[_Named, ...], own: _Named | None
) -> Any:
    """`node` with each array replaced by its `PartitionSpec` from field axes:
    `leading` from the fields holding subtrees above it, `own` from the field
    holding the array itself."""
    if is_array_leaf(node):
        if not leading and own is None:
            return PartitionSpec()
        shape = _shape(node)
        names = [named for named in (*leading, own) if named is not None]
        axes = tuple(name for named in names for name in named.axes)
        if own is None and len(axes) < len(shape):  # the rest unnamed
            axes = axes + (None,) * (len(shape) - len(axes))
        source = " and ".join(named.source for named in names)
        return _spec(jtu.keystr(path), shape, axes, source, _OPTIMISER_HINT)
    entries, treedef = jtu.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if len(entries) == 1 and entries[0][0] == ():  # a leaf that is not an array
        return None
    fields = (
        {f.name: f for f in dataclasses.fields(node)}
        if isinstance(node, Module)
        else {}
    )
    out = []
    for (key,), child in entries:
        named = None
        name = getattr(key, "name", None)
        if name in fields and AXES in fields[name].metadata:
            axes = fields[name].metadata[AXES]
            where = f"`{type(node).__name__}.{name}`"
            if callable(axes):
                axes = axes(node)
                if axes is not None:
                    axes = check_axes(axes, f"the `axes` function of {where}")
            if axes is not None:
                named = _Named(tuple(axes), f"the field {where}")
        if is_array_leaf(child):
            out.append(_from_fields(child, (*path, key), leading, named))
        else:
            more = leading if named is None else (*leading, named)
            out.append(_from_fields(child, (*path, key), more, None))
    return treedef.unflatten(out)


def logical_specs(
    tree: Any,
    rules: RulesLike | None = None,
    *,
    like: Any = None,
    missing_ok: bool = False,
) -> Any:
    """The logical axis names of every array in `tree`, as `PartitionSpec`s.

    Each array (a `jax.Array`, NumPy array, tracer or `ShapeDtypeStruct`)
    gets a `PartitionSpec` of logical names, such as `P("mlp", "embed")`;
    an array nobody names gets `P()` (replicated). Every other leaf becomes
    `None`. Names come from, first match wins:

    1. `rules`: an ordered list of `(selection, axes)` pairs, the ordered
       rules of `pytreemod.select`. A selection is a key-path pattern (a
       Python regular expression that must match the *whole* key path as
       `jax.tree_util.keystr` writes it, e.g. `.layers[0].weight` or
       `['w']`: `r".*\\.weight"` matches every field named `weight`; a
       match at a submodule names every array below it), a type, or any
       `pytreemod.select` selector (`select.instance(nn.Linear) &
       select.field("weight")`). `axes` names every dimension (a tuple of
       `str`/`None`), or is `None` to leave the array unnamed. Rules work on
       any pytree, including classes you do not own. A rule that matches
       nothing is an error (a typo is the usual cause) unless
       `missing_ok=True`.
    2. `like` (for optimiser states): each array takes the names of `like`'s
       array whose key path is the longest suffix of its own and whose shape
       equals its own (so `[0].mu.layers[0].weight` follows
       `.layers[0].weight`); `rules` then apply to `like`, not to `tree`.
       Arrays with no such match are unnamed.
    3. `pytreemod.field(axes=...)` on the Module fields above the array: an
       array field's own names, after the leading names of any field holding
       the subtree it is in (as `nn.Stacked` names its layer axis).

    Args:
        tree: any pytree, e.g. a model, an abstract model from
            `filter_eval_shape`, or an optimiser state.
        rules: `(selection, axes)` pairs, or `None`.
        like: a model whose names `tree`'s arrays follow by key-path suffix.
        missing_ok: allow rules that match nothing.

    Returns:
        A pytree of `tree`'s structure, with a `PartitionSpec` for every array
        and `None` for every other leaf.

    Raises:
        ValueError: if the names of an array do not match its number of
            dimensions, a name appears twice in one array, a rule's pattern
            is not a regular expression, or a rule matches nothing.
        TypeError: if `rules` is not a list of `(pattern, axes)` pairs.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> from pytreemod.sharding import logical_specs
        >>> class Mlp(pytreemod.Module):
        ...     up: jnp.ndarray = pytreemod.field(axes=("mlp", "embed"))
        ...     down: jnp.ndarray
        ...     act: str = pytreemod.field(static=True, default="relu")
        >>> model = Mlp(jnp.ones((8, 4)), jnp.ones((4, 8)))
        >>> logical_specs(model)
        Mlp(up=P('mlp', 'embed'), down=P())
        >>> logical_specs(model, rules=[(r"\\.down", ("embed", "mlp"))]).down
        P('embed', 'mlp')
    """
    return _logical_specs(tree, parse_rules(rules), like, missing_ok)


def _logical_specs(
    tree: Any, parsed: tuple[Rule, ...], like: Any, missing_ok: bool
) -> Any:
    if like is not None:
        return _by_suffix(tree, like, parsed, missing_ok)
    base = _from_fields(tree, (), (), None)
    is_spec = lambda x: x is None or isinstance(x, PartitionSpec)
    specs = jtu.tree_leaves(base, is_leaf=is_spec)
    # `None` in `tree` is an empty node to JAX, but has a `None` spec in `base`.
    entries, treedef = jtu.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    matched = iter(first_matches(tree, parsed, missing_ok=missing_ok))
    out: list[Any] = []
    for (path, leaf), spec in zip(entries, specs, strict=True):
        rule = None if leaf is None else next(matched)
        if not is_array_leaf(leaf):
            out.append(None)
        elif rule is None:
            out.append(spec)
        else:
            where = jtu.keystr(path)
            out.append(_spec(where, _shape(leaf), rule.value, rule.describe(), ""))
    return jtu.tree_unflatten(treedef, out)


def _by_suffix(tree: Any, like: Any, rules: Any, missing_ok: bool) -> Any:
    """`tree`'s specs taken from `like`'s arrays by longest key-path suffix
    of the same shape."""
    is_spec = lambda x: x is None or isinstance(x, PartitionSpec)
    specs = jtu.tree_leaves(
        _logical_specs(like, rules, None, missing_ok), is_leaf=is_spec
    )
    # Keyed by the last key, so that each array looks at a few candidates.
    known: dict[Any, list[tuple[tuple, tuple, Any]]] = {}
    paths = jtu.tree_leaves_with_path(like, is_leaf=lambda x: x is None)
    for (path, leaf), spec in zip(paths, specs, strict=True):
        if is_array_leaf(leaf) and path:
            known.setdefault(path[-1], []).append((tuple(path), _shape(leaf), spec))

    def one(path: tuple, leaf: Any) -> Any:
        if not is_array_leaf(leaf):
            return None
        best, best_length = PartitionSpec(), -1
        for like_path, shape, spec in known.get(path[-1], ()) if path else ():
            n = len(like_path)
            if n > best_length and tuple(path[-n:]) == like_path:
                if shape == _shape(leaf):
                    best, best_length = spec, n
        return best

    return jtu.tree_map_with_path(one, tree)
