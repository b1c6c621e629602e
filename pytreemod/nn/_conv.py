"""`Conv` and `Conv1d`/`Conv2d`/`Conv3d`: N-dimensional convolution layers.

This file also holds what the transposed convolutions share with them (the
base class `_AbstractConv`), and the argument parsing and input checks that
the pools share too (`as_tuple`, `parse_padding`, `check_channels_first`, ...).
"""

import abc
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import lax

from .._module._abstract import AbstractClassVar, AbstractVar
from .._module._field import check_axes, field
from .._module._module import Module
from ._init import fan_in_limit, resolve_dtype, uniform_init

PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]

PADDING_STRINGS = ("SAME", "SAME_LOWER", "VALID")
PADDING_MODES = ("ZEROS", "REFLECT", "REPLICATE", "CIRCULAR")
# How each non-zero padding mode is spelt for `jnp.pad` / `np.pad`.
NUMPY_PAD_MODE = {"REFLECT": "reflect", "REPLICATE": "edge", "CIRCULAR": "wrap"}

_PADDING_ERROR = """\
`padding` must be one of
  1. a string: 'SAME', 'SAME_LOWER' or 'VALID';
  2. a non-negative int, used before and after every spatial dimension;
  3. a sequence of {n} non-negative ints, one per spatial dimension;
  4. a sequence of {n} pairs `(before, after)` of non-negative ints.
Got {padding!r}."""

_BATCHED_HINT = (
    " Layers act on one unbatched example; it looks like `x` has a leading batch "
    "axis. Map the layer over it: `jax.vmap(layer)(x)` or "
    "`pytreemod.filter_vmap(layer)(x)`."
)


def as_tuple(
    value: int | Sequence[int], n: int, name: str, *, minimum: int = 1
) -> tuple[int, ...]:
    """`value` as a tuple of `n` ints, each at least `minimum` (0 or 1): an int is
    repeated `n` times. Raises a `ValueError` naming the argument `name`
    otherwise."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        result = tuple(value)
        if len(result) != n:
            raise ValueError(
                f"`{name}` must be an int or a sequence of {n} ints (one per "
                f"spatial dimension); got {value!r} of length {len(result)}."
            )
    else:
        result = (value,) * n
    for v in result:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
            kind = "positive" if minimum == 1 else "non-negative"
            raise ValueError(
                f"`{name}` must hold {kind} ints; got {value!r}. "
                f"Write e.g. `{name}={minimum + 1}` or `{name}={(minimum + 1,) * n}`."
            )
    return tuple(int(v) for v in result)


def _is_count(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0


def parse_padding(
    padding: PaddingLike, n: int, *, strings: bool = True
) -> str | tuple[tuple[int, int], ...]:
    """Normalise `padding` to an upper-case string or `n` pairs (before, after).

    With `strings=False`, the string forms are refused (pools take no strings).
    """
    if isinstance(padding, str) and strings:
        upper = padding.upper()
        if upper in PADDING_STRINGS:
            return upper
    elif _is_count(padding):
        return tuple((int(padding), int(padding)) for _ in range(n))
    elif isinstance(padding, Sequence) and len(padding) == n:
        if all(_is_count(p) for p in padding):
            return tuple((int(p), int(p)) for p in padding)
        pairs = []
        for p in padding:
            if not (isinstance(p, Sequence) and len(p) == 2 and all(map(_is_count, p))):
                break
            pairs.append((int(p[0]), int(p[1])))
        else:
            return tuple(pairs)
    message = _PADDING_ERROR.format(n=n, padding=padding)
    if not strings:
        message = message.replace(
            "  1. a string: 'SAME', 'SAME_LOWER' or 'VALID';\n", ""
        )
    raise ValueError(message)


def parse_padding_mode(padding_mode: str) -> str:
    """`padding_mode` in upper case, checked against `PADDING_MODES`."""
    upper = padding_mode.upper() if isinstance(padding_mode, str) else padding_mode
    if upper not in PADDING_MODES:
        raise ValueError(
            "`padding_mode` must be one of 'ZEROS', 'REFLECT', 'REPLICATE', "
            f"'CIRCULAR'; got {padding_mode!r}."
        )
    return upper


def check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    """Raise unless `groups` divides both channel counts."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"`groups` must be a positive int; got {groups!r}.")
    for name, channels in (
        ("in_channels", in_channels),
        ("out_channels", out_channels),
    ):
        if channels % groups != 0:
            raise ValueError(
                f"`{name}` (={channels}) must be divisible by `groups` (={groups}): "
                "each group convolves `in_channels // groups` input channels into "
                "`out_channels // groups` output channels."
            )


def check_channels_first(
    layer: str, x: Any, num_spatial_dims: int, channels: int | None = None
) -> None:
    """Raise a `ValueError` naming `layer` unless `x` has shape
    `(channels, dim_1, ..., dim_N)`; `channels=None` accepts any channel count."""
    shape = tuple(np.shape(x))
    dims = [f"dim_{i + 1}" for i in range(num_spatial_dims)]
    expected = "(" + ", ".join(
        ["channels" if channels is None else str(channels)] + dims
    )
    expected += ")"
    rank_ok = len(shape) == num_spatial_dims + 1
    if rank_ok and (channels is None or shape[0] == channels):
        return
    hint = ""
    if len(shape) == num_spatial_dims + 2 and (
        channels is None or shape[1] == channels
    ):
        hint = _BATCHED_HINT
    raise ValueError(
        f"{layer}: `x` must have shape {expected}, channels first, with "
        f"{num_spatial_dims} spatial dimension(s); got shape {shape}.{hint}"
    )


def check_dtype(layer: str, x: Any, weight: jax.Array) -> None:
    """Raise a `TypeError` naming `layer` unless `x` has the weight's dtype."""
    if jnp.dtype(x.dtype) != weight.dtype:
        raise TypeError(
            f"{layer}: `x` has dtype {jnp.dtype(x.dtype).name} but the weights are "
            f"{weight.dtype.name}. Cast the input, `layer(x.astype(jnp."
            f"{weight.dtype.name}))`, or build the layer with "
            f"`dtype=jnp.{jnp.dtype(x.dtype).name}`."
        )


def dilated_kernel(
    kernel_size: tuple[int, ...], dilation: tuple[int, ...]
) -> tuple[int, ...]:
    """The extent of each kernel dimension once dilated: `d * (k - 1) + 1`."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation, strict=True))


def explicit_padding(
    padding: str | tuple[tuple[int, int], ...],
    spatial_shape: tuple[int, ...],
    window: tuple[int, ...],
    stride: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """`padding` as pairs (before, after), resolving 'SAME'/'SAME_LOWER'/'VALID'
    for an input of `spatial_shape` and a (dilated) kernel of extent `window`."""
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(spatial_shape, window, stride, padding)
        return tuple((int(lo), int(hi)) for lo, hi in pads)
    return padding


def conv_axes(
    layer: str, axes: Sequence[str | None] | None, n: int
) -> tuple[str | None, ...] | None:
    """A convolution's `axes=` checked and completed to one name per weight
    dimension: `(out, in)` leaves the `n` kernel dimensions unnamed."""
    if axes is None:
        return None
    axes = check_axes(axes, f"`{layer}(axes=...)`")
    if callable(axes) or len(axes) not in (2, 2 + n):
        raise ValueError(
            f"`{layer}(axes=...)` takes 2 logical names, for (out, in), or "
            f"{2 + n}, one per dimension of the weight (out, in, "
            f"{', '.join(f'kernel_{i + 1}' for i in range(n))}); got {axes!r}."
        )
    return tuple(axes) + (None,) * (2 + n - len(axes))


class _AbstractConv(Module):
    """What `Conv` and `ConvTranspose` share: the arguments they parse, their
    weight and bias and how those start, and the checks on the input.

    A subclass implements `_convolve`, which maps a checked input to the output
    before the bias is added.
    """

    num_spatial_dims: int = field(static=True)
    weight: jax.Array = field(axes=lambda self: self.axes)
    bias: jax.Array | None = field(axes=lambda self: self._bias_axes())
    in_channels: int = field(static=True)
    out_channels: int = field(static=True)
    kernel_size: tuple[int, ...] = field(static=True)
    stride: tuple[int, ...] = field(static=True)
    padding: str | tuple[tuple[int, int], ...] = field(static=True)
    # Declared by the subclasses, so that `ConvTranspose` can put its
    # `output_padding` field right after `padding`.
    dilation: AbstractVar[tuple[int, ...]]
    groups: AbstractVar[int]
    use_bias: AbstractVar[bool]
    padding_mode: AbstractVar[str]
    # pytreemod extension: logical names of the weight's dimensions
    # (out, in, *spatial), read by `pytreemod.sharding`; a static field
    # declared last by each subclass, so the pytree's leaves are unchanged.
    axes: AbstractVar[tuple[str | None, ...] | None]

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
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
        n = num_spatial_dims
        self.axes = conv_axes(type(self).__name__, axes, n)
        self.num_spatial_dims = n
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = as_tuple(kernel_size, n, "kernel_size")
        self.stride = as_tuple(stride, n, "stride")
        self.padding = parse_padding(padding, n)
        self.dilation = as_tuple(dilation, n, "dilation")
        check_groups(in_channels, out_channels, groups)
        self.groups = groups
        self.use_bias = use_bias
        self.padding_mode = parse_padding_mode(padding_mode)

        dtype = resolve_dtype(dtype)
        weight_key, bias_key = jr.split(key)
        lim = fan_in_limit(in_channels // groups * math.prod(self.kernel_size))
        weight_shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = uniform_init(weight_key, weight_shape, dtype, lim)
        bias_shape = (out_channels,) + (1,) * n
        self.bias = uniform_init(bias_key, bias_shape, dtype, lim) if use_bias else None

    def _bias_axes(self) -> tuple[str | None, ...] | None:
        """The bias, of shape `(out_channels, 1, ..., 1)`, is named by the
        weight's first name; its size-1 dimensions stay unnamed."""
        if self.axes is None:
            return None
        return self.axes[:1] + (None,) * (len(self.axes) - 2)

    def _name(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size})"
        )

    @abc.abstractmethod
    def _convolve(self, x: jax.Array, name: str) -> jax.Array:
        """The output for a checked input `x`, before the bias; `name` names
        the layer in error messages."""

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Convolve one example.

        Args:
            x: an array of shape `(in_channels, dim_1, ..., dim_N)` with the
                layer's dtype.
            key: ignored; accepted so that all layers can be called alike.

        Returns:
            An array of shape `(out_channels, new_dim_1, ..., new_dim_N)`.
        """
        del key
        name = self._name()
        check_channels_first(name, x, self.num_spatial_dims, self.in_channels)
        check_dtype(name, x, self.weight)
        out = self._convolve(x, name)
        if self.use_bias:
            out = out + self.bias
        return out


class Conv(_AbstractConv):
    """An N-dimensional convolution over one channels-first example.

    Maps an input of shape `(in_channels, dim_1, ..., dim_N)` to an output of
    shape `(out_channels, new_dim_1, ..., new_dim_N)`. Weight and bias are
    drawn uniformly from `[-lim, lim]` with
    `lim = 1 / sqrt(in_channels // groups * prod(kernel_size))`.

    Args:
        num_spatial_dims: the number of spatial dimensions `N` (2 for images).
        in_channels: the number of input channels.
        out_channels: the number of output channels.
        kernel_size: the kernel's size: an int for every dimension, or one int
            per spatial dimension.
        stride: the step between kernel positions (int or one per dimension).
        padding: an int or one int per dimension (the same before and after),
            one pair `(before, after)` per dimension, or one of the strings
            `'VALID'` (no padding), `'SAME'` / `'SAME_LOWER'` (pad so that the
            output size is `ceil(input size / stride)`; an odd total puts the
            extra element after, respectively before).
        dilation: the spacing between kernel elements (int or one per dimension).
        groups: split the channels into this many independent groups; must
            divide `in_channels` and `out_channels`.
        use_bias: whether to add a learnt bias per output channel.
        padding_mode: what to pad with, shown for `1234` padded by 2 on each
            side: `'ZEROS'` (`00123400`), `'REFLECT'` (mirror without repeating
            the edge, `32123432`), `'REPLICATE'` (repeat the edge, `11123444`)
            or `'CIRCULAR'` (wrap around, `34123412`).
        dtype: the dtype of the weight and bias; defaults to `float32`
            (`float64` when JAX runs with `jax_enable_x64`).
        key: a `jax.random` key for the initialisation (keyword only).
        axes: optional logical axis names of `weight` for
            `pytreemod.sharding` (keyword only): `(out_name, in_name)`, or
            one name per weight dimension `(out, in, *kernel)`; the bias gets
            `(out_name, None, ...)`. E.g. `("channels_out", "channels_in")`.
            Default `None`: unnamed (replicated). Static metadata: it adds
            no leaf.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> conv = eqx.nn.Conv(2, 3, 8, kernel_size=3, padding="SAME",
        ...                    key=jax.random.key(0))
        >>> conv(jnp.ones((3, 16, 16))).shape
        (8, 16, 16)
        >>> conv.weight.shape, conv.bias.shape
        ((8, 3, 3, 3), (8, 1, 1))
    """

    # The fields before these are `_AbstractConv`'s.
    dilation: tuple[int, ...] = field(static=True)
    groups: int = field(static=True)
    use_bias: bool = field(static=True)
    padding_mode: str = field(static=True)
    axes: tuple[str | None, ...] | None = field(static=True, default=None, repr=False)

    def _convolve(self, x: jax.Array, name: str) -> jax.Array:
        window = dilated_kernel(self.kernel_size, self.dilation)
        padding = self.padding
        if padding != "SAME" and padding != "SAME_LOWER":
            pads = explicit_padding(padding, x.shape[1:], window, self.stride)
            for axis, (size, (lo, hi), w) in enumerate(
                zip(x.shape[1:], pads, window, strict=True)
            ):
                if size + lo + hi < w:
                    raise ValueError(
                        f"{name}: spatial dimension {axis + 1} of `x` has size "
                        f"{size}, which with padding ({lo}, {hi}) is smaller than "
                        f"the (dilated) kernel extent {w}; got input shape "
                        f"{x.shape}. Use a larger input, more padding, or "
                        "`padding='SAME'`."
                    )
        if self.padding_mode != "ZEROS":
            pads = explicit_padding(padding, x.shape[1:], window, self.stride)
            mode = NUMPY_PAD_MODE[self.padding_mode]
            x = jnp.pad(x, ((0, 0),) + pads, mode=mode)
            padding = "VALID"
        return lax.conv_general_dilated(
            x[None],
            self.weight,
            window_strides=self.stride,
            padding=padding,
            rhs_dilation=self.dilation,
            feature_group_count=self.groups,
        )[0]


class _FixedDimsConv(Conv):
    """`Conv` with `num_spatial_dims` fixed by the subclass: the base of
    `Conv1d`, `Conv2d` and `Conv3d`, which set `_num_spatial_dims`."""

    _num_spatial_dims: AbstractClassVar[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
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
            dilation=dilation,
            groups=groups,
            use_bias=use_bias,
            padding_mode=padding_mode,
            dtype=dtype,
            key=key,
            axes=axes,
        )


class Conv1d(_FixedDimsConv):
    """A one-dimensional convolution: `Conv` with `num_spatial_dims=1`.

    Takes `(in_channels, length)` and returns `(out_channels, new_length)`;
    the arguments are those of `Conv`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> conv = eqx.nn.Conv1d(2, 4, kernel_size=3, stride=2, key=jax.random.key(0))
        >>> conv(jnp.ones((2, 9))).shape
        (4, 4)
    """

    _num_spatial_dims = 1


class Conv2d(_FixedDimsConv):
    """A two-dimensional convolution: `Conv` with `num_spatial_dims=2`.

    Takes `(in_channels, height, width)` and returns
    `(out_channels, new_height, new_width)`; the arguments are those of `Conv`
    (the defaults written as tuples, `stride=(1, 1)`, as in Equinox).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> conv = eqx.nn.Conv2d(3, 6, kernel_size=(3, 5), padding=((1, 1), (2, 2)),
        ...                      groups=3, key=jax.random.key(0))
        >>> conv(jnp.ones((3, 8, 8))).shape
        (6, 8, 8)
    """

    _num_spatial_dims = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = (1, 1),
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
            padding,
            dilation,
            groups,
            use_bias,
            padding_mode,
            dtype,
            key=key,
            axes=axes,
        )


class Conv3d(_FixedDimsConv):
    """A three-dimensional convolution: `Conv` with `num_spatial_dims=3`.

    Takes `(in_channels, depth, height, width)` and returns
    `(out_channels, new_depth, new_height, new_width)`; the arguments are those
    of `Conv` (the defaults written as tuples, `stride=(1, 1, 1)`, as in
    Equinox).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod as eqx
        >>> conv = eqx.nn.Conv3d(1, 2, kernel_size=2, padding_mode="CIRCULAR",
        ...                      padding=1, key=jax.random.key(0))
        >>> conv(jnp.ones((1, 4, 4, 4))).shape
        (2, 5, 5, 5)
    """

    _num_spatial_dims = 3

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = (1, 1, 1),
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
            padding,
            dilation,
            groups,
            use_bias,
            padding_mode,
            dtype,
            key=key,
            axes=axes,
        )
