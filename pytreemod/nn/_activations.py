"""`PReLU`, an activation function with a learnt parameter."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._module._module import Module


class PReLU(Module):
    """The parametric ReLU: `x` where `x >= 0`, `negative_slope * x` elsewhere.

    A leaky ReLU whose leak, `negative_slope`, is learnt: a scalar shared by
    every entry, or an array broadcast against the input (e.g. one slope per
    channel, of shape `(channels, 1, 1)` for images).

    Args:
        init_alpha: the initial slope, a float or an array broadcastable to
            the input.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> prelu = ptm.nn.PReLU(0.1)
        >>> prelu(jnp.array([-2.0, 3.0]))
        Array([-0.2,  3. ], dtype=float32)
    """

    negative_slope: jax.Array

    def __init__(self, init_alpha: Any = 0.25):
        self.negative_slope = jnp.asarray(init_alpha)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply the activation elementwise.

        Args:
            x: an array of any shape that `negative_slope` broadcasts to.
            key: ignored; accepted so that every layer can be called alike.

        Returns:
            An array of the shape of `x`.
        """
        del key
        slope_shape = np.shape(self.negative_slope)
        x_shape = np.shape(x)
        try:
            fits = np.broadcast_shapes(slope_shape, x_shape) == x_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"PReLU: `negative_slope` of shape {slope_shape} does not broadcast "
                f"to the input `x` of shape {x_shape}: the trailing axes of `x` "
                f"must match {slope_shape}, except where the slope has size 1."
            )
        # The slope may have fewer axes than `x` and another float dtype: both
        # are meant here, so allow them for this one expression.
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            return jnp.where(x >= 0, x, self.negative_slope * x)
