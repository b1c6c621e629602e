"""`Pool`, and `MaxPool1d`-`3d` / `AvgPool1d`-`3d`: reductions over a sliding
window, computed with `lax.reduce_window`."""

import abc
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._module._abstract import AbstractClassVar
from .._module._field import field
from .._module._module import Module
from ._conv import as_tuple, check_channels_first, parse_padding

PoolPadding = int | Sequence[int] | Sequence[tuple[int, int]]
Operation = Callable[[jax.Array, jax.Array], jax.Array]


def _init_for(init: Any, dtype: Any) -> np.ndarray:
    """`init` as a NumPy scalar of `dtype`; an infinite `init` becomes the
    extreme value of an integer dtype, which has no infinities.

    It must stay a concrete NumPy value, not a JAX array: `lax.reduce_window`
    recognises a max/add reduction (and so can differentiate it) only when it
    can read the initial value, which it cannot from a traced constant."""
    if isinstance(init, jax.Array):
        # Only if `init` was swapped for an array after construction (or the
        # Pool passed through `jax.jit` as a plain pytree): forward only.
        return lax.convert_element_type(init, dtype)
    if jnp.issubdtype(dtype, jnp.integer) and isinstance(init, float):
        if math.isinf(init):
            info = jnp.iinfo(dtype)
            init = info.min if init < 0 else info.max
    return np.asarray(init, dtype)


class Pool(Module):
    """A reduction over a sliding window of one channels-first example.

    Each channel is reduced separately: every window of `kernel_size`
    positions, `stride` apart, is folded with `operation` starting from
    `init`. Padding positions hold `init`.

    Args:
        init: the initial value of the reduction and the value of padding, e.g.
            `-jnp.inf` for a maximum, `0` for a sum. For the reduction to be
            differentiable, `operation(init, x) == x` must hold.
        operation: a binary function of two arrays, e.g. `jax.lax.max`.
        num_spatial_dims: the number of spatial dimensions `N`.
        kernel_size: the window's size (int, or one int per dimension).
        stride: the step between windows (int, or one int per dimension).
        padding: an int, one int per dimension (the same before and after), or
            one pair `(before, after)` per dimension; at most `kernel_size`.
        use_ceil: if `True`, round the output size up instead of down, by
            padding at the end where the windows do not fit exactly.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> pool = eqx.nn.Pool(0.0, jax.lax.add, 1, kernel_size=2, stride=2)
        >>> pool(jnp.arange(6.0)[None])
        Array([[1., 5., 9.]], dtype=float32)
    """

    # `init` and `operation` are pytree leaves, as in Equinox (non-array
    # leaves, so every filtered transform treats them as static): a model's
    # leaves, key paths and `tree_serialise_leaves` files (which hold `init`,
    # a Python number) then line up with Equinox's.
    init: int | float
    operation: Operation
    num_spatial_dims: int = field(static=True)
    kernel_size: tuple[int, ...] = field(static=True)
    stride: tuple[int, ...] = field(static=True)
    padding: tuple[tuple[int, int], ...] = field(static=True)
    use_ceil: bool = field(static=True)

    def __init__(
        self,
        init: int | float | jax.Array,
        operation: Operation,
        num_spatial_dims: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: PoolPadding = 0,
        use_ceil: bool = False,
    ):
        if not callable(operation):
            raise TypeError(
                "`operation` must be a function of two arrays, e.g. `jax.lax.max`; "
                f"got {operation!r}."
            )
        # `init` is configuration, not a parameter: a concrete 0-d array is
        # turned into the Python number it holds, so that no optimiser or
        # gradient sees it.
        if not isinstance(init, (int, float)):
            try:
                init = init.item()
            except (AttributeError, ValueError, TypeError):
                raise TypeError(
                    "`init` must be a Python number or a concrete 0-d array, e.g. "
                    f"`-jnp.inf` or `0`; got {init!r}."
                ) from None
        self.init = init
        self.operation = operation
        n = num_spatial_dims
        self.num_spatial_dims = n
        self.kernel_size = as_tuple(kernel_size, n, "kernel_size")
        self.stride = as_tuple(stride, n, "stride")
        self.padding = cast(
            tuple[tuple[int, int], ...], parse_padding(padding, n, strings=False)
        )
        for pads, k in zip(self.padding, self.kernel_size, strict=True):
            if max(pads) > k:
                raise ValueError(
                    f"`padding` must be at most `kernel_size` in every dimension, "
                    f"else some windows would hold padding only; got "
                    f"padding={self.padding} with kernel_size={self.kernel_size}."
                )
        self.use_ceil = use_ceil

    def _name(self) -> str:
        return f"{type(self).__name__}(kernel_size={self.kernel_size})"

    def _padding_for(self, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        """The padding for an input of `shape`, with `use_ceil` applied."""
        pads = []
        for size, (lo, hi), k, s in zip(
            shape[1:], self.padding, self.kernel_size, self.stride, strict=True
        ):
            if size + lo + hi < k:
                raise ValueError(
                    f"{self._name()}: a spatial dimension of `x` has size {size}, "
                    f"which with padding ({lo}, {hi}) is smaller than the window "
                    f"({k}); got input shape {shape}. Use a larger input or a "
                    "smaller `kernel_size`."
                )
            # Rounding up adds one more window at the end, unless that window
            # would start past the input and hold padding only.
            floor_windows = (size + lo + hi - k) // s + 1
            if (
                self.use_ceil
                and (size + lo + hi - k) % s
                and floor_windows * s < size + lo
            ):
                hi += s
            pads.append((lo, hi))
        return tuple(pads)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Pool one example.

        Args:
            x: an array of shape `(channels, dim_1, ..., dim_N)`.
            key: ignored; accepted so that all layers can be called alike.

        Returns:
            An array of shape `(channels, new_dim_1, ..., new_dim_N)`.
        """
        del key
        check_channels_first(self._name(), x, self.num_spatial_dims)
        pads = self._padding_for(x.shape)
        return lax.reduce_window(
            x,
            _init_for(self.init, x.dtype),
            self.operation,
            (1,) + self.kernel_size,
            (1,) + self.stride,
            ((0, 0),) + pads,
        )


class _FixedPool(Pool):
    """A `Pool` whose reduction and number of spatial dimensions are fixed by
    the subclass: the base of `MaxPool1d`-`3d` and `AvgPool1d`-`3d`.

    A subclass sets `_num_spatial_dims` and implements `_reduction`, which
    gives `init` and `operation`.
    """

    _num_spatial_dims: AbstractClassVar[int]

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: PoolPadding = 0,
        use_ceil: bool = False,
    ):
        init, operation = self._reduction()
        n = self._num_spatial_dims
        super().__init__(init, operation, n, kernel_size, stride, padding, use_ceil)

    @abc.abstractmethod
    def _reduction(self) -> tuple[int | float, Operation]:
        """`(init, operation)` for `Pool`."""


class _MaxPool(_FixedPool):
    def _reduction(self) -> tuple[int | float, Operation]:
        return -math.inf, lax.max


class _AvgPool(_FixedPool):
    def _reduction(self) -> tuple[int | float, Operation]:
        return 0, lax.add

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Average-pool one example: the window sums of `Pool.__call__` divided
        by the window size (padding counts as zeros in the average). The
        arguments and the shape of the result are those of `Pool.__call__`."""
        return super().__call__(x) / math.prod(self.kernel_size)


class MaxPool1d(_MaxPool):
    """The maximum over a sliding window along one spatial dimension:
    `Pool` with `init=-inf`, `operation=jax.lax.max` and `num_spatial_dims=1`.

    Takes `(channels, length)` and returns `(channels, new_length)`; padding
    never wins the maximum. The arguments are `Pool`'s `kernel_size`, `stride`,
    `padding` and `use_ceil`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.MaxPool1d(2, stride=2)(jnp.array([[1.0, 3.0, 2.0, 0.0]]))
        Array([[3., 2.]], dtype=float32)
    """

    _num_spatial_dims = 1


class MaxPool2d(_MaxPool):
    """The maximum over a sliding window along two spatial dimensions:
    `Pool` with `init=-inf`, `operation=jax.lax.max` and `num_spatial_dims=2`.

    Takes `(channels, height, width)` and returns
    `(channels, new_height, new_width)`; padding never wins the maximum. The
    arguments are `Pool`'s `kernel_size`, `stride`, `padding` and `use_ceil`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> pool = eqx.nn.MaxPool2d(2, stride=2)
        >>> pool(jnp.arange(16.0).reshape(1, 4, 4))
        Array([[[ 5.,  7.],
                [13., 15.]]], dtype=float32)
    """

    _num_spatial_dims = 2


class MaxPool3d(_MaxPool):
    """The maximum over a sliding window along three spatial dimensions:
    `Pool` with `init=-inf`, `operation=jax.lax.max` and `num_spatial_dims=3`.

    Takes `(channels, depth, height, width)` and returns
    `(channels, new_depth, new_height, new_width)`; padding never wins the
    maximum. The arguments are `Pool`'s `kernel_size`, `stride`, `padding` and
    `use_ceil`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.MaxPool3d(2, stride=2)(jnp.ones((3, 4, 4, 6))).shape
        (3, 2, 2, 3)
    """

    _num_spatial_dims = 3


class AvgPool1d(_AvgPool):
    """The average over a sliding window along one spatial dimension:
    a `Pool` sum (`init=0`, `operation=jax.lax.add`, `num_spatial_dims=1`)
    divided by the full window size, padding counted as zeros.

    Takes `(channels, length)` and returns `(channels, new_length)`. The
    arguments are `Pool`'s `kernel_size`, `stride`, `padding` and `use_ceil`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.AvgPool1d(2, stride=2)(jnp.array([[1.0, 3.0, 2.0, 0.0]]))
        Array([[2., 1.]], dtype=float32)
    """

    _num_spatial_dims = 1


class AvgPool2d(_AvgPool):
    """The average over a sliding window along two spatial dimensions:
    a `Pool` sum (`init=0`, `operation=jax.lax.add`, `num_spatial_dims=2`)
    divided by the full window size, padding counted as zeros.

    Takes `(channels, height, width)` and returns
    `(channels, new_height, new_width)`. The arguments are `Pool`'s
    `kernel_size`, `stride`, `padding` and `use_ceil`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.AvgPool2d(2, stride=2)(jnp.arange(16.0).reshape(1, 4, 4))
        Array([[[ 2.5,  4.5],
                [10.5, 12.5]]], dtype=float32)
    """

    _num_spatial_dims = 2


class AvgPool3d(_AvgPool):
    """The average over a sliding window along three spatial dimensions:
    a `Pool` sum (`init=0`, `operation=jax.lax.add`, `num_spatial_dims=3`)
    divided by the full window size, padding counted as zeros.

    Takes `(channels, depth, height, width)` and returns
    `(channels, new_depth, new_height, new_width)`. The arguments are `Pool`'s
    `kernel_size`, `stride`, `padding` and `use_ceil`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> eqx.nn.AvgPool3d(2, stride=2, use_ceil=True)(jnp.ones((1, 3, 4, 4))).shape
        (1, 2, 2, 2)
    """

    _num_spatial_dims = 3
