"""`Dropout`, which zeroes random entries while training."""

import warnings

import jax
import jax.numpy as jnp
import jax.random as jr

from .._module._module import Module

DROPOUT_NEEDS_KEY = """\
Dropout is active (`inference=False`) but was called without a key, and it
needs one to choose which entries to drop. Either
  1. pass a key: `dropout(x, key=jax.random.key(0))`, split from your training
     key for each call; or
  2. turn dropout off for evaluation: `dropout(x, inference=True)`, or
     `model = pytreemod.nn.inference_mode(model)` for a whole model."""


_INIT_DETERMINISTIC = (
    "Dropout(deterministic=...) is deprecated in favour of Dropout(inference=...)"
)
_CALL_DETERMINISTIC = (
    "Dropout()(deterministic=...) is deprecated in favour of Dropout()(inference=...)"
)


class Dropout(Module):
    """Zero each entry with probability `p` and scale the rest by `1 / (1 - p)`,
    so that the expected value is unchanged; do nothing in inference mode.

    While active it needs a `key` on every call. `pytreemod.nn.inference_mode`
    switches the `inference` field of every `Dropout` in a model.

    Args:
        p: the probability of dropping each entry, in `[0, 1]`.
        inference: if `True`, the layer returns its input unchanged.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> dropout = ptm.nn.Dropout(p=0.5)
        >>> y = dropout(jnp.ones(1000), key=jax.random.key(0))
        >>> sorted(set(y.tolist()))  # kept entries are scaled by 1 / (1 - p)
        [0.0, 2.0]
        >>> dropout(jnp.ones(3), inference=True)
        Array([1., 1., 1.], dtype=float32)
    """

    p: float
    inference: bool

    def __init__(
        self,
        p: float = 0.5,
        inference: bool = False,
        *,
        deterministic: bool | None = None,
    ):
        if isinstance(p, (int, float)) and not 0 <= p <= 1:
            raise ValueError(f"`p` must be a probability in [0, 1]; got {p!r}.")
        if deterministic is not None:
            warnings.warn(_INIT_DETERMINISTIC, DeprecationWarning, stacklevel=2)
            inference = deterministic
        self.p = p
        self.inference = inference

    @property
    def deterministic(self) -> bool:
        """The deprecated name of `inference`, kept as Equinox keeps it."""
        return self.inference

    def __call__(
        self,
        x: jax.Array,
        *,
        key: jax.Array | None = None,
        inference: bool | None = None,
        deterministic: bool | None = None,
    ) -> jax.Array:
        """Apply dropout to one example.

        Args:
            x: an array of any shape.
            key: a `jax.random` key; required unless the layer is inactive.
            inference: overrides the `inference` field for this call when not
                `None`.
            deterministic: the deprecated name of `inference` (warns).

        Returns:
            An array of the shape and dtype of `x`.

        Raises:
            RuntimeError: if the layer is active and `key` is `None`.
        """
        if deterministic is not None:
            warnings.warn(_CALL_DETERMINISTIC, DeprecationWarning, stacklevel=2)
            inference = deterministic
        if inference is None:
            inference = self.inference
        if isinstance(self.p, (int, float)) and self.p == 0:
            inference = True
        if inference:
            return x
        if key is None:
            raise RuntimeError(DROPOUT_NEEDS_KEY)
        x = jnp.asarray(x)
        if isinstance(self.p, (int, float)) and self.p == 1:
            return jnp.zeros_like(x)
        keep = 1 - jax.lax.stop_gradient(self.p)
        mask = jr.bernoulli(key, keep, jnp.shape(x))
        return jnp.where(mask, x / keep, 0)
