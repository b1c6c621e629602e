"""`insert_before` and `insert_after`: a layer put beside each selected layer
of an `nn.Sequential`."""

from collections.abc import Callable
from typing import Any, TypeVar

import jax.tree_util as jtu

from .._module._module import Module
from ..nn._sequential import Sequential
from ..select._walk import walk
from ._edit import Keys, rebuild, selected_nodes

_T = TypeVar("_T")

_NOT_IN_SEQUENTIAL = """\
`{name}` puts a layer beside a layer of an `nn.Sequential`, but the selected
`{path}` is not one (it is held by a `{holder}`). Select layers of a
Sequential (e.g. r"\\.layers\\[2\\]" of the Sequential itself), or wrap the
selected submodule instead:
    surgery.replace(model, selection, lambda sub: nn.Sequential([sub, new]))"""


def insert_before(
    tree: _T,
    selection: Any,
    layer: Module | Callable[[Any], Any],
    *,
    missing_ok: bool = False,
) -> _T:
    r"""A copy of `tree` with a layer inserted before each selected layer of
    an `nn.Sequential`.

    Args:
        tree: a model, or any pytree, holding `nn.Sequential`s.
        selection: which layers (each must be one of the `layers` of an
            `nn.Sequential`).
        layer: the Module to insert, or a function `selected layer -> Module`
            (e.g. to size the new layer from the selected one); a Module is
            inserted as it is, even though it is callable.
        missing_ok: allow a selection that matches nothing.

    Returns:
        The edited copy; every layer and leaf not inserted is the same object.

    Raises:
        ValueError: if the selection matches nothing (unless `missing_ok`),
            or selects something that is not a layer of an `nn.Sequential`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> from pytreemod import surgery
        >>> mlp = ptm.nn.Sequential([ptm.nn.Linear(3, 3, key=jax.random.key(0))])
        >>> scaled = surgery.insert_before(
        ...     mlp, ptm.nn.Linear, ptm.nn.Lambda(lambda x: 2 * x)
        ... )
        >>> [type(layer).__name__ for layer in scaled.layers]
        ['Lambda', 'Linear']
    """
    return _insert(tree, selection, layer, after=False, missing_ok=missing_ok)


def insert_after(
    tree: _T,
    selection: Any,
    layer: Module | Callable[[Any], Any],
    *,
    missing_ok: bool = False,
) -> _T:
    r"""A copy of `tree` with a layer inserted after each selected layer of an
    `nn.Sequential`; see `insert_before`.

    Example:
        >>> import jax, pytreemod as ptm
        >>> from pytreemod import surgery
        >>> model = ptm.nn.Sequential([
        ...     ptm.nn.Linear(3, 4, key=jax.random.key(0)),
        ...     ptm.nn.Linear(4, 2, key=jax.random.key(1)),
        ... ])
        >>> normed = surgery.insert_after(
        ...     model, r"\.layers\[0\]",
        ...     lambda linear: ptm.nn.LayerNorm(linear.out_features),
        ... )
        >>> [type(layer).__name__ for layer in normed.layers]
        ['Linear', 'LayerNorm', 'Linear']
    """
    return _insert(tree, selection, layer, after=True, missing_ok=missing_ok)


def _insert(
    tree: Any, selection: Any, layer: Any, *, after: bool, missing_ok: bool
) -> Any:
    name = "insert_after" if after else "insert_before"
    _, nodes = selected_nodes(selection, tree, missing_ok=missing_ok)
    make = (lambda _: layer) if isinstance(layer, Module) else layer
    # The `layers` tuple of each Sequential -> the positions to insert at.
    positions: dict[Keys, set[int]] = {}
    by_path = {node.path: node.value for node in walk(tree)}
    for node in nodes:
        keys = node.path
        in_sequential = (
            len(keys) >= 2
            and isinstance(by_path.get(keys[:-2]), Sequential)
            and isinstance(keys[-2], jtu.GetAttrKey)
            and keys[-2].name == "layers"
            and isinstance(keys[-1], jtu.SequenceKey)
        )
        if not in_sequential:
            holder = type(by_path[keys[:-1]]).__name__ if keys else "nothing"
            raise ValueError(
                _NOT_IN_SEQUENTIAL.format(
                    name=name, path=jtu.keystr(keys) or "(the root)", holder=holder
                )
            )
        positions.setdefault(keys[:-1], set()).add(keys[-1].idx)

    def edit_at(where: set[int]) -> Any:
        def edit(layers: tuple[Any, ...]) -> tuple[Any, ...]:
            out: list[Any] = []
            for i, old in enumerate(layers):
                if after:
                    out.append(old)
                if i in where:
                    out.append(make(old))
                if not after:
                    out.append(old)
            return tuple(out)

        return edit

    edits = {keys: edit_at(where) for keys, where in positions.items()}
    return rebuild(tree, edits)
