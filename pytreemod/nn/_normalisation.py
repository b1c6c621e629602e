"""`LayerNorm`, `RMSNorm` and `GroupNorm`: normalisations computed from the
example itself (no running statistics, so no `State`).

Each takes an optional `state` argument that it passes back unchanged, so
that it can stand wherever a `BatchNorm` could. They are `StatefulLayer`s
whose `is_stateful()` is `False`, so that `Sequential` calls them without a
state.
"""

import abc
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._module._field import field
from ._checks import check_shape
from ._init import resolve_dtype
from ._linear import check_layer_axes
from ._stateful import StatefulLayer


class _NoState:
    """Marks that no `state` was passed to a normalisation layer."""

    def __repr__(self) -> str:
        return "<no state>"


_NO_STATE: Any = _NoState()


def _compute_dtype(dtype: Any) -> Any:
    """Statistics are computed in at least `float32`, for accuracy with
    half-precision inputs."""
    if jnp.issubdtype(dtype, jnp.inexact) and jnp.dtype(dtype).itemsize >= 4:
        return dtype
    return jnp.float32


def _as_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _return(out: jax.Array, state: Any) -> Any:
    return out if state is _NO_STATE else (out, state)


class _StatelessNorm(StatefulLayer):
    """A normalisation that accepts a `state` but never needs one.

    A subclass implements `_check_input` and `_normalise`; statistics are
    computed in at least `float32`, and the output is cast back to the input's
    dtype.
    """

    def is_stateful(self) -> bool:
        """`False`: `Sequential` calls this layer as `layer(x, key=key)`.

        Returns:
            `False`.

        Example:
            >>> import pytreemod as ptm
            >>> ptm.nn.LayerNorm(3).is_stateful()
            False
        """
        return False

    @abc.abstractmethod
    def _check_input(self, x: jax.Array) -> None:
        """Raise a `ValueError` unless `x` has a shape this layer accepts."""

    @abc.abstractmethod
    def _normalise(self, y: jax.Array) -> jax.Array:
        """The output for the input `y`, already cast to the compute dtype."""

    def __call__(
        self, x: jax.Array, state: Any = _NO_STATE, *, key: jax.Array | None = None
    ) -> Any:
        """Normalise one example.

        Args:
            x: an array of the layer's input shape: `shape` for `LayerNorm` and
                `RMSNorm`, `(channels, *spatial)` for `GroupNorm`.
            state: optional; if given, it is returned unchanged beside the
                output, as `BatchNorm` would return its updated state.
            key: ignored; accepted so that every layer can be called alike.

        Returns:
            An array of the shape and dtype of `x`; or `(output, state)` if
            `state` was given.
        """
        del key
        self._check_input(x)
        out = self._normalise(x.astype(_compute_dtype(x.dtype)))
        return _return(out.astype(x.dtype), state)


class _ElementwiseNorm(_StatelessNorm):
    """What `LayerNorm` and `RMSNorm` share: the input shape, and an optional
    elementwise affine map with `weight` (initially ones) and `bias`
    (initially zeros) of that shape."""

    shape: tuple[int, ...] = field(static=True)
    eps: float = field(static=True)
    use_weight: bool = field(static=True)
    use_bias: bool = field(static=True)
    weight: jax.Array | None = field(axes=lambda self: self.axes)
    bias: jax.Array | None = field(axes=lambda self: self.axes)
    # pytreemod extension: logical names of the dimensions of `shape` (those
    # of `weight` and `bias`), read by `pytreemod.sharding`; static, so the
    # pytree's leaves are unchanged.
    axes: tuple[str | None, ...] | None = field(static=True, default=None, repr=False)

    def __init__(
        self,
        shape: int | Sequence[int],
        eps: float = 1e-5,
        use_weight: bool = True,
        use_bias: bool = True,
        dtype: Any = None,
        *,
        axes: Sequence[str | None] | None = None,
    ):
        dtype = resolve_dtype(dtype)
        self.shape = _as_shape(shape)
        self.axes = check_layer_axes(
            type(self).__name__,
            axes,
            tuple(f"shape[{i}]" for i in range(len(self.shape))),
        )
        self.eps = eps
        self.use_weight = use_weight
        self.use_bias = use_bias
        self.weight = jnp.ones(self.shape, dtype) if use_weight else None
        self.bias = jnp.zeros(self.shape, dtype) if use_bias else None

    def _check_input(self, x: jax.Array) -> None:
        check_shape(f"{type(self).__name__}(shape={self.shape})", "x", x, self.shape)

    def _affine(self, out: jax.Array) -> jax.Array:
        """`out * weight + bias`, leaving out what the layer does not use."""
        if self.weight is not None:
            out = out * self.weight.astype(out.dtype)
        if self.bias is not None:
            out = out + self.bias.astype(out.dtype)
        return out


_ELEMENTWISE_AFFINE = (
    "LayerNorm(elementwise_affine=...) is deprecated in favour of "
    "LayerNorm(use_weight=...) and LayerNorm(use_bias=...)"
)


class LayerNorm(_ElementwiseNorm):
    """Normalise a whole example to mean 0 and variance 1, then apply an
    elementwise affine map.

    Computes `(x - mean(x)) / sqrt(var(x) + eps) * weight + bias`, where the
    mean and variance are over all entries of `x`, and `weight` (initially
    ones) and `bias` (initially zeros) have the shape of `x`. To normalise over
    some axes only, map over the others with `jax.vmap`.

    Args:
        shape: the shape of the input (an int for a vector).
        eps: added to the variance for numerical stability.
        use_weight: whether to learn `weight`.
        use_bias: whether to learn `bias`.
        dtype: the dtype of `weight` and `bias`; defaults to `float32`
            (`float64` with `jax_enable_x64`).
        elementwise_affine: the deprecated name, kept as Equinox keeps it,
            for setting `use_weight` and `use_bias` together (warns).
        axes: optional logical axis names of `weight` and `bias` for
            `pytreemod.sharding` (keyword only): one name (or `None`) per
            dimension of `shape`, e.g. `("embed",)`. Default `None`: unnamed
            (replicated). Static metadata: it adds no leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> norm = ptm.nn.LayerNorm(4)
        >>> y = norm(jnp.array([1.0, 2.0, 3.0, 4.0]))
        >>> round(float(y.mean()), 6), round(float(y.std()), 3)
        (0.0, 1.0)
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        eps: float = 1e-5,
        use_weight: bool = True,
        use_bias: bool = True,
        dtype: Any = None,
        *,
        elementwise_affine: bool | None = None,
        axes: Sequence[str | None] | None = None,
    ):
        if elementwise_affine is not None:
            warnings.warn(_ELEMENTWISE_AFFINE, DeprecationWarning, stacklevel=2)
            use_weight = use_bias = elementwise_affine
        super().__init__(shape, eps, use_weight, use_bias, dtype, axes=axes)

    def _normalise(self, y: jax.Array) -> jax.Array:
        var = jnp.maximum(jnp.var(y), 0)
        return self._affine((y - jnp.mean(y)) * jax.lax.rsqrt(var + self.eps))


class RMSNorm(_ElementwiseNorm):
    """Rescale a whole example to unit root-mean-square, then apply an
    elementwise affine map.

    Computes `x / sqrt(mean(x**2) + eps) * weight + bias`: like `LayerNorm`
    without subtracting the mean. `weight` starts as ones and `bias` as zeros,
    both of the shape of `x`.

    Args:
        shape: the shape of the input (an int for a vector).
        eps: added to the mean square for numerical stability.
        use_weight: whether to learn `weight`.
        use_bias: whether to learn `bias`.
        dtype: the dtype of `weight` and `bias`; defaults to `float32`
            (`float64` with `jax_enable_x64`).
        axes: optional logical axis names of `weight` and `bias` for
            `pytreemod.sharding` (keyword only): one name (or `None`) per
            dimension of `shape`, e.g. `("embed",)`. Default `None`: unnamed
            (replicated). Static metadata: it adds no leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> norm = ptm.nn.RMSNorm(2, eps=0.0)
        >>> norm(jnp.array([1.0, 7.0]))  # divided by sqrt((1 + 49) / 2) = 5
        Array([0.2, 1.4], dtype=float32)
    """

    def _normalise(self, y: jax.Array) -> jax.Array:
        return self._affine(y * jax.lax.rsqrt(jnp.mean(y * y) + self.eps))


class GroupNorm(_StatelessNorm):
    """Split the channels into groups and normalise each group to mean 0 and
    variance 1, then apply a per-channel affine map.

    For an input of shape `(channels, *spatial)`, the channels are split into
    `groups` consecutive groups of `channels // groups`; each group's entries
    (over its channels and all spatial positions) are normalised by their own
    mean and variance. `weight` (initially ones) and `bias` (initially zeros)
    have shape `(channels,)`. With `groups=1` this is a `LayerNorm` with
    per-channel affine parameters; with `groups=channels`, instance norm.

    Args:
        groups: the number of groups; must divide `channels`.
        channels: the number of channels; may be `None` only when
            `channelwise_affine=False`.
        eps: added to the variance for numerical stability.
        channelwise_affine: whether to learn `weight` and `bias`.
        dtype: the dtype of `weight` and `bias`; defaults to `float32`
            (`float64` with `jax_enable_x64`).
        axes: optional logical axis name of the channels for
            `pytreemod.sharding` (keyword only), a 1-tuple such as
            `("channels",)`: `weight` and `bias`, of shape `(channels,)`, get
            it. Default `None`: unnamed (replicated). Static metadata: it adds
            no leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> norm = ptm.nn.GroupNorm(groups=2, channels=4)
        >>> x = jnp.arange(24.0).reshape(4, 6)  # 4 channels, 6 positions
        >>> y = norm(x)
        >>> y.shape, round(float(y[:2].mean()), 6), round(float(y[:2].std()), 3)
        ((4, 6), 0.0, 1.0)
    """

    groups: int = field(static=True)
    channels: int | None = field(static=True)
    eps: float = field(static=True)
    channelwise_affine: bool = field(static=True)
    weight: jax.Array | None = field(axes=lambda self: self.axes)
    bias: jax.Array | None = field(axes=lambda self: self.axes)
    # pytreemod extension: the logical name of the channel axis of `weight`
    # and `bias`, read by `pytreemod.sharding`; static, so no new leaf.
    axes: tuple[str | None] | None = field(static=True, default=None, repr=False)

    def __init__(
        self,
        groups: int,
        channels: int | None = None,
        eps: float = 1e-5,
        channelwise_affine: bool = True,
        dtype: Any = None,
        *,
        axes: Sequence[str | None] | None = None,
    ):
        self.axes = check_layer_axes("GroupNorm", axes, ("channels",))
        if groups < 1:
            raise ValueError(f"`groups` must be at least 1; got {groups}.")
        if channels is not None and channels % groups != 0:
            raise ValueError(
                f"`groups` must divide `channels`; got groups={groups}, "
                f"channels={channels}."
            )
        if channels is None and channelwise_affine:
            raise ValueError(
                "`channels` is needed to build the per-channel affine parameters: "
                "pass `GroupNorm(groups, channels)`, or "
                "`GroupNorm(groups, channelwise_affine=False)` to go without them."
            )
        dtype = resolve_dtype(dtype)
        self.groups = groups
        self.channels = channels
        self.eps = eps
        self.channelwise_affine = channelwise_affine
        self.weight = jnp.ones(channels, dtype) if channelwise_affine else None
        self.bias = jnp.zeros(channels, dtype) if channelwise_affine else None

    def _check_input(self, x: jax.Array) -> None:
        shape = np.shape(x)
        name = f"GroupNorm(groups={self.groups}, channels={self.channels})"
        if len(shape) == 0:
            raise ValueError(
                f"{name}: `x` must have shape (channels, *spatial); got shape ()."
            )
        if self.channels is not None and shape[0] != self.channels:
            raise ValueError(
                f"{name}: `x` must have shape ({self.channels}, *spatial); got "
                f"shape {shape}. A batch of examples is mapped over with "
                "`jax.vmap(norm)(x)`."
            )
        if shape[0] % self.groups != 0:
            raise ValueError(
                f"{name}: the number of channels, x.shape[0] = {shape[0]}, must be "
                f"divisible by groups = {self.groups}; got shape {shape}."
            )

    def _normalise(self, y: jax.Array) -> jax.Array:
        shape = y.shape
        grouped = y.reshape(self.groups, -1)
        mean = jnp.mean(grouped, axis=1, keepdims=True)
        var = jnp.maximum(jnp.var(grouped, axis=1, keepdims=True), 0)
        out = ((grouped - mean) * jax.lax.rsqrt(var + self.eps)).reshape(shape)
        if self.weight is not None and self.bias is not None:
            per_channel = (shape[0],) + (1,) * (len(shape) - 1)
            weight = self.weight.astype(y.dtype).reshape(per_channel)
            bias = self.bias.astype(y.dtype).reshape(per_channel)
            out = out * weight + bias
        return out
