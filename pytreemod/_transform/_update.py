"""`apply_updates`: add updates (such as an optimiser's) to a model's arrays."""

from typing import Any

import jax.tree_util as jtu
import numpy as np

from .._module._is_array import is_array
from ._filters import _flatten_up_to, _is_none

__all__ = ["apply_updates"]

_MISMATCH = """\
`apply_updates` needs `updates` to have the structure of `model` (with `None`
for any leaf or subtree that is not updated), but at `{path}` the model has
{model_side}
and the updates have
{update_side}.
Compute the updates from the model's own arrays, for example
    params = pytreemod.filter(model, pytreemod.is_inexact_array)
    updates, opt_state = optimiser.update(grads, opt_state, params)"""

_SHAPE_MISMATCH = """\
`apply_updates` got an update of shape {update_shape} for `{path}`, whose
shape is {value_shape}. An array update must have its parameter's shape:
adding it would broadcast instead (Equinox does so silently), changing the
parameter's shape or adding one update to many elements. Probably the updates
were computed for another model, or for a batch of models (`vmap`); compute
them from this model's own arrays, for example
    params = pytreemod.filter(model, pytreemod.is_inexact_array)
    updates, opt_state = optimiser.update(grads, opt_state, params)"""


def _shape_mismatch(updates: Any, index: int, update: Any, value: Any) -> str:
    """The error for the `index`-th leaf of `updates`, whose shape differs
    from its parameter `value`'s."""
    path, _ = jtu.tree_flatten_with_path(updates, is_leaf=_is_none)[0][index]
    return _SHAPE_MISMATCH.format(
        update_shape=tuple(update.shape),
        path="model" + jtu.keystr(path),
        value_shape=tuple(np.shape(value)),
    )


def apply_updates(model: Any, updates: Any) -> Any:
    """Add `updates` to the leaves of `model`, leaving the leaves whose update
    is `None` unchanged.

    `updates` has the structure of `model`, with `None` wherever nothing is to
    be added (a `None` may stand for a whole subtree), so it can be a filtered
    version of the model, such as the gradients from `filter_grad` or the
    updates an optax optimiser computes from them.

    Args:
        model: any pytree: a Module, say.
        updates: a pytree with the structure of `model` (or a prefix of it with
            `None` for whole subtrees), holding the values to add.

    Returns:
        A pytree of the structure of `model`, holding `leaf + update` wherever
        the update is not `None` and the original leaf elsewhere.

    Raises:
        ValueError: if `updates` does not have the structure of `model`, or an
            array update's shape differs from its leaf's (Equinox broadcasts).

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> model = {"w": jnp.array([1.0, 2.0]), "activation": jnp.tanh}
        >>> updates = {"w": jnp.array([0.5, -0.5]), "activation": None}
        >>> new = pytreemod.apply_updates(model, updates)
        >>> new["w"], new["activation"] is jnp.tanh
        (Array([1.5, 1.5], dtype=float32), True)
    """
    update_leaves, treedef = jtu.tree_flatten(updates, is_leaf=_is_none)
    model_parts = _flatten_up_to(
        treedef,
        updates,
        model,
        _is_none,
        lambda path, update_side, model_side: _MISMATCH.format(
            path="model" + jtu.keystr(path),
            model_side=model_side,
            update_side=update_side,
        ),
    )
    leaves = []
    for index, (update, value) in enumerate(
        zip(update_leaves, model_parts, strict=True)
    ):
        if update is not None:
            # A Python scalar update is added to every element on purpose;
            # an array must have its parameter's shape.
            if is_array(update) and update.shape != np.shape(value):
                raise ValueError(_shape_mismatch(updates, index, update, value))
            value = value + update
        leaves.append(value)
    return treedef.unflatten(leaves)
