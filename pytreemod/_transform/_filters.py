"""Split a pytree into two by a filter, and join the halves back together.

`filter` keeps the leaves a `filter_spec` selects and puts `replace` (by default
`None`) in place of the others; `partition` does both halves at once; `combine`
rejoins halves by taking, position by position, the first leaf that is not
`None`. The filtered transforms are built on these three.

A `filter_spec` is a bool, a callable `leaf -> bool`, or a pytree whose structure
is a prefix of the pytree's and whose leaves are bools or callables: each spec
leaf decides for the whole subtree at its position.
"""

import types
from collections.abc import Callable, Sequence
from typing import Any

import jax.tree_util as jtu

__all__ = ["combine", "filter", "partition"]

_IsLeaf = Callable[[Any], bool] | None

# Kinds of spec leaf that can be recognised without flattening the spec.
_PLAIN_CALLABLES = (types.FunctionType, types.BuiltinFunctionType)

_NOT_A_PREFIX = """\
`filter_spec` is not a prefix of the pytree: at `{path}` the filter_spec has
{spec_side}
but the pytree has
{tree_side}.
A filter_spec must match the pytree's structure down to its own leaves, which
are bools or callables `leaf -> bool` that decide for the subtree below them.
Either
  1. pass a single bool or callable, such as `pytreemod.is_array`, to apply it
     to every leaf; or
  2. build the spec from the pytree itself, so that the structures agree:
         spec = jax.tree_util.tree_map(lambda _: False, pytree)
         spec = pytreemod.tree_at(lambda t: t.weight, spec, True)"""

_BAD_SPEC_LEAF = (
    "`filter_spec` leaves must be bools or callables `leaf -> bool`; got {got!r} "
    "(of type `{type}`) at `filter_spec{path}`."
)

_COMBINE_MISMATCH = """\
`combine` got pytrees of different structures: at `{path}` pytree 0 has
{first_side}
but pytree {index} has
{other_side}.
`combine` rejoins the halves made by `partition` or `filter`, which keep the
structure of the original pytree and put `None` where a leaf was filtered out.
Check that every pytree passed comes from the same original, for example
    dynamic, static = pytreemod.partition(model, pytreemod.is_array)
    model = pytreemod.combine(dynamic, static)"""

_COMBINE_NO_ARGS = (
    "`combine` needs at least one pytree; got none. Call it as "
    "`combine(dynamic, static)`."
)


def _is_none(x: Any) -> bool:
    return x is None


def _is_true_leaf(x: Any) -> bool:
    treedef = jtu.tree_structure(x)
    return treedef.num_nodes == 1 and treedef.num_leaves == 1


def _one_level(x: Any) -> tuple[list[tuple[Any, Any]], Any]:
    """Flatten `x` by one level: its children with their keys, and the treedef."""
    return jtu.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)


def _describe(x: Any) -> str:
    if x is None:
        return "    `None`"
    if _is_true_leaf(x):
        return f"    a leaf of type `{type(x).__name__}`"
    _, treedef = _one_level(x)
    return f"    a `{type(x).__name__}` node: {treedef}"


def _first_mismatch(
    prefix: Any, full: Any, prefix_is_leaf: Callable[[Any], bool], path: tuple = ()
) -> tuple[tuple, str, str] | None:
    """Find the first place where `prefix` is not a prefix of `full`.

    Returns the key path there and a description of each side, or `None` if
    `prefix` is a prefix of `full`. This is only used to explain an error, so
    it favours plainness over speed.
    """
    if prefix_is_leaf(prefix) or (prefix is not None and _is_true_leaf(prefix)):
        return None
    if prefix is None or full is None:
        if prefix is None and full is None:
            return None
        return path, _describe(prefix), _describe(full)
    prefix_children, prefix_def = _one_level(prefix)
    full_children, full_def = _one_level(full)
    if _is_true_leaf(full) or prefix_def != full_def:
        return path, _describe(prefix), _describe(full)
    for (key, p_child), (_, f_child) in zip(
        prefix_children, full_children, strict=True
    ):
        found = _first_mismatch(p_child, f_child, prefix_is_leaf, path + key)
        if found is not None:
            return found
    return None


def _flatten_up_to(
    prefix_def: Any,
    prefix: Any,
    full: Any,
    prefix_is_leaf: Callable[[Any], bool],
    explain: Callable[[tuple, str, str], str],
    catch: tuple[type[Exception], ...] = (ValueError,),
) -> list[Any]:
    """`prefix_def.flatten_up_to(full)`, where `prefix_def` is the structure
    of `prefix`, with a clear error when `prefix` is not a prefix of `full`.

    The error is a `ValueError` whose message is `explain(path, prefix_side,
    full_side)` for the first place they differ (see `_first_mismatch`); an
    error of a kind in `catch` that no mismatch explains is raised as it is.
    """
    try:
        return prefix_def.flatten_up_to(full)
    except catch as e:
        found = _first_mismatch(prefix, full, prefix_is_leaf)
        if found is None:
            raise
        raise ValueError(explain(*found)) from e


def _bad_spec_leaf_error(filter_spec: Any, bad: Any) -> ValueError:
    paths = [p for p, leaf in jtu.tree_flatten_with_path(filter_spec)[0] if leaf is bad]
    path = paths[0] if paths else ()
    message = _BAD_SPEC_LEAF.format(
        got=bad, type=type(bad).__name__, path=jtu.keystr(path)
    )
    return ValueError(message)


def _leaf_masks(spec: Any, subtree: Any, is_leaf: _IsLeaf, filter_spec: Any) -> Any:
    """Turn one spec leaf into a tree of bools with `subtree`'s structure."""
    if isinstance(spec, bool):
        return jtu.tree_map(lambda _: spec, subtree, is_leaf=is_leaf)
    if callable(spec):
        return jtu.tree_map(lambda x: bool(spec(x)), subtree, is_leaf=is_leaf)
    raise _bad_spec_leaf_error(filter_spec, spec)


def _flat_mask(
    pytree: Any, filter_spec: Any, is_leaf: _IsLeaf
) -> tuple[list[Any], list[bool], Any]:
    """Flatten `pytree` as far as `filter_spec` and `is_leaf` say, and decide each
    piece.

    Returns `(pieces, mask, treedef)`: `treedef.unflatten(pieces)` is `pytree`, and
    `mask[i]` says whether `filter_spec` keeps `pieces[i]`. The filtered
    transforms use this to split a pytree once and rebuild both halves.
    """
    if isinstance(filter_spec, bool):
        pieces, treedef = jtu.tree_flatten(pytree, is_leaf=is_leaf)
        return pieces, [filter_spec] * len(pieces), treedef
    if isinstance(filter_spec, _PLAIN_CALLABLES):
        pieces, treedef = jtu.tree_flatten(pytree, is_leaf=is_leaf)
        return pieces, [bool(filter_spec(x)) for x in pieces], treedef
    spec_leaves, spec_def = jtu.tree_flatten(filter_spec)
    if spec_def.num_nodes == 1 and spec_def.num_leaves == 1:
        # A single spec leaf that was not caught above, e.g. a `functools.partial`.
        mask_tree = _leaf_masks(filter_spec, pytree, is_leaf, filter_spec)
    else:
        subtrees = _flatten_up_to(
            spec_def,
            filter_spec,
            pytree,
            lambda _: False,
            lambda path, spec_side, tree_side: _NOT_A_PREFIX.format(
                path="pytree" + jtu.keystr(path),
                spec_side=spec_side,
                tree_side=tree_side,
            ),
        )
        mask_tree = spec_def.unflatten(
            [
                _leaf_masks(spec, sub, is_leaf, filter_spec)
                for spec, sub in zip(spec_leaves, subtrees, strict=True)
            ]
        )
    mask, treedef = jtu.tree_flatten(mask_tree)
    return treedef.flatten_up_to(pytree), mask, treedef


class _Static:
    """A box that carries any Python object through a JAX transform as treedef
    data: it is a pytree with no leaves, so a traced function can return it.

    The filtered transforms return the non-array part of an output in one.
    Boxes compare by identity, so a box is always hashable.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


jtu.register_pytree_node(_Static, lambda box: ((), box), lambda box, _: box)


def filter(
    pytree: Any,
    filter_spec: Any,
    inverse: bool = False,
    replace: Any = None,
    is_leaf: _IsLeaf = None,
) -> Any:
    """Keep the leaves of `pytree` that `filter_spec` selects; replace the rest.

    Args:
        pytree: any pytree.
        filter_spec: a bool, a callable `leaf -> bool`, or a pytree that is a
            prefix of `pytree` with bools or callables as leaves. Each spec leaf
            decides for every leaf of the subtree at its position.
        inverse: if `True`, keep the leaves that are *not* selected instead.
        replace: the value put in place of each leaf that is not kept.
        is_leaf: optional; treats the subtrees it returns `True` for as leaves
            (a callable spec is then called on the whole subtree).

    Returns:
        A pytree with the structure of `pytree`, holding the kept leaves and
        `replace` everywhere else.

    Raises:
        ValueError: if `filter_spec` is not a prefix of `pytree`, or one of its
            leaves is neither a bool nor a callable.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> pytreemod.filter((jnp.array(1.0), "relu", 3), pytreemod.is_array)
        (Array(1., dtype=float32, weak_type=True), None, None)
        >>> pytreemod.filter({"a": 1, "b": 2}, {"a": True, "b": False}, replace=0)
        {'a': 1, 'b': 0}
    """
    pieces, mask, treedef = _flat_mask(pytree, filter_spec, is_leaf)
    keep = not inverse
    return treedef.unflatten(
        [x if m is keep else replace for x, m in zip(pieces, mask, strict=True)]
    )


def partition(
    pytree: Any,
    filter_spec: Any,
    replace: Any = None,
    is_leaf: _IsLeaf = None,
) -> tuple[Any, Any]:
    """Split `pytree` in two by `filter_spec`; `combine` joins the halves again.

    Args:
        pytree: any pytree.
        filter_spec: as for `filter`: a bool, a callable `leaf -> bool`, or a
            prefix pytree of those.
        replace: the value that stands in for a leaf in the half it is not in.
        is_leaf: optional; treats the subtrees it returns `True` for as leaves.

    Returns:
        `(selected, rest)`: `filter(pytree, filter_spec)` and
        `filter(pytree, filter_spec, inverse=True)`, computed in one pass.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> tree = [jnp.ones(2), "tanh"]
        >>> params, static = pytreemod.partition(tree, pytreemod.is_array)
        >>> params, static
        ([Array([1., 1.], dtype=float32), None], [None, 'tanh'])
        >>> pytreemod.combine(params, static)[1]
        'tanh'
    """
    pieces, mask, treedef = _flat_mask(pytree, filter_spec, is_leaf)
    selected = [x if m else replace for x, m in zip(pieces, mask, strict=True)]
    rest = [replace if m else x for x, m in zip(pieces, mask, strict=True)]
    return treedef.unflatten(selected), treedef.unflatten(rest)


def _combine_error(pytrees: Sequence[Any], leaf_fn: Callable[[Any], bool]) -> Any:
    for index, other in enumerate(pytrees[1:], start=1):
        found = _first_mismatch(pytrees[0], other, leaf_fn)
        if found is not None:
            path, first_side, other_side = found
            message = _COMBINE_MISMATCH.format(
                path="pytree" + jtu.keystr(path),
                index=index,
                first_side=first_side,
                other_side=other_side,
            )
            return ValueError(message)
    return None


def combine(*pytrees: Any, is_leaf: _IsLeaf = None) -> Any:
    """Join pytrees of the same structure, taking at each position the first leaf
    that is not `None`.

    This undoes `partition`: `combine(*partition(tree, spec))` is `tree`.

    Args:
        *pytrees: pytrees with the structure of the first one, where a `None` in
            the first may stand for a whole subtree in the others.
        is_leaf: optional; treats the subtrees it returns `True` for (in the
            first pytree) as leaves.

    Returns:
        A pytree with the structure of the first pytree, holding at each leaf the
        first of the pytrees' values there that is not `None` (or `None` if all
        are).

    Raises:
        ValueError: if the pytrees do not have the same structure.

    Example:
        >>> import pytreemod
        >>> pytreemod.combine([1, None, None], [None, 2, None], [None, 5, 3])
        [1, 2, 3]
    """
    if not pytrees:
        raise TypeError(_COMBINE_NO_ARGS)
    if is_leaf is None:
        leaf_fn = _is_none
    else:
        leaf_fn = lambda x: x is None or is_leaf(x)  # noqa: E731
    first, *others = pytrees
    leaves, treedef = jtu.tree_flatten(first, is_leaf=leaf_fn)
    try:
        columns = [treedef.flatten_up_to(other) for other in others]
    except ValueError as e:
        error = _combine_error(pytrees, leaf_fn)
        if error is None:
            raise
        raise error from e
    if len(columns) == 1:
        (second,) = columns
        out = [a if a is not None else b for a, b in zip(leaves, second, strict=True)]
    else:
        out = list(leaves)
        for column in columns:
            out = [a if a is not None else b for a, b in zip(out, column, strict=True)]
    return treedef.unflatten(out)
