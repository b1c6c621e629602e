"""`GRUCell` and `LSTMCell`: one time step of a recurrent network.

A cell maps `(input, hidden)` to the next hidden state; run it over a
sequence with `jax.lax.scan`, which traces it once whatever the length.
"""

import abc
import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr

from .._module._abstract import AbstractVar
from .._module._field import field
from .._module._module import Module
from ._checks import check_shape
from ._init import resolve_dtype, uniform_init


class _RecurrentCell(Module):
    """What `GRUCell` and `LSTMCell` share: the constructor's arguments, whose
    parameters all start uniform in `[-1/sqrt(hidden_size), 1/sqrt(hidden_size)]`,
    and the check on the input.

    A subclass implements `_init_parameters`, and declares the configuration
    fields after any parameter fields of its own.
    """

    weight_ih: jax.Array
    weight_hh: jax.Array
    bias: jax.Array | None
    input_size: AbstractVar[int]
    hidden_size: AbstractVar[int]
    use_bias: AbstractVar[bool]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_bias: bool = True,
        dtype: Any = None,
        *,
        key: jax.Array,
    ):
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.use_bias = use_bias
        self._init_parameters(resolve_dtype(dtype), math.sqrt(1 / hidden_size), key)

    @abc.abstractmethod
    def _init_parameters(self, dtype: Any, lim: float, key: jax.Array) -> None:
        """Set the parameters, drawn from `[-lim, lim]` with `key`."""

    def _check_input(self, input: jax.Array) -> str:
        """Raise unless `input` has shape `(input_size,)`; return the layer's
        name for further messages."""
        name = f"{type(self).__name__}({self.input_size}, {self.hidden_size})"
        check_shape(name, "input", input, (self.input_size,))
        return name


class GRUCell(_RecurrentCell):
    """One step of a gated recurrent unit (GRU).

    With `W_ih = [W_ir; W_iz; W_in]` of shape `(3 * hidden_size, input_size)`,
    `W_hh = [W_hr; W_hz; W_hn]` of shape `(3 * hidden_size, hidden_size)`,
    `bias = [b_r; b_z; b_n]` and `bias_n`, the step is

        r  = sigmoid(W_ir x + b_r + W_hr h)
        z  = sigmoid(W_iz x + b_z + W_hz h)
        n  = tanh(W_in x + b_n + r * (W_hn h + bias_n))
        h' = (1 - z) * n + z * h

    All parameters start uniform in `[-1/sqrt(hidden_size), 1/sqrt(hidden_size)]`.

    Args:
        input_size: the size of the input at each step.
        hidden_size: the size of the hidden state.
        use_bias: whether to add the biases.
        dtype: the dtype of the parameters; defaults to `float32` (`float64`
            with `jax_enable_x64`).
        key: a `jax.random` key for the initialisation (keyword only).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> cell = ptm.nn.GRUCell(3, 4, key=jax.random.key(0))
        >>> xs = jnp.ones((10, 3))  # a sequence of 10 inputs
        >>> step = lambda h, x: (cell(x, h), None)
        >>> h, _ = jax.lax.scan(step, jnp.zeros(4), xs)
        >>> h.shape
        (4,)
    """

    # `weight_ih`, `weight_hh` and `bias` are `_RecurrentCell`'s.
    bias_n: jax.Array | None
    input_size: int = field(static=True)
    hidden_size: int = field(static=True)
    use_bias: bool = field(static=True)

    def _init_parameters(self, dtype: Any, lim: float, key: jax.Array) -> None:
        ih_key, hh_key, bias_key, bias_n_key = jr.split(key, 4)
        h = self.hidden_size
        self.weight_ih = uniform_init(ih_key, (3 * h, self.input_size), dtype, lim)
        self.weight_hh = uniform_init(hh_key, (3 * h, h), dtype, lim)
        if self.use_bias:
            self.bias = uniform_init(bias_key, (3 * h,), dtype, lim)
            self.bias_n = uniform_init(bias_n_key, (h,), dtype, lim)
        else:
            self.bias = None
            self.bias_n = None

    def __call__(
        self, input: jax.Array, hidden: jax.Array, *, key: jax.Array | None = None
    ) -> jax.Array:
        """Take one step.

        Args:
            input: an array of shape `(input_size,)`.
            hidden: the hidden state, of shape `(hidden_size,)`.
            key: ignored; accepted so that every layer can be called alike.

        Returns:
            The next hidden state, of shape `(hidden_size,)`.
        """
        del key
        name = self._check_input(input)
        check_shape(name, "hidden", hidden, (self.hidden_size,))
        from_input = self.weight_ih @ input
        from_hidden = self.weight_hh @ hidden
        if self.bias is not None and self.bias_n is not None:
            from_input = from_input + self.bias
            from_hidden_n = jnp.split(from_hidden, 3)[2] + self.bias_n
        else:
            from_hidden_n = jnp.split(from_hidden, 3)[2]
        i_r, i_z, i_n = jnp.split(from_input, 3)
        h_r, h_z, _ = jnp.split(from_hidden, 3)
        reset = jax.nn.sigmoid(i_r + h_r)
        update = jax.nn.sigmoid(i_z + h_z)
        candidate = jnp.tanh(i_n + reset * from_hidden_n)
        return candidate + update * (hidden - candidate)


class LSTMCell(_RecurrentCell):
    """One step of a long short-term memory unit (LSTM).

    With `W_ih` of shape `(4 * hidden_size, input_size)`, `W_hh` of shape
    `(4 * hidden_size, hidden_size)` and `bias` of shape `(4 * hidden_size,)`,
    split in this order into input, forget, cell and output gates, the step
    from `(h, c)` is

        i, f, g, o = split(W_ih x + W_hh h + bias, 4)
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')

    All parameters start uniform in `[-1/sqrt(hidden_size), 1/sqrt(hidden_size)]`.

    Args:
        input_size: the size of the input at each step.
        hidden_size: the size of the hidden and cell states.
        use_bias: whether to add the bias.
        dtype: the dtype of the parameters; defaults to `float32` (`float64`
            with `jax_enable_x64`).
        key: a `jax.random` key for the initialisation (keyword only).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> cell = ptm.nn.LSTMCell(3, 4, key=jax.random.key(0))
        >>> state = (jnp.zeros(4), jnp.zeros(4))  # (h, c)
        >>> (h, c), _ = jax.lax.scan(lambda s, x: (cell(x, s), None),
        ...                          state, jnp.ones((10, 3)))
        >>> h.shape, c.shape
        ((4,), (4,))
    """

    # `weight_ih`, `weight_hh` and `bias` are `_RecurrentCell`'s.
    input_size: int = field(static=True)
    hidden_size: int = field(static=True)
    use_bias: bool = field(static=True)

    def _init_parameters(self, dtype: Any, lim: float, key: jax.Array) -> None:
        ih_key, hh_key, bias_key = jr.split(key, 3)
        h = self.hidden_size
        self.weight_ih = uniform_init(ih_key, (4 * h, self.input_size), dtype, lim)
        self.weight_hh = uniform_init(hh_key, (4 * h, h), dtype, lim)
        self.bias = (
            uniform_init(bias_key, (4 * h,), dtype, lim) if self.use_bias else None
        )

    def __call__(
        self,
        input: jax.Array,
        hidden: tuple[jax.Array, jax.Array],
        *,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Take one step.

        Args:
            input: an array of shape `(input_size,)`.
            hidden: the pair `(h, c)` of hidden and cell states, each of shape
                `(hidden_size,)`.
            key: ignored; accepted so that every layer can be called alike.

        Returns:
            The next pair `(h, c)`, each of shape `(hidden_size,)`.
        """
        del key
        name = self._check_input(input)
        if not isinstance(hidden, (tuple, list)) or len(hidden) != 2:
            raise ValueError(
                f"{name}: `hidden` must be a pair `(h, c)` of arrays of shape "
                f"({self.hidden_size},); got {type(hidden).__name__}."
            )
        h, c = hidden
        check_shape(name, "hidden[0]", h, (self.hidden_size,))
        check_shape(name, "hidden[1]", c, (self.hidden_size,))
        gates = self.weight_ih @ input + self.weight_hh @ h
        if self.bias is not None:
            gates = gates + self.bias
        i, f, g, o = jnp.split(gates, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, c
