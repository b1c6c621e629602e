"""`Embedding`, a lookup table of vectors indexed by an integer."""

from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._module._field import field
from .._module._module import Module
from ._init import resolve_dtype
from ._linear import check_layer_axes

MISSING_EMBEDDING_ARGS = """\
`Embedding` needs either its sizes and a key, or the table itself:
    Embedding(num_embeddings, embedding_size, key=jax.random.key(0))
    Embedding(weight=table)   # table of shape (num_embeddings, embedding_size)
Got num_embeddings={num}, embedding_size={size}, key={key}."""


class Embedding(Module):
    """A table of `num_embeddings` vectors of size `embedding_size`; calling it
    with an integer index returns that row.

    Build it from the sizes and a key (entries drawn from a standard normal
    distribution), or from an existing table passed as `weight`.

    Args:
        num_embeddings: the number of rows (non-negative).
        embedding_size: the size of each row (non-negative).
        weight: an array of shape `(num_embeddings, embedding_size)` to use as
            the table instead of a random one; the sizes may then be omitted.
        dtype: the dtype of a random table; defaults to `float32` (`float64`
            with `jax_enable_x64`).
        key: a `jax.random` key for a random table (keyword only).
        axes: optional logical axis names `(vocab_name, embed_name)` of
            `weight` for `pytreemod.sharding` (keyword only), e.g.
            `("vocab", "embed")`. Default `None`: unnamed (replicated). Static
            metadata: it adds no leaf.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> table = jnp.arange(6.0).reshape(3, 2)
        >>> embedding = ptm.nn.Embedding(weight=table)
        >>> embedding(jnp.array(2))
        Array([4., 5.], dtype=float32)
        >>> jax.vmap(embedding)(jnp.array([0, 2])).shape  # several indices
        (2, 2)
    """

    num_embeddings: int = field(static=True)
    embedding_size: int = field(static=True)
    weight: jax.Array = field(axes=lambda self: self.axes)
    # pytreemod extension: logical axis names (vocab, embed) of `weight`, read
    # by `pytreemod.sharding`; static, so the pytree's leaves are unchanged.
    axes: tuple[str | None, str | None] | None = field(
        static=True, default=None, repr=False
    )

    def __init__(
        self,
        num_embeddings: int | None = None,
        embedding_size: int | None = None,
        weight: jax.Array | None = None,
        dtype: Any = None,
        *,
        key: jax.Array | None = None,
        axes: tuple[str | None, str | None] | None = None,
    ):
        self.axes = check_layer_axes("Embedding", axes, ("vocab", "embed"))
        if weight is None:
            if num_embeddings is None or embedding_size is None or key is None:
                raise ValueError(
                    MISSING_EMBEDDING_ARGS.format(
                        num=num_embeddings,
                        size=embedding_size,
                        key="None" if key is None else "<key>",
                    )
                )
            for name, size in (
                ("num_embeddings", num_embeddings),
                ("embedding_size", embedding_size),
            ):
                if size < 0:
                    raise ValueError(f"`{name}` must not be negative; got {size}.")
            shape = (num_embeddings, embedding_size)
            weight = jr.normal(key, shape, resolve_dtype(dtype))
        else:
            if np.ndim(weight) != 2:
                raise ValueError(
                    "`weight` must have shape (num_embeddings, embedding_size); "
                    f"got shape {np.shape(weight)}."
                )
            rows, cols = np.shape(weight)
            num_embeddings = rows if num_embeddings is None else num_embeddings
            embedding_size = cols if embedding_size is None else embedding_size
            if (rows, cols) != (num_embeddings, embedding_size):
                raise ValueError(
                    "`weight` must have shape (num_embeddings, embedding_size) = "
                    f"{(num_embeddings, embedding_size)}; got shape {(rows, cols)}."
                )
        self.num_embeddings = num_embeddings
        self.embedding_size = embedding_size
        self.weight = weight

    def __call__(self, x: Any, *, key: jax.Array | None = None) -> jax.Array:
        """Look up one row.

        Args:
            x: a scalar integer index (a Python int or an integer array of
                shape `()`). Indices out of range are clamped, as in JAX
                indexing.
            key: ignored; accepted so that every layer can be called alike.

        Returns:
            An array of shape `(embedding_size,)`.
        """
        del key
        shape = np.shape(x)
        dtype = jnp.result_type(x)
        if shape != () or not jnp.issubdtype(dtype, jnp.integer):
            raise ValueError(
                f"Embedding({self.num_embeddings}, {self.embedding_size}): `x` "
                f"must be a scalar integer index of shape (); got shape {shape} "
                f"and dtype {dtype}. To look up several indices, map over them: "
                "`jax.vmap(embedding)(indices)`."
            )
        return self.weight[x]
