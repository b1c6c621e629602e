"""`BatchNorm`: normalisation by statistics taken across a named batch axis,
with running statistics kept in the `State`."""

from collections.abc import Hashable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from .._module._field import field
from .._state._index import StateIndex
from .._state._state import State
from ._checks import warn_at_caller
from ._init import resolve_dtype
from ._stateful import StatefulLayer

UNBOUND_AXIS_ERROR = """\
BatchNorm averages its statistics across the batch axis named {axis_name!r},
but no enclosing `vmap` binds that name. A layer sees one example at a time:
map the model over the batch and give the axis that name, e.g.
    pytreemod.filter_vmap(
        model, in_axes=(0, None), out_axes=(0, None), axis_name={axis_name!r}
    )(xs, state)
or `jax.vmap(..., axis_name={axis_name!r})`. The name must match
`BatchNorm(..., axis_name={axis_name!r})`."""

# The first sentence is Equinox's, word for word: code filters on it.
LEGACY_MODE_WARNING = """\
When `eqx.nn.BatchNorm(..., mode=...)` is unspecified it defaults to 'ema', \
for backward compatibility. pytreemod does the same: this layer keeps moving \
averages and normalises by them in training. Pass `mode` explicitly to \
silence this warning:
    BatchNorm(..., mode="batch")  # normalise by the batch statistics (often
                                  # faster, as in PyTorch and Flax)
    BatchNorm(..., mode="ema")    # keep the current behaviour"""


def _channel_mean(y: jax.Array) -> jax.Array:
    """Mean over every axis but the first (the channels)."""
    return jnp.mean(y, axis=tuple(range(1, y.ndim)))


def _per_channel(v: jax.Array, ndim: int) -> jax.Array:
    """`v` of shape `(C,)` reshaped to broadcast against an input of rank
    `ndim` with channels first (same rank, so no implicit rank promotion)."""
    return jnp.reshape(v, v.shape + (1,) * (ndim - 1))


class BatchNorm(StatefulLayer):
    """Normalise each channel by its mean and variance over the batch (and any
    spatial axes), then optionally scale and shift it per channel.

    The layer sees one example of shape `(input_size, *spatial)`; the batch
    is an axis of a `vmap` named `axis_name`, across which the statistics are
    averaged (`jax.lax.pmean`). It is stateful: call it as
    `y, state = bn(x, state)`.

    Training (`inference=False`) and inference differ by `mode`:

    - `"ema"`: the State keeps exponential moving averages of the batch mean
      and variance (`running = momentum * running + (1 - momentum) * batch`;
      the first batch fills them). Training normalises by the updated
      averages; inference by the stored ones.
    - `"batch"`: training normalises by the batch statistics themselves and
      updates zero-initialised moving averages and a step counter; inference
      normalises by the averages divided by `1 - momentum**steps` (bias
      correction), or by mean 0 and variance 1 before any training step.

    Args:
        input_size: the number of channels (the size of the input's first
            axis).
        axis_name: the name of the batch axis, as given to `vmap`
            (`axis_name=`); a sequence of names averages over several.
        eps: added to the variance before the square root.
        channelwise_affine: whether to learn a per-channel scale `weight`
            (starting at 1) and shift `bias` (starting at 0).
        momentum: the decay of the moving averages, in `[0, 1)`.
        inference: whether to use the stored statistics and leave the state
            unchanged; `pytreemod.nn.inference_mode` sets it.
        dtype: the dtype of the parameters and statistics; defaults to
            `float32` (`float64` with `jax_enable_x64`).
        mode: `"ema"` or `"batch"`, as above. Left out (`"legacy"`, the
            default, as in Equinox) it is `"ema"` with a `UserWarning` that
            asks for an explicit choice.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> bn, state = pytreemod.nn.make_with_state(pytreemod.nn.BatchNorm)(
        ...     2, axis_name="batch", mode="batch"
        ... )
        >>> xs = jnp.array([[1.0, 10.0], [3.0, 30.0]])  # a batch of 2 examples
        >>> ys, state = jax.vmap(
        ...     bn, axis_name="batch", in_axes=(0, None), out_axes=(0, None)
        ... )(xs, state)
        >>> ys.round(3)
        Array([[-1., -1.],
               [ 1.,  1.]], dtype=float32)
    """

    weight: jax.Array | None
    bias: jax.Array | None
    ema_first_time_index: StateIndex[jax.Array] | None
    ema_state_index: StateIndex[tuple[jax.Array, jax.Array]] | None
    batch_counter: StateIndex[jax.Array] | None
    batch_state_index: StateIndex[tuple[jax.Array, jax.Array]] | None
    axis_name: Hashable | Sequence[Hashable]
    inference: bool
    input_size: int = field(static=True)
    eps: float = field(static=True)
    channelwise_affine: bool = field(static=True)
    momentum: float = field(static=True)
    mode: Literal["ema", "batch"] = field(static=True)

    def __init__(
        self,
        input_size: int,
        axis_name: Hashable | Sequence[Hashable],
        eps: float = 1e-5,
        channelwise_affine: bool = True,
        momentum: float = 0.99,
        inference: bool = False,
        dtype: Any = None,
        mode: Literal["ema", "batch", "legacy"] = "legacy",
    ) -> None:
        if mode == "legacy":
            warn_at_caller(LEGACY_MODE_WARNING, UserWarning)
            mode = "ema"
        if mode not in ("ema", "batch"):
            raise ValueError(
                "Invalid mode, must be 'ema' or 'batch'. `BatchNorm(mode=...)` "
                f"got {mode!r}; leave it out for 'ema' (with a warning)."
            )
        if not isinstance(input_size, int) or input_size < 1:
            raise ValueError(
                f"`input_size` must be a positive int (the number of channels); "
                f"got {input_size!r}"
            )
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1); got {momentum!r}")
        dtype = resolve_dtype(dtype)
        size = (input_size,)
        if channelwise_affine:
            self.weight = jnp.ones(size, dtype)
            self.bias = jnp.zeros(size, dtype)
        else:
            self.weight = None
            self.bias = None
        self.ema_first_time_index = None
        self.ema_state_index = None
        self.batch_counter = None
        self.batch_state_index = None
        if mode == "ema":
            self.ema_first_time_index = StateIndex(jnp.array(True))
            self.ema_state_index = StateIndex(
                (jnp.zeros(size, dtype), jnp.ones(size, dtype))
            )
        else:
            # Weakly typed, as in Equinox (`steps + 1` keeps it so).
            self.batch_counter = StateIndex(jnp.array(0))
            self.batch_state_index = StateIndex(
                (jnp.zeros(size, dtype), jnp.zeros(size, dtype))
            )
        self.axis_name = axis_name
        self.inference = inference
        self.input_size = input_size
        self.eps = eps
        self.channelwise_affine = channelwise_affine
        self.momentum = momentum
        self.mode = mode

    def _batch_stats(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-channel mean and (biased) variance over the batch axis and the
        spatial axes."""
        try:
            mean = lax.pmean(_channel_mean(x), self.axis_name)
            centred = x - _per_channel(mean, x.ndim)
            square = jnp.real(centred * jnp.conj(centred))
            var = lax.pmean(_channel_mean(square), self.axis_name)
        except NameError:
            raise NameError(
                UNBOUND_AXIS_ERROR.format(axis_name=self.axis_name)
            ) from None
        return mean, var

    def __call__(
        self,
        x: jax.Array,
        state: State,
        *,
        key: jax.Array | None = None,
        inference: bool | None = None,
    ) -> tuple[jax.Array, State]:
        """Normalise one example.

        Args:
            x: an array of shape `(input_size, *spatial)`.
            state: the `State` holding this layer's statistics.
            key: ignored; accepted so that every layer can be called alike.
            inference: overrides the `inference` field for this call when not
                `None`.

        Returns:
            `(y, state)`: `y` of the shape of `x`, and the new `State` (the
            same values in inference mode).

        Raises:
            ValueError: if `x` does not have `input_size` channels first.
            NameError: in training mode, if no enclosing `vmap` binds
                `axis_name`.
        """
        del key
        if inference is None:
            inference = self.inference
        if jnp.ndim(x) == 0 or jnp.shape(x)[0] != self.input_size:
            raise ValueError(
                f"BatchNorm({self.input_size}): `x` must have shape "
                f"({self.input_size}, ...) with the channels first; got shape "
                f"{jnp.shape(x)}. The layer sees one example: map it over the "
                "batch with `filter_vmap`/`jax.vmap`."
            )
        if self.mode == "ema":
            mean, var, state = self._ema(x, state, inference)
        else:
            mean, var, state = self._batch(x, state, inference)
        y = (x - _per_channel(mean, x.ndim)) * _per_channel(
            lax.rsqrt(var + self.eps), x.ndim
        )
        if self.weight is not None and self.bias is not None:
            y = y * _per_channel(self.weight, x.ndim) + _per_channel(self.bias, x.ndim)
        return y, state

    def _ema(
        self, x: jax.Array, state: State, inference: bool
    ) -> tuple[jax.Array, jax.Array, State]:
        assert self.ema_first_time_index is not None
        assert self.ema_state_index is not None
        running_mean, running_var = state.get(self.ema_state_index)
        if inference:
            return running_mean, running_var, state
        first_time = state.get(self.ema_first_time_index)
        batch_mean, batch_var = self._batch_stats(x)
        # The statistics are kept in the layer's dtype, whatever the input's.
        batch_mean = batch_mean.astype(running_mean.dtype)
        batch_var = batch_var.astype(running_var.dtype)
        m = self.momentum
        mean = jnp.where(
            first_time, batch_mean, m * running_mean + (1 - m) * batch_mean
        )
        var = jnp.where(first_time, batch_var, m * running_var + (1 - m) * batch_var)
        state = state.set(self.ema_first_time_index, jnp.array(False))
        state = state.set(self.ema_state_index, (mean, var))
        return mean, var, state

    def _batch(
        self, x: jax.Array, state: State, inference: bool
    ) -> tuple[jax.Array, jax.Array, State]:
        assert self.batch_counter is not None
        assert self.batch_state_index is not None
        steps = state.get(self.batch_counter)
        average_mean, average_var = state.get(self.batch_state_index)
        m = self.momentum
        if inference:
            dtype = average_mean.dtype
            correction = 1 - jnp.power(jnp.asarray(m, dtype), steps.astype(dtype))
            trained = steps > 0
            safe = jnp.where(trained, correction, jnp.ones_like(correction))
            mean = jnp.where(trained, average_mean / safe, jnp.zeros_like(average_mean))
            var = jnp.where(trained, average_var / safe, jnp.ones_like(average_var))
            return mean, var, state
        mean, var = self._batch_stats(x)
        new_mean = m * average_mean + (1 - m) * mean.astype(average_mean.dtype)
        new_var = m * average_var + (1 - m) * var.astype(average_var.dtype)
        state = state.set(self.batch_counter, steps + 1)
        state = state.set(self.batch_state_index, (new_mean, new_var))
        return mean, var, state
