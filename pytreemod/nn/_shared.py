"""`Shared`, which ties nodes of a pytree together (weight tying)."""

from collections.abc import Callable
from typing import Any

from .._module._module import Module
from .._module._pformat import tree_pformat
from .._module._tree_at import tree_at
from .._module._tree_equal import tree_equal
from .._transform._eval_shape import filter_eval_shape

# The first sentence is Equinox's, on one line (libraries match on it).
SHARED_MISMATCH = (
    "Every node being shared together must have the same pytree structure, "
    "shape+dtype of arrays, etc., as each other."
    """
`Shared(pytree, where, get)` ties each node picked by `where` to the value
`get` returns in its place. Got
  get(pytree):   {source}
  where(pytree): {dest}
If one is the transpose of the other, transpose in `get`, e.g.
    get = lambda tree: tree[0].weight.T"""
)


class _SharedNode:
    """Stands in the tree for a node that `Shared` removed; `Shared()` puts the
    tied value back in its place."""

    def __repr__(self) -> str:
        return "SharedNode"

    # Every placeholder is alike, so that two models built the same way have
    # equal static parts (and `filter_jit` traces them once).
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SharedNode)

    def __hash__(self) -> int:
        return hash(_SharedNode)


class Shared(Module):
    """Tie some nodes of a pytree to others, so that they are one parameter.

    A pytree holds each array once per place it appears: putting the same
    `Linear` in two places gives two copies that train apart. `Shared` keeps
    one copy: at construction it removes the nodes that `where(pytree)` picks
    (a node or a sequence of nodes, as in `pytreemod.tree_at`), and calling it
    returns the pytree with `get(pytree)` put back in their place. Gradients
    through both uses then reach the one kept copy.

    Args:
        pytree: the pytree whose nodes to tie, e.g. a tuple of layers.
        where: picks the node(s) to replace, e.g.
            `lambda tree: tree[1].weight`.
        get: gives the value(s) to put there, e.g.
            `lambda tree: tree[0].weight`; same structure, shapes and dtypes
            as what `where` picks.

    Raises:
        ValueError: if `get(pytree)` and `where(pytree)` differ in structure,
            shape or dtype.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> k1, k2 = jax.random.split(jax.random.key(0))
        >>> embed = ptm.nn.Embedding(5, 3, key=k1)   # weight (5, 3)
        >>> unembed = ptm.nn.Linear(3, 5, key=k2)    # weight (5, 3)
        >>> shared = ptm.nn.Shared(
        ...     (embed, unembed),
        ...     where=lambda pair: pair[1].weight,
        ...     get=lambda pair: pair[0].weight,
        ... )
        >>> embed, unembed = shared()
        >>> embed.weight is unembed.weight
        True
    """

    pytree: Any
    where: Callable[[Any], Any]
    get: Callable[[Any], Any]

    def __init__(
        self, pytree: Any, where: Callable[[Any], Any], get: Callable[[Any], Any]
    ):
        source = filter_eval_shape(get, pytree)
        dest = filter_eval_shape(where, pytree)
        if tree_equal(source, dest) is not True:
            raise ValueError(
                SHARED_MISMATCH.format(
                    source=tree_pformat(source, struct_as_array=True),
                    dest=tree_pformat(dest, struct_as_array=True),
                )
            )
        self.pytree = tree_at(where, pytree, replace_fn=lambda _: _SharedNode())
        self.where = where
        self.get = get

    def __call__(self) -> Any:
        """Rebuild the tied pytree.

        Returns:
            A pytree of the structure of the original `pytree`, with
            `get(pytree)` in the place of the nodes `where` picks.
        """
        return tree_at(self.where, self.pytree, self.get(self.pytree))
