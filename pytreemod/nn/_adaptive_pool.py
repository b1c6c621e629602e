"""`AdaptivePool`, and `AdaptiveAvgPool1d`-`3d` / `AdaptiveMaxPool1d`-`3d`:
pooling to a fixed output shape whatever the input shape.

Each spatial dimension of size `n` is cut into `t` (the target size)
contiguous, non-overlapping pieces: the first `n % t` pieces hold
`n // t + 1` elements and the rest `n // t`, as Equinox does. Each piece is
reduced with `operation`; dimensions are reduced one after another.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from .._module._abstract import AbstractClassVar
from .._module._field import field
from .._module._module import Module
from ._conv import as_tuple, check_channels_first


def _pool_last_axis(
    x: jax.Array, target: int, operation: Callable[[jax.Array], jax.Array]
) -> jax.Array:
    """Reduce the last axis of `x` (size `n >= target`) to size `target`."""
    n = x.shape[-1]
    small, num_big = divmod(n, target)
    reduce = jnp.vectorize(operation, signature="(n)->()")
    split = num_big * (small + 1)
    big = x[..., :split].reshape(x.shape[:-1] + (num_big, small + 1))
    rest = x[..., split:].reshape(x.shape[:-1] + (target - num_big, small))
    pieces = [reduce(part) for part in (big, rest) if part.shape[-2] > 0]
    return jnp.concatenate(pieces, axis=-1)


class AdaptivePool(Module):
    """Pool one channels-first example to a fixed spatial shape.

    Every spatial dimension of size `n` is cut into `t` contiguous pieces
    (`t` its target size, `n >= t`): the first `n % t` pieces have
    `n // t + 1` elements, the others `n // t`. Each piece is reduced to one
    value with `operation`, one spatial dimension after another.

    Args:
        target_shape: the output's spatial shape: an int for every dimension,
            or one int per dimension.
        num_spatial_dims: the number of spatial dimensions `N`.
        operation: a function reducing a 1-d array to a scalar, e.g. `jnp.mean`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> pool = eqx.nn.AdaptivePool(2, num_spatial_dims=1, operation=jnp.sum)
        >>> pool(jnp.arange(5.0)[None])
        Array([[3., 7.]], dtype=float32)
    """

    target_shape: tuple[int, ...] = field(static=True)
    # A (non-array) pytree leaf, as in Equinox, so that leaves and key paths
    # line up with Equinox's.
    operation: Callable[[jax.Array], jax.Array]

    def __init__(
        self,
        target_shape: int | Sequence[int],
        num_spatial_dims: int,
        operation: Callable[[jax.Array], jax.Array],
    ):
        if not callable(operation):
            raise TypeError(
                "`operation` must be a function reducing a 1-d array to a scalar, "
                f"e.g. `jnp.mean`; got {operation!r}."
            )
        self.target_shape = as_tuple(target_shape, num_spatial_dims, "target_shape")
        self.operation = operation

    def _name(self) -> str:
        return f"{type(self).__name__}(target_shape={self.target_shape})"

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Pool one example to `target_shape`.

        Args:
            x: an array of shape `(channels, dim_1, ..., dim_N)` with every
                `dim_i` at least the matching target size.
            key: ignored; accepted so that all layers can be called alike.

        Returns:
            An array of shape `(channels, *target_shape)`.
        """
        del key
        check_channels_first(self._name(), x, len(self.target_shape))
        for axis, (size, target) in enumerate(
            zip(x.shape[1:], self.target_shape, strict=True)
        ):
            if size < target:
                raise ValueError(
                    f"{self._name()}: spatial dimension {axis + 1} of `x` has size "
                    f"{size}, smaller than its target size {target}; got input "
                    f"shape {x.shape}. Adaptive pooling only shrinks: use a "
                    "smaller `target_shape` or a larger input."
                )
        for axis, target in enumerate(self.target_shape, start=1):
            x = jnp.moveaxis(x, axis, -1)
            x = _pool_last_axis(x, target, self.operation)
            x = jnp.moveaxis(x, -1, axis)
        return x


class _AdaptiveAvgPool(AdaptivePool):
    """`AdaptivePool` with `operation=jnp.mean` and `num_spatial_dims` fixed by
    the subclass: the base of `AdaptiveAvgPool1d`-`3d`."""

    _num_spatial_dims: AbstractClassVar[int]

    def __init__(self, target_shape: int | Sequence[int]):
        super().__init__(target_shape, self._num_spatial_dims, jnp.mean)


class _AdaptiveMaxPool(AdaptivePool):
    """`AdaptivePool` with `operation=jnp.max` and `num_spatial_dims` fixed by
    the subclass: the base of `AdaptiveMaxPool1d`-`3d`."""

    _num_spatial_dims: AbstractClassVar[int]

    def __init__(self, target_shape: int | Sequence[int]):
        super().__init__(target_shape, self._num_spatial_dims, jnp.max)


class AdaptiveAvgPool1d(_AdaptiveAvgPool):
    """Average-pool `(channels, length)` to `(channels, target_shape)`.

    `AdaptivePool` with `num_spatial_dims=1` and `operation=jnp.mean`;
    `target_shape` is the output length: an int, or a sequence of one int.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.AdaptiveAvgPool1d(2)(jnp.arange(6.0)[None])
        Array([[1., 4.]], dtype=float32)
    """

    _num_spatial_dims = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPool):
    """Average-pool `(channels, height, width)` to `(channels, *target_shape)`.

    `AdaptivePool` with `num_spatial_dims=2` and `operation=jnp.mean`;
    `target_shape` is the output's spatial shape: an int for both dimensions, or
    two ints.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.AdaptiveAvgPool2d((1, 2))(jnp.arange(8.0).reshape(1, 2, 4))
        Array([[[2.5, 4.5]]], dtype=float32)
    """

    _num_spatial_dims = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPool):
    """Average-pool `(channels, depth, height, width)` to
    `(channels, *target_shape)`.

    `AdaptivePool` with `num_spatial_dims=3` and `operation=jnp.mean`;
    `target_shape` is the output's spatial shape: an int for all three
    dimensions, or three ints.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.AdaptiveAvgPool3d(1)(jnp.ones((2, 3, 4, 5))).shape
        (2, 1, 1, 1)
    """

    _num_spatial_dims = 3


class AdaptiveMaxPool1d(_AdaptiveMaxPool):
    """Max-pool `(channels, length)` to `(channels, target_shape)`.

    `AdaptivePool` with `num_spatial_dims=1` and `operation=jnp.max`;
    `target_shape` is the output length: an int, or a sequence of one int.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.AdaptiveMaxPool1d(2)(jnp.array([[3.0, 1.0, 0.0, 2.0, 5.0]]))
        Array([[3., 5.]], dtype=float32)
    """

    _num_spatial_dims = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPool):
    """Max-pool `(channels, height, width)` to `(channels, *target_shape)`.

    `AdaptivePool` with `num_spatial_dims=2` and `operation=jnp.max`;
    `target_shape` is the output's spatial shape: an int for both dimensions, or
    two ints.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.AdaptiveMaxPool2d(1)(jnp.arange(8.0).reshape(2, 2, 2))
        Array([[[3.]],
               [[7.]]], dtype=float32)
    """

    _num_spatial_dims = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPool):
    """Max-pool `(channels, depth, height, width)` to
    `(channels, *target_shape)`.

    `AdaptivePool` with `num_spatial_dims=3` and `operation=jnp.max`;
    `target_shape` is the output's spatial shape: an int for all three
    dimensions, or three ints.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.AdaptiveMaxPool3d((1, 2, 2))(jnp.ones((2, 3, 4, 5))).shape
        (2, 1, 2, 2)
    """

    _num_spatial_dims = 3
