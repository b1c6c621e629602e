"""`RotaryPositionalEmbedding`: rotary position encoding (RoFormer, Su et al.
2021), in the "rotate half" layout that Equinox uses."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._module._field import field
from .._module._module import Module
from ._init import default_floating_dtype


class RotaryPositionalEmbedding(Module):
    """Encode positions by rotating pairs of channels by position-dependent
    angles.

    For an input `x` of shape `(seq_length, embedding_size)` with
    `h = embedding_size // 2`, channel `j` and channel `j + h` of position `m`
    are rotated together by the angle `m * theta ** (-2j / embedding_size)`:

        out[m, j]     = x[m, j] * cos - x[m, j + h] * sin
        out[m, j + h] = x[m, j + h] * cos + x[m, j] * sin

    so that the dot product of two encoded vectors depends only on their
    relative position. With `MultiheadAttention`, apply it to each query and
    key head through `process_heads`.

    Args:
        embedding_size: the number of channels; even and non-negative.
        theta: the base of the angle frequencies; larger means slower rotation.
        dtype: the dtype of the cosines and sines; defaults to `float32`
            (`float64` when JAX runs with `jax_enable_x64`). As in Equinox,
            the input is combined with them by ordinary dtype promotion, so a
            different input dtype is an error under strict promotion and
            otherwise gives the promoted dtype.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> rope = eqx.nn.RotaryPositionalEmbedding(embedding_size=4)
        >>> rope(jnp.ones((3, 4))).shape
        (3, 4)
        >>> attention = eqx.nn.MultiheadAttention(2, 8, key=jax.random.key(0))
        >>> def process_heads(q, k, v):  # heads: (seq_length, num_heads, 4)
        ...     rotate = jax.vmap(rope, in_axes=1, out_axes=1)
        ...     return rotate(q), rotate(k), v
        >>> x = jnp.ones((3, 8))
        >>> attention(x, x, x, process_heads=process_heads).shape
        (3, 8)
    """

    embedding_size: int = field(static=True)
    theta: float = field(static=True, default=10_000.0)
    dtype: Any = field(static=True, default_factory=default_floating_dtype)

    def __check_init__(self) -> None:
        size = self.embedding_size
        if (
            isinstance(size, bool)
            or not isinstance(size, (int, np.integer))
            or size < 0
            or size % 2
        ):
            raise ValueError(
                "`embedding_size` must be an even, non-negative int (channels "
                f"are rotated in pairs); got {size!r}."
            )

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply the rotary encoding to one sequence.

        Args:
            x: an array of shape `(seq_length, embedding_size)`.
            key: ignored; accepted so that all layers can be called alike.

        Returns:
            An array of the shape and dtype of `x`.
        """
        del key
        shape = tuple(np.shape(x))
        if len(shape) != 2 or shape[1] != self.embedding_size:
            raise ValueError(
                f"RotaryPositionalEmbedding(embedding_size={self.embedding_size}): "
                f"`x` must have shape (seq_length, {self.embedding_size}); got "
                f"shape {shape}. To encode the heads of `MultiheadAttention`, map "
                "over the head axis: `jax.vmap(rope, in_axes=1, out_axes=1)`."
            )
        seq_length, size = shape
        half = size // 2
        cos, sin = self.precompute_freqs_cis(size, seq_length, self.theta, self.dtype)
        cos = jnp.concatenate([cos, cos], axis=-1)
        sin = jnp.concatenate([sin, sin], axis=-1)
        # As Equinox: ordinary promotion of the input's dtype and `dtype` (an
        # error under strict promotion when they differ; the result has the
        # promoted dtype).
        y = jnp.asarray(x)
        rotated = jnp.concatenate([-y[:, half:], y[:, :half]], axis=-1)
        return y * cos + rotated * sin

    @staticmethod
    def precompute_freqs_cis(
        embedding_size: int, end: int, theta: float, dtype: Any
    ) -> tuple[jax.Array, jax.Array]:
        """The cosines and sines of the rotation angles, as Equinox computes
        them: `angle[m, j] = m * theta ** (-2j / embedding_size)` for positions
        `m < end` and `j < embedding_size // 2`.

        Args:
            embedding_size: the number of channels (even).
            end: the number of positions.
            theta: the base of the angle frequencies.
            dtype: the dtype of the returned arrays (angles are computed in
                the default floating dtype first).

        Returns:
            `(cos, sin)`, each of shape `(end, embedding_size // 2)`.

        Example:
            >>> import jax.numpy as jnp
            >>> import pytreemod as eqx
            >>> cos, sin = eqx.nn.RotaryPositionalEmbedding.precompute_freqs_cis(
            ...     4, 3, 10_000.0, jnp.float32
            ... )
            >>> cos.shape, float(sin[1, 0])
            ((3, 2), 0.8414709568023682)
        """
        float_dtype = default_floating_dtype()
        exponents = jnp.arange(0, embedding_size, 2, dtype=float_dtype)
        frequencies = 1.0 / (
            theta ** (exponents[: embedding_size // 2] / embedding_size)
        )
        angles = jnp.outer(jnp.arange(end, dtype=float_dtype), frequencies)
        return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)
