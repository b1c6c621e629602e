"""`filter_pure_callback`: call a host Python function from inside traced
code, with arguments and results that may hold any Python objects."""

from collections.abc import Callable
from typing import Any

import jax
import jax.tree_util as jtu

from .._module._is_array import is_array
from .._module._tree_equal import tree_equal
from ._filters import combine, partition

__all__ = ["filter_pure_callback"]

_WRONG_STRUCTURE = """\
the callback passed to `filter_pure_callback` returned a result whose
structure differs from `result_shape_dtypes`:
    returned:             {got}
    result_shape_dtypes:  {expected}
Make the callback return the structure that `result_shape_dtypes` describes,
or change `result_shape_dtypes` to match what it returns."""

_WRONG_LEAF = """\
the callback passed to `filter_pure_callback` returned {got} at
`result{path}`, but `result_shape_dtypes` has {expected} there. Array results
must be arrays (a `jax.ShapeDtypeStruct` in `result_shape_dtypes` stands for
one); every other leaf must equal the one in `result_shape_dtypes`, which is
returned in its place."""

_VECTORIZED_REMOVED = (
    "`vectorized` is no longer accepted by `jax.pure_callback` in this JAX; "
    "pass `vmap_method` instead: `vmap_method='expand_dims'` for "
    "`vectorized=True`, or `vmap_method='sequential'` for `vectorized=False`."
)


def _is_shaped(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _describe(x: Any) -> str:
    if _is_shaped(x):
        return f"an array of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{x!r}"


def _check_result(out: Any, expected: Any) -> None:
    """Raise if the callback's result does not fit `result_shape_dtypes`."""
    got_leaves, got_def = jtu.tree_flatten_with_path(out)
    expected_leaves, expected_def = jtu.tree_flatten(expected)
    if got_def != expected_def:
        raise ValueError(_WRONG_STRUCTURE.format(got=got_def, expected=expected_def))
    for (path, got), want in zip(got_leaves, expected_leaves, strict=True):
        matches = (
            is_array(got)
            if _is_shaped(want)
            else not is_array(got) and bool(tree_equal(got, want))
        )
        if not matches:
            raise ValueError(
                _WRONG_LEAF.format(
                    got=_describe(got), path=jtu.keystr(path), expected=_describe(want)
                )
            )


def filter_pure_callback(
    callback: Callable[..., Any],
    *args: Any,
    result_shape_dtypes: Any,
    sharding: jax.sharding.Sharding | None = None,
    vmap_method: str | None = None,
    vectorized: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Call the host Python function `callback(*args, **kwargs)` from inside
    `jit` (or any transform), like `jax.pure_callback`, but with arguments and
    results that may hold any Python objects.

    The array leaves of the arguments are passed through JAX (the callback
    gets them as concrete arrays on the host CPU); the other leaves reach the
    callback unchanged.
    The callback must be pure: JAX may call it any number of times, or not at
    all if its result is unused.

    Args:
        callback: the Python function to call.
        *args: its positional arguments: any pytrees.
        result_shape_dtypes: what `callback` returns, with a
            `jax.ShapeDtypeStruct` (or anything with `.shape` and `.dtype`) for
            each array. Its other leaves must equal what `callback` returns
            there. Keyword-only, unlike in `jax.pure_callback`.
        sharding: optional; the sharding the callback's inputs are put on, as
            for `jax.pure_callback`.
        vmap_method: how the call behaves under `vmap`, as for
            `jax.pure_callback`: `"sequential"`, `"sequential_unrolled"`,
            `"expand_dims"` or `"broadcast_all"`.
        vectorized: accepted for Equinox compatibility only; this JAX removed
            it, so passing it raises and says which `vmap_method` to use.
        **kwargs: its keyword arguments: any pytrees.

    Returns:
        `callback`'s result: arrays (JAX arrays) where `result_shape_dtypes`
        has shape-dtype structs, its other leaves elsewhere.

    Raises:
        TypeError: if `vectorized` is passed.
        ValueError: (from the callback, at run time) if the result does not fit
            `result_shape_dtypes`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> import pytreemod
        >>> def host(x, how):
        ...     return {"y": np.sort(x) if how == "sort" else x, "how": how}
        >>> @jax.jit
        ... def f(x):
        ...     shape = {"y": jax.ShapeDtypeStruct(x.shape, x.dtype), "how": "sort"}
        ...     out = pytreemod.filter_pure_callback(
        ...         host, x, "sort", result_shape_dtypes=shape
        ...     )
        ...     return out["y"]  # out["how"] is the string "sort"
        >>> f(jnp.array([3.0, 1.0, 2.0]))
        Array([1., 2., 3.], dtype=float32)
    """
    if vectorized is not None:
        raise TypeError(_VECTORIZED_REMOVED)
    dynamic, static = partition((args, kwargs), is_array)
    dynamic_shapes, static_out = partition(result_shape_dtypes, _is_shaped)

    def host(dynamic: Any) -> Any:
        a, k = combine(dynamic, static)
        out = callback(*a, **k)
        _check_result(out, result_shape_dtypes)
        return partition(out, is_array)[0]

    options: dict[str, Any] = {}
    if sharding is not None:
        options["sharding"] = sharding
    if vmap_method is not None:
        options["vmap_method"] = vmap_method
    out_dynamic = jax.pure_callback(host, dynamic_shapes, dynamic, **options)
    return combine(out_dynamic, static_out)
