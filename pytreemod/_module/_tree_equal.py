"""`tree_equal`: structure-and-value equality of pytrees, also under a trace."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._is_array import is_array


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _leaf_type(x: Any) -> type:
    # A concrete JAX array and a tracer standing for one are the same kind of
    # leaf: otherwise `typematch=True` would tell a jitted call from an eager one.
    return jax.Array if isinstance(x, jax.Array) else type(x)


def _arrays_equal(x: Any, y: Any, rtol: float, atol: float) -> bool | jax.Array:
    """Compare two arrays known to share shape and dtype. Returns a Python bool,
    or a traced boolean scalar when either side is a tracer."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        # Typed PRNG keys have no NumPy form: compare their raw key data.
        x, y = jax.random.key_data(x), jax.random.key_data(y)
    close = (rtol != 0 or atol != 0) and jnp.issubdtype(x.dtype, jnp.inexact)
    if _is_traced(x) or _is_traced(y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        if close:
            return jnp.all(jnp.isclose(x, y, rtol=rtol, atol=atol))
        return jnp.all(x == y)
    x, y = np.asarray(x), np.asarray(y)
    if close:
        # Upcast so that NumPy's `isclose` also handles bfloat16 and friends.
        wide = np.complex128 if np.iscomplexobj(x) else np.float64
        return bool(np.all(np.isclose(x.astype(wide), y.astype(wide), rtol, atol)))
    return bool(np.all(x == y))


def _leaves_equal(
    x: Any, y: Any, typematch: bool, rtol: float, atol: float
) -> bool | jax.Array:
    if typematch and _leaf_type(x) is not _leaf_type(y):
        return False
    x_array, y_array = is_array(x), is_array(y)
    if x_array != y_array:
        return False
    if x_array:
        if np.shape(x) != np.shape(y) or x.dtype != y.dtype:
            return False
        return _arrays_equal(x, y, rtol, atol)
    result = x == y
    if is_array(result):
        # A non-array leaf whose `==` gives an array (elementwise comparison).
        return jnp.all(result) if _is_traced(result) else bool(np.all(result))
    return bool(result)


def tree_equal(
    *pytrees: Any, typematch: bool = False, rtol: float = 0.0, atol: float = 0.0
) -> bool | jax.Array:
    """Return whether all `pytrees` have the same structure and equal leaves.

    Two pytrees are equal when their treedefs are equal (static data compared
    by `==`) and each pair of leaves is equal:

    - array leaves (JAX or NumPy arrays, NumPy scalars) need the same shape and
      dtype, then equal values; a NumPy and a JAX array with the same values
      are equal. With `rtol` or `atol` non-zero, floating and complex arrays
      are compared like `jnp.allclose`; otherwise exactly (so NaN != NaN).
    - an array is never equal to a non-array, even `jnp.array(1)` and `1`.
    - other leaves are compared with `==`.

    Args:
        *pytrees: the pytrees to compare; all are compared with the first.
        typematch: if `True`, leaves must also have the same type (`1` is then
            not equal to `1.0`). JAX arrays and tracers count as one type.
        rtol: relative tolerance for inexact arrays.
        atol: absolute tolerance for inexact arrays.

    Returns:
        A Python `bool`. When some compared arrays are tracers (inside
        `jax.jit`), and equality depends on their values, a traced boolean
        scalar instead, which can be used inside the traced function.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> tree_equal({"a": jnp.ones(2)}, {"a": np.ones(2, np.float32)})
        True
        >>> tree_equal([1, 2], [1, 3]), tree_equal([1], (1,))
        (False, False)
        >>> tree_equal(jnp.array(1.0), jnp.array(1.001), rtol=0.01)
        True
    """
    if len(pytrees) < 2:
        return True
    first_leaves, first_def = jax.tree_util.tree_flatten(pytrees[0])
    traced: list[jax.Array] = []
    for other in pytrees[1:]:
        leaves, treedef = jax.tree_util.tree_flatten(other)
        if treedef != first_def:
            return False
        for x, y in zip(first_leaves, leaves, strict=True):
            result = _leaves_equal(x, y, typematch, rtol, atol)
            if result is False:
                return False
            if result is not True:
                traced.append(result)
    if not traced:
        return True
    out = traced[0]
    for result in traced[1:]:
        out = jnp.logical_and(out, result)
    return out
