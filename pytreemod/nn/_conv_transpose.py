"""`ConvTranspose` and `ConvTranspose1d`/`2d`/`3d`: transposed convolutions.

A transposed convolution goes the other way from a `Conv` with the same
`kernel_size`, `stride`, `padding`, `dilation`, `groups` and `padding_mode`:
from that convolution's output shape back to its input shape, with the same
connectivity. It is computed as one `lax.conv_general_dilated` whose input is
dilated by `stride` ("fractionally strided"), padded by `d * (k - 1)` on each
side, so that it produces every position the forward convolution touched.
The forward padding is then undone: cut off for `'ZEROS'`, and for the other
padding modes added back onto the positions it was copied from (the adjoint
of the copy), so that all four padding modes are supported.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._module._abstract import AbstractClassVar
from .._module._field import field
from ._conv import NUMPY_PAD_MODE, PaddingLike, _AbstractConv, as_tuple


def _transpose_geometry(
    size: int, k: int, s: int, d: int, pads: str | tuple[int, int], a: int
) -> tuple[int, int, int, int]:
    """For one spatial dimension of input `size`, return `(out, lo, hi, extra)`:
    the output size, the padding `(lo, hi)` of the forward convolution with
    input size `out`, and the number `extra` of trailing input positions of
    that forward convolution that no kernel position reaches (with
    `0 <= extra < s`).

    The forward convolution satisfies `out + lo + hi = (size - 1) * s + w +
    extra`, with `w = d * (k - 1) + 1` the dilated kernel extent.
    """
    w = d * (k - 1) + 1
    if isinstance(pads, str) and pads != "VALID":
        # 'SAME' on an input of size `out` gives `ceil(out / s) = size`, so
        # `out = size * s - a` for some `0 <= a < s`: `output_padding` picks it.
        out = size * s - a
        total = max((size - 1) * s + w - out, 0)
        lo = total // 2 if pads == "SAME" else (total + 1) // 2
        hi = total - lo
        extra = out + total - (size - 1) * s - w
        return out, lo, hi, extra
    lo, hi = (0, 0) if isinstance(pads, str) else pads
    out = (size - 1) * s + w - lo - hi + a
    return out, lo, hi, a


def _fold_padding(
    z: jax.Array, axis: int, size: int, lo: int, hi: int, mode: str
) -> jax.Array:
    """The adjoint of `jnp.pad(x, (lo, hi), mode)` along `axis`: each position
    of the padded `z` is added onto the position of `x` (of length `size`)
    that the padding copied it from."""
    source = np.pad(np.arange(size), (lo, hi), mode=mode)
    z = jnp.moveaxis(z, axis, 0)
    out = jnp.zeros((size,) + z.shape[1:], z.dtype).at[source].add(z)
    return jnp.moveaxis(out, 0, axis)


class ConvTranspose(_AbstractConv):
    """An N-dimensional transposed convolution over one channels-first example.

    It maps the output shape of a `Conv` built with the same `kernel_size`,
    `stride`, `padding`, `dilation`, `groups` and `padding_mode` (but
    `in_channels` and `out_channels` swapped) back to that convolution's
    input shape, with the same connectivity. Along each spatial dimension an
    input of size `n` gives an output of size
    `(n - 1) * stride + dilation * (kernel_size - 1) + 1 - before - after +
    output_padding` for explicit padding, and `n * stride - output_padding`
    for `'SAME'` / `'SAME_LOWER'`.

    To get the exact linear transpose (adjoint) of a particular `conv` with
    `groups=1`, give this layer the weight
    `jnp.flip(conv.weight, range(2, conv.weight.ndim)).swapaxes(0, 1)`.
    Weights and bias are initialised uniformly in `[-lim, lim]` with
    `lim = 1 / sqrt(in_channels // groups * prod(kernel_size))`.

    Args:
        num_spatial_dims: the number of spatial dimensions `N`.
        in_channels: the number of input channels.
        out_channels: the number of output channels.
        kernel_size: the kernel's size (int, or one int per dimension).
        stride: the stride of the matching forward `Conv`; here the input is
            spread out by it, so that the output is about `stride` times larger.
        padding: the padding of the matching forward `Conv`: an int, one int or
            one `(before, after)` pair per dimension, or `'VALID'`, `'SAME'`,
            `'SAME_LOWER'`. It makes the output smaller.
        output_padding: which of the `stride` input sizes that the forward
            `Conv` maps onto the same output size to produce (int or one per
            dimension, each below the stride): explicit padding adds it at the
            end; `'SAME'` padding subtracts it from `n * stride`.
        dilation: the spacing between kernel elements.
        groups: the number of independent channel groups; must divide
            `in_channels` and `out_channels`.
        use_bias: whether to add a learnt bias per output channel.
        padding_mode: the forward `Conv`'s padding mode: `'ZEROS'`,
            `'REFLECT'`, `'REPLICATE'` or `'CIRCULAR'`; the values that mode
            copies into the padding flow back to where they came from.
        dtype: the dtype of the weight and bias; defaults to `float32`
            (`float64` when JAX runs with `jax_enable_x64`).
        key: a `jax.random` key for the initialisation (keyword only).
        axes: optional logical axis names of `weight` for
            `pytreemod.sharding` (keyword only), as for `Conv`: `(out_name,
            in_name)` or one name per dimension `(out, in, *kernel)` of the
            weight, of shape `(out_channels, in_channels // groups,
            *kernel_size)`; the bias gets `(out_name, None, ...)`. Default
            `None`: unnamed (replicated). Static metadata: it adds no leaf.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> up = eqx.nn.ConvTranspose(2, 8, 3, kernel_size=4, stride=2, padding=1,
        ...                           key=jax.random.key(0))
        >>> up(jnp.ones((8, 5, 5))).shape
        (3, 10, 10)
    """

    # The fields before these are `_AbstractConv`'s.
    output_padding: tuple[int, ...] = field(static=True)
    dilation: tuple[int, ...] = field(static=True)
    groups: int = field(static=True)
    use_bias: bool = field(static=True)
    padding_mode: str = field(static=True)
    axes: tuple[str | None, ...] | None = field(static=True, default=None, repr=False)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: PaddingLike = 0,
        output_padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str = "ZEROS",
        dtype: Any = None,
        *,
        key: jax.Array,
        axes: Sequence[str | None] | None = None,
    ):
        super().__init__(
            num_spatial_dims,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            use_bias,
            padding_mode,
            dtype,
            key=key,
            axes=axes,
        )
        n = num_spatial_dims
        self.output_padding = as_tuple(output_padding, n, "output_padding", minimum=0)
        for a, s in zip(self.output_padding, self.stride, strict=True):
            if a >= s:
                raise ValueError(
                    f"`output_padding` must be smaller than `stride` in every "
                    f"dimension; got output_padding={self.output_padding} with "
                    f"stride={self.stride}. It selects one of the `stride` input "
                    "sizes of the forward convolution, so it is 0 when stride is 1."
                )

    def _convolve(self, x: jax.Array, name: str) -> jax.Array:
        geometry = []
        for axis, size in enumerate(x.shape[1:]):
            pads = self.padding if isinstance(self.padding, str) else self.padding[axis]
            k, s, d = self.kernel_size[axis], self.stride[axis], self.dilation[axis]
            out, lo, hi, extra = _transpose_geometry(
                size, k, s, d, pads, self.output_padding[axis]
            )
            if out < 1:
                raise ValueError(
                    f"{name}: spatial dimension {axis + 1} of `x` has size {size}, "
                    f"which gives an output of size {out}; got input shape "
                    f"{x.shape}. Use a larger input or less `padding`."
                )
            geometry.append((out, lo, hi, extra, d * (k - 1)))

        if self.padding_mode == "ZEROS":
            # Cut the forward padding off inside the convolution (negative
            # padding crops).
            conv_padding = [
                (r - lo, r - hi + extra) for _, lo, hi, extra, r in geometry
            ]
        else:
            conv_padding = [(r, r + extra) for *_, extra, r in geometry]
        out = lax.conv_general_dilated(
            x[None],
            self.weight,
            window_strides=(1,) * self.num_spatial_dims,
            padding=conv_padding,
            lhs_dilation=self.stride,
            rhs_dilation=self.dilation,
            feature_group_count=self.groups,
        )[0]
        if self.padding_mode != "ZEROS":
            mode = NUMPY_PAD_MODE[self.padding_mode]
            for axis, (size, lo, hi, _, _) in enumerate(geometry):
                out = _fold_padding(out, axis + 1, size, lo, hi, mode)
        return out


class _FixedDimsConvTranspose(ConvTranspose):
    """`ConvTranspose` with `num_spatial_dims` fixed by the subclass: the base
    of `ConvTranspose1d`, `2d` and `3d`, which set `_num_spatial_dims`. As in
    Equinox, `output_padding` comes before `padding` here."""

    _num_spatial_dims: AbstractClassVar[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        output_padding: int | Sequence[int] = 0,
        padding: PaddingLike = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str = "ZEROS",
        dtype: Any = None,
        *,
        key: jax.Array,
        axes: Sequence[str | None] | None = None,
    ):
        super().__init__(
            num_spatial_dims=self._num_spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
            use_bias=use_bias,
            padding_mode=padding_mode,
            dtype=dtype,
            key=key,
            axes=axes,
        )


class ConvTranspose1d(_FixedDimsConvTranspose):
    """A one-dimensional transposed convolution: `ConvTranspose` with
    `num_spatial_dims=1`.

    Takes `(in_channels, length)` and returns `(out_channels, new_length)`; the
    arguments are those of `ConvTranspose`, but `output_padding` comes before
    `padding` here, as in Equinox.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> up = eqx.nn.ConvTranspose1d(4, 2, kernel_size=3, stride=2,
        ...                             key=jax.random.key(0))
        >>> up(jnp.ones((4, 5))).shape
        (2, 11)
    """

    _num_spatial_dims = 1


class ConvTranspose2d(_FixedDimsConvTranspose):
    """A two-dimensional transposed convolution: `ConvTranspose` with
    `num_spatial_dims=2`.

    Takes `(in_channels, height, width)` and returns
    `(out_channels, new_height, new_width)`; the arguments are those of
    `ConvTranspose`, but `output_padding` comes before `padding` here and the
    defaults are written as tuples (`stride=(1, 1)`), as in Equinox.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> up = eqx.nn.ConvTranspose2d(4, 2, kernel_size=3, stride=2,
        ...                             output_padding=1, padding="SAME",
        ...                             key=jax.random.key(0))
        >>> up(jnp.ones((4, 5, 5))).shape
        (2, 9, 9)
    """

    _num_spatial_dims = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = (1, 1),
        output_padding: int | Sequence[int] = (0, 0),
        padding: PaddingLike = (0, 0),
        dilation: int | Sequence[int] = (1, 1),
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str = "ZEROS",
        dtype: Any = None,
        *,
        key: jax.Array,
        axes: Sequence[str | None] | None = None,
    ):
        # Equinox writes these defaults as tuples; they mean the same as ints.
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            output_padding,
            padding,
            dilation,
            groups,
            use_bias,
            padding_mode,
            dtype,
            key=key,
            axes=axes,
        )


class ConvTranspose3d(_FixedDimsConvTranspose):
    """A three-dimensional transposed convolution: `ConvTranspose` with
    `num_spatial_dims=3`.

    Takes `(in_channels, depth, height, width)` and returns
    `(out_channels, new_depth, new_height, new_width)`; the arguments are those
    of `ConvTranspose`, but `output_padding` comes before `padding` here and
    the defaults are written as tuples (`stride=(1, 1, 1)`), as in Equinox.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> up = eqx.nn.ConvTranspose3d(1, 1, kernel_size=2, stride=2,
        ...                             key=jax.random.key(0))
        >>> up(jnp.ones((1, 2, 3, 4))).shape
        (1, 4, 6, 8)
    """

    _num_spatial_dims = 3

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = (1, 1, 1),
        output_padding: int | Sequence[int] = (0, 0, 0),
        padding: PaddingLike = (0, 0, 0),
        dilation: int | Sequence[int] = (1, 1, 1),
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str = "ZEROS",
        dtype: Any = None,
        *,
        key: jax.Array,
        axes: Sequence[str | None] | None = None,
    ):
        # Equinox writes these defaults as tuples; they mean the same as ints.
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            output_padding,
            padding,
            dilation,
            groups,
            use_bias,
            padding_mode,
            dtype,
            key=key,
            axes=axes,
        )
