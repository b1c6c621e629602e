"""`all_finite` and `select_tree`: what skipping a non-finite step needs.

A step whose gradients overflowed (float16 with too large a loss scale) must
leave the parameters and the optimiser state exactly as they were. Inside a
compiled step there is no `if`: both branches are computed and `select_tree`
picks one, array by array, with the same structure either way.
"""

from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from ..select._selector import is_array_leaf

__all__ = ["all_finite", "select_tree"]


def all_finite(tree: Any) -> jax.Array:
    """A scalar boolean array: whether every entry of every floating array of
    `tree` is finite (no `inf`, no `nan`). Non-floating leaves are ignored;
    a tree with no floating array is finite.

    Example:
        >>> import jax.numpy as jnp, pytreemod as ptm
        >>> bool(ptm.policy.all_finite({"a": jnp.ones(2), "n": jnp.arange(2)}))
        True
        >>> bool(ptm.policy.all_finite([jnp.ones(2), jnp.array([1.0, jnp.inf])]))
        False
    """
    checks = [
        jnp.all(jnp.isfinite(x))
        for x in jtu.tree_leaves(tree)
        if is_array_leaf(x) and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    if not checks:
        return jnp.array(True)
    return jnp.all(jnp.stack(checks))


def select_tree(pred: Any, on_true: Any, on_false: Any) -> Any:
    """`on_true` where the scalar boolean `pred` holds, else `on_false`,
    array by array: the two trees must have the same structure, and their
    non-array leaves must be equal (they are taken from `on_true`).

    Raises:
        ValueError: if the structures differ, or a non-array leaf differs
            (naming its key path), or `pred` is not a scalar.

    Example:
        >>> import jax.numpy as jnp, pytreemod as ptm
        >>> new, old = {"w": jnp.ones(2)}, {"w": jnp.zeros(2)}
        >>> ptm.policy.select_tree(jnp.array(False), new, old)["w"]
        Array([0., 0.], dtype=float32)
    """
    pred = jnp.asarray(pred)
    if pred.shape != () or pred.dtype != bool:
        raise ValueError(
            "`select_tree` takes a scalar boolean `pred` (e.g. "
            f"`all_finite(grads)`); got an array of shape {pred.shape} and "
            f"dtype {pred.dtype}."
        )
    true_leaves, treedef = jtu.tree_flatten_with_path(on_true)
    false_leaves, false_def = jtu.tree_flatten(on_false)
    structures: list[Any] = [treedef, false_def]  # (PyTreeDef's stubs lack ==)
    if structures[0] != structures[1]:
        raise ValueError(
            "`select_tree` needs two trees of the same structure; got\n"
            f"    {treedef}\nand\n    {false_def}"
        )
    out = []
    for (path, a), b in zip(true_leaves, false_leaves, strict=True):
        if is_array_leaf(a) or is_array_leaf(b):
            out.append(jax.lax.select(pred, a, b))
        elif a is b or a == b:
            out.append(a)
        else:
            raise ValueError(
                f"`select_tree`: the non-array leaf at {jtu.keystr(path)} differs "
                f"between the two trees ({a!r} and {b!r}); only arrays can be "
                "chosen inside a compiled step."
            )
    return jtu.tree_unflatten(treedef, out)
