"""`apply_updates`: add updates (such as an optimiser's) to a model's arrays."""

from typing import Any

import jax.tree_util as jtu

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


def _add(update: Any, value: Any) -> Any:
    return value if update is None else value + update


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
        ValueError: if `updates` does not have the structure of `model`.

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
    return treedef.unflatten(
        [_add(u, m) for u, m in zip(update_leaves, model_parts, strict=True)]
    )
