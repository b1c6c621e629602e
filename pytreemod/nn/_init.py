"""Default parameter initialisation shared by the layers.

Layers draw weights and biases uniformly from `[-lim, lim]` with
`lim = 1 / sqrt(fan_in)`, as PyTorch and Equinox do, in the default floating
dtype unless the user passes `dtype=`.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr


def default_floating_dtype() -> Any:
    """`jnp.float64` when JAX runs in 64-bit mode (`jax_enable_x64`), else
    `jnp.float32`: the scalar types, as Equinox returns, since layers such as
    `RotaryPositionalEmbedding` keep it in a static field."""
    x64 = jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64
    return jnp.float64 if x64 else jnp.float32


def resolve_dtype(dtype: Any) -> Any:
    """The dtype a layer uses for its parameters: `dtype`, or the default one."""
    return default_floating_dtype() if dtype is None else dtype


def fan_in_limit(fan_in: int) -> float:
    """`1 / sqrt(fan_in)`, the bound of the default uniform initialisation.

    A layer with no inputs (`fan_in == 0`) gets `1.0`, so that it still builds.
    """
    return 1.0 if fan_in == 0 else 1.0 / math.sqrt(fan_in)


def uniform_init(
    key: jax.Array, shape: tuple[int, ...], dtype: Any, lim: float
) -> jax.Array:
    """An array of `shape` drawn uniformly from `[-lim, lim]`.

    For a complex `dtype`, the real and imaginary parts are drawn independently
    from the same interval.
    """
    if jnp.issubdtype(dtype, jnp.complexfloating):
        real_dtype = jnp.finfo(dtype).dtype
        real_key, imag_key = jr.split(key)
        real = jr.uniform(real_key, shape, real_dtype, minval=-lim, maxval=lim)
        imag = jr.uniform(imag_key, shape, real_dtype, minval=-lim, maxval=lim)
        return jax.lax.complex(real, imag).astype(dtype)
    return jr.uniform(key, shape, dtype, minval=-lim, maxval=lim)
