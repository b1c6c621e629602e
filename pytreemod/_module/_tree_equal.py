"""`tree_equal`: structure-and-value equality of pytrees, also under a trace.

The type of the answer tells how it was decided, as in Equinox: a Python
`bool` when structure, types, shapes, dtypes, NumPy arrays or other leaves
decide it, and a JAX boolean scalar as soon as a JAX array (or a tracer) was
compared by value, so that the same call works eagerly and under `jax.jit`.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._is_array import is_array

_NUMPY_TYPES = (np.ndarray, np.generic)


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _leaf_type(x: Any) -> type:
    # A concrete JAX array and a tracer standing for one are the same kind of
    # leaf: otherwise `typematch=True` would tell a jitted call from an eager one.
    return jax.Array if isinstance(x, jax.Array) else type(x)


def _is_zero(tolerance: Any) -> bool:
    # Only a Python number is known to be zero without looking at array values
    # (an array tolerance may be a tracer); `isclose` with a zero tolerance is
    # exact comparison anyway.
    return isinstance(tolerance, (int, float)) and tolerance == 0


def _numpy_arrays_equal(x: Any, y: Any, rtol: Any, atol: Any) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    # `jnp.issubdtype`, unlike NumPy's, knows that bfloat16 is inexact.
    if (_is_zero(rtol) and _is_zero(atol)) or not jnp.issubdtype(x.dtype, jnp.inexact):
        return bool(np.all(x == y))
    # Upcast so that NumPy's `isclose` also handles bfloat16 and friends.
    wide = np.complex128 if np.iscomplexobj(x) else np.float64
    close = np.isclose(
        x.astype(wide), y.astype(wide), np.asarray(rtol), np.asarray(atol)
    )
    return bool(np.all(close))


def _jax_arrays_equal(x: Any, y: Any, rtol: Any, atol: Any) -> jax.Array:
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        # Typed PRNG keys have no arithmetic: compare their raw key data.
        x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if (_is_zero(rtol) and _is_zero(atol)) or not jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.all(x == y)
    return jnp.all(jnp.isclose(x, y, rtol=rtol, atol=atol))


def _leaves_equal(x: Any, y: Any, typematch: bool, rtol: Any, atol: Any) -> Any:
    """`True`, `False`, or a JAX boolean scalar (when JAX arrays were compared)."""
    if typematch and _leaf_type(x) is not _leaf_type(y):
        return False
    x_array, y_array = is_array(x), is_array(y)
    if x_array != y_array:
        return False
    if x_array:
        if np.shape(x) != np.shape(y) or x.dtype != y.dtype:
            return False
        if isinstance(x, _NUMPY_TYPES) and isinstance(y, _NUMPY_TYPES):
            return _numpy_arrays_equal(x, y, rtol, atol)
        return _jax_arrays_equal(x, y, rtol, atol)
    result = x == y
    if is_array(result):
        # A non-array leaf whose `==` gives an array (elementwise comparison).
        return jnp.all(result) if _is_traced(result) else bool(np.all(result))
    return bool(result)


def tree_equal(
    *pytrees: Any, typematch: bool = False, rtol: Any = 0.0, atol: Any = 0.0
) -> bool | jax.Array:
    """Return whether all `pytrees` have the same structure and equal leaves.

    Two pytrees are equal when their treedefs are equal (static data compared
    by `==`) and each pair of leaves is equal:

    - array leaves (JAX or NumPy arrays, NumPy scalars) need the same shape and
      dtype, then equal values; a NumPy and a JAX array with the same values
      are equal. With `rtol` or `atol` non-zero, floating and complex arrays
      are compared like `allclose`; otherwise exactly (so NaN != NaN).
    - an array is never equal to a non-array, even `jnp.array(1)` and `1`.
    - other leaves are compared with `==`.

    Args:
        *pytrees: the pytrees to compare (at least one); all are compared with
            the first.
        typematch: if `True`, leaves must also have the same type (`1` is then
            not equal to `1.0`, nor a NumPy array to a JAX array). JAX arrays
            and tracers count as one type.
        rtol: relative tolerance for inexact arrays.
        atol: absolute tolerance for inexact arrays.

    Returns:
        `False` (a Python `bool`) when the answer does not depend on the values
        of JAX arrays: different structure, types, shapes or dtypes, or unequal
        NumPy arrays or other leaves. Otherwise, if some pair of JAX arrays (or
        a JAX and a NumPy array) was compared, a JAX boolean scalar with the
        result (a tracer inside `jax.jit`, usable in the traced function);
        and if none was, `True`.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> tree_equal([1, 2], [1, 3]), tree_equal([1], (1,))
        (False, False)
        >>> tree_equal({"a": np.ones(2)}, {"a": np.ones(2)})
        True
        >>> tree_equal({"a": jnp.ones(2)}, {"a": np.ones(2, np.float32)})
        Array(True, dtype=bool)
        >>> tree_equal(jnp.array(1.0), jnp.array(1.001), rtol=0.01)
        Array(True, dtype=bool)
        >>> tree_equal(jnp.ones(2), jnp.ones(3))
        False
    """
    if not pytrees:
        raise IndexError(
            "tuple index out of range: `tree_equal` needs at least one pytree."
        )
    first_leaves, first_def = jax.tree_util.tree_flatten(pytrees[0])
    out: Any = True
    for other in pytrees[1:]:
        leaves, treedef = jax.tree_util.tree_flatten(other)
        if treedef != first_def:
            return False
        for x, y in zip(first_leaves, leaves, strict=True):
            result = _leaves_equal(x, y, typematch, rtol, atol)
            if result is False:
                return False
            if result is not True:
                out = result if out is True else jnp.logical_and(out, result)
    return out
