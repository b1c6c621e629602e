"""`replace`: every selected submodule swapped for a function of it."""

from collections.abc import Callable
from typing import Any, TypeVar

from ._edit import rebuild, selected_nodes

_T = TypeVar("_T")


def replace(
    tree: _T,
    selection: Any,
    fn: Callable[[Any], Any],
    *,
    missing_ok: bool = False,
    check_types: bool = True,
) -> _T:
    r"""A copy of `tree` with each selected submodule `sub` replaced by
    `fn(sub)`: wrap it, swap it for another layer, or remove it (replace it
    by an identity such as `nn.Identity()`).

    The selection is a `pytreemod.select` selector, a key-path pattern or a
    type, as everywhere in pytreemod; `fn` is called on the outermost
    selected subtrees (those `Selector.nodes` gives), so selecting a block
    does not also replace the layers inside it. Everything off the selected
    paths is returned as the very same objects.

    Inside an `nn.Stacked`, whose layers are held as one layer with stacked
    arrays, `fn` is called once per layer on an ordinary (unstacked) layer,
    and the results are stacked again: the replacement keeps the leading
    layer axis on every array, and must give every layer the same structure.

    Args:
        tree: a model, or any pytree.
        selection: which submodules to replace.
        fn: `old submodule -> new submodule`.
        missing_ok: allow a selection that matches nothing (then `tree` is
            returned unchanged).
        check_types: check that a Module field declared as a plain class
            (`proj: nn.Linear`) still holds an instance of it.

    Returns:
        The edited copy; `tree` itself is unchanged.

    Raises:
        ValueError: if the selection matches nothing (unless `missing_ok`),
            or a replacement inside an `nn.Stacked` differs between layers;
            the message names the path.
        TypeError: if a replacement breaks a field's declared type, naming
            the path, the field and its type.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> from pytreemod import select, surgery
        >>> model = ptm.nn.Sequential([
        ...     ptm.nn.Linear(3, 8, key=jax.random.key(0)),
        ...     ptm.nn.Dropout(0.5),
        ...     ptm.nn.Linear(8, 2, key=jax.random.key(1)),
        ... ])
        >>> plain = surgery.replace(model, ptm.nn.Dropout, lambda _: ptm.nn.Identity())
        >>> [type(layer).__name__ for layer in plain.layers]
        ['Linear', 'Identity', 'Linear']
        >>> plain.layers[0] is model.layers[0]  # the rest is untouched
        True
    """
    _, nodes = selected_nodes(selection, tree, missing_ok=missing_ok)
    edits = {node.path: fn for node in nodes}
    return rebuild(tree, edits, check_types=check_types)
