"""Floating dtypes from what users write: `jnp.bfloat16`, `"bfloat16"`,
`"bf16"`, a NumPy dtype. One parser, so every policy reads dtypes alike."""

from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["float_dtype", "is_float_array"]

#: Short names people write for the floating dtypes (jmp's and PyTorch's).
_ALIASES = {
    "bf16": "bfloat16",
    "f16": "float16",
    "half": "float16",
    "f32": "float32",
    "float": "float32",
    "full": "float32",
    "single": "float32",
    "f64": "float64",
    "double": "float64",
}


def float_dtype(value: Any, what: str) -> np.dtype:
    """`value` as a floating NumPy dtype; `what` names it in errors.

    Raises:
        ValueError: if `value` names no dtype.
        TypeError: if it is a dtype but not a floating one.
    """
    name = _ALIASES.get(value.lower(), value) if isinstance(value, str) else value
    try:
        dtype = jnp.dtype(name)
    except TypeError:
        raise ValueError(
            f"{what} must be a floating dtype such as `jnp.bfloat16` or "
            f"'bfloat16' (also 'bf16', 'f16', 'f32'); got {value!r}, which names "
            "no dtype."
        ) from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{what} must be a floating dtype (bfloat16, float16, float32, "
            f"float64); got {dtype.name}. Mixed precision casts floating arrays "
            "only: integer arrays and PRNG keys keep their dtype."
        )
    return dtype


def is_float_array(x: Any) -> bool:
    """Whether `x` is an array (or tracer) of a floating dtype: what a
    precision policy casts. Integer and boolean arrays and PRNG keys are not."""
    dtype = getattr(x, "dtype", None)
    return (
        dtype is not None
        and hasattr(x, "astype")
        and hasattr(x, "shape")
        and jnp.issubdtype(dtype, jnp.floating)
    )
