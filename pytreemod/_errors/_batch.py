"""`collapse_batch`: reduce a runtime predicate over every `jax.vmap` batch
axis, so that a check or a breakpoint happens once, not once per element."""

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

__all__ = ["collapse_batch"]


@custom_vmap
def collapse_batch(pred: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(pred, index)` unchanged outside `jax.vmap`; under it, `pred` true if
    any element's is, and `index` the largest among the failing elements."""
    return pred, index


@collapse_batch.def_vmap
def _collapse_batch_rule(
    axis_size: int, in_batched: list[bool], pred: jax.Array, index: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], tuple[bool, bool]]:
    pred_batched, index_batched = in_batched
    if not pred_batched:
        pred = jnp.broadcast_to(pred, (axis_size,))
    if not index_batched:
        index = jnp.broadcast_to(index, (axis_size,))
    chosen = jnp.max(jnp.where(pred, index, jnp.zeros_like(index)))
    # Called again so that an enclosing vmap collapses its own axis too.
    return collapse_batch(jnp.any(pred), chosen), (False, False)
