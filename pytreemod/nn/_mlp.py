"""`MLP`, a multi-layer perceptron built from `Linear` layers."""

from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import jax.random as jr

from .._module._field import field
from .._module._is_array import is_array
from .._module._module import Module
from .._transform._vmap import filter_vmap
from ._checks import check_shape
from ._init import resolve_dtype
from ._linear import Linear, check_layer_axes

LayerAxes = tuple[str | None, str | None] | None


def _layer_axes(
    axes: Sequence[LayerAxes] | None, depth: int, scan: bool
) -> list[LayerAxes]:
    """`MLP(axes=...)` checked: one `Linear` `axes` (or `None`) per layer."""
    if axes is None:
        return [None] * (depth + 1)
    if isinstance(axes, str) or not isinstance(axes, Sequence):
        raise TypeError(
            "`MLP(axes=...)` must be a list with one `Linear(axes=...)` (or "
            f"`None`) per layer, {depth + 1} for depth={depth}; got {axes!r}."
        )
    if len(axes) != depth + 1:
        raise ValueError(
            f"`MLP(axes=...)` needs one entry per layer, {depth + 1} for "
            f"depth={depth} (input, {depth - 1 if depth else 0} hidden, output); "
            f"got {len(axes)}: {axes!r}."
        )
    names = [
        check_layer_axes("MLP", a, ("out", "in"), what=f"`MLP(axes=...)[{i}]`")
        for i, a in enumerate(axes)
    ]
    if scan and len(set(names[1:depth])) > 1:
        raise ValueError(
            "`MLP(scan=True)` stacks its hidden layers into one `Linear`, so "
            f"they share one `axes`; got {names[1:depth]!r} for layers 1 to "
            f"{depth - 1}. Give them equal names, or use `scan=False`."
        )
    return names


def _identity(x: Any) -> Any:
    return x


def _copies(fn: Any, leading: tuple[int, ...]) -> Any:
    """`fn` with every array leaf broadcast to the shape `leading + leaf.shape`:
    one independent copy of `fn` per position of `leading`."""
    return jax.tree_util.tree_map(
        lambda leaf: (
            jnp.broadcast_to(leaf, leading + jnp.shape(leaf))
            if is_array(leaf)
            else leaf
        ),
        fn,
    )


def _select(fn: Any, i: int | jax.Array) -> Any:
    """The `i`-th copy of `fn` made by `_copies`."""
    return jax.tree_util.tree_map(lambda leaf: leaf[i] if is_array(leaf) else leaf, fn)


# Applies the n-th copy of an activation to the n-th entry of a vector.
_apply_each = filter_vmap(lambda fn, x: fn(x))


class MLP(Module):
    """A multi-layer perceptron (feed-forward network) on a single vector.

    It holds `depth + 1` `Linear` layers: `in_size -> width_size`, then
    `depth - 1` hidden layers `width_size -> width_size`, then
    `width_size -> out_size` (with `depth=0`, one `in_size -> out_size`).
    `activation` follows every layer but the last, `final_activation` follows
    the last.

    As in Equinox, activations act on each scalar separately (an activation
    that mixes entries, such as `lambda h: h / h.sum()`, sees one entry at a
    time), and an activation with parameters, such as `PReLU`, gets
    independent parameters for each neuron: `activation`'s array leaves carry
    leading axes `(depth, width_size)`, `final_activation`'s a leading axis
    `(out_size,)`.

    Args:
        in_size: the input size, or `"scalar"` for inputs of shape `()`.
        out_size: the output size, or `"scalar"` for outputs of shape `()`.
        width_size: the size of each hidden layer.
        depth: the number of hidden layers.
        activation: applied after each hidden layer; defaults to ReLU.
        final_activation: applied after the output layer; defaults to the
            identity.
        use_bias: whether the hidden layers have biases.
        use_final_bias: whether the output layer has a bias.
        dtype: the dtype of the parameters; defaults to `float32` (`float64`
            with `jax_enable_x64`).
        scan: if `True`, the hidden layers are held as one `Linear` with
            stacked parameters and applied with `jax.lax.scan`, which compiles
            faster for large `depth` (keyword only).
        key: a `jax.random` key for the initialisation (keyword only).
        axes: optional logical axis names for `pytreemod.sharding` (keyword
            only): one `Linear(axes=(out_name, in_name))` per layer, `depth +
            1` in all (an entry may be `None`), e.g. for `depth=1`
            `[("mlp", "embed"), ("embed", "mlp")]`. With `scan=True` the
            hidden layers share one entry, and their stacked arrays get an
            unnamed leading layer dimension. Default `None`: unnamed
            (replicated). Static metadata, held by the `Linear`s: it adds no
            leaf.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> mlp = ptm.nn.MLP(2, "scalar", width_size=8, depth=2,
        ...                  key=jax.random.key(0))
        >>> len(mlp.layers)
        3
        >>> mlp(jnp.ones(2)).shape
        ()
    """

    layers: tuple[Linear, ...]
    activation: Callable[..., Any]
    final_activation: Callable[..., Any]
    use_bias: bool = field(static=True)
    use_final_bias: bool = field(static=True)
    in_size: int | Literal["scalar"] = field(static=True)
    out_size: int | Literal["scalar"] = field(static=True)
    width_size: int = field(static=True)
    depth: int = field(static=True)
    scan: bool = field(static=True, default=False)

    def __init__(
        self,
        in_size: int | Literal["scalar"],
        out_size: int | Literal["scalar"],
        width_size: int,
        depth: int,
        activation: Callable[..., Any] = jax.nn.relu,
        final_activation: Callable[..., Any] = _identity,
        use_bias: bool = True,
        use_final_bias: bool = True,
        dtype: Any = None,
        *,
        scan: bool = False,
        key: jax.Array,
        axes: Sequence[LayerAxes] | None = None,
    ):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"`depth` must be a non-negative int; got {depth!r}.")
        names = _layer_axes(axes, depth, scan)
        dtype = resolve_dtype(dtype)
        keys = jr.split(key, depth + 1)
        if depth == 0:
            layers = [
                Linear(
                    in_size,
                    out_size,
                    use_final_bias,
                    dtype=dtype,
                    key=keys[0],
                    axes=names[0],
                )
            ]
        else:

            def hidden(k: jax.Array, i: int) -> Linear:
                return Linear(
                    width_size, width_size, use_bias, dtype=dtype, key=k, axes=names[i]
                )

            layers = [
                Linear(
                    in_size,
                    width_size,
                    use_bias,
                    dtype=dtype,
                    key=keys[0],
                    axes=names[0],
                )
            ]
            if scan:
                stacked = jax.vmap(lambda k: hidden(k, 1))(keys[1:depth])
                if names[1] is not None:
                    # The stacked arrays have a leading layer dimension: name
                    # it `None`. `stacked` is a fresh copy made by `vmap`, so
                    # writing its static field changes nothing anyone holds.
                    object.__setattr__(stacked, "axes", (None, *names[1]))
                layers.append(stacked)
            else:
                layers.extend(hidden(keys[i], i) for i in range(1, depth))
            layers.append(
                Linear(
                    width_size,
                    out_size,
                    use_final_bias,
                    dtype=dtype,
                    key=keys[-1],
                    axes=names[-1],
                )
            )
        self.layers = tuple(layers)
        self.activation = _copies(activation, (depth, width_size))
        if out_size == "scalar":
            self.final_activation = final_activation
        else:
            self.final_activation = _copies(final_activation, (out_size,))
        self.use_bias = use_bias
        self.use_final_bias = use_final_bias
        self.in_size = in_size
        self.out_size = out_size
        self.width_size = width_size
        self.depth = depth
        self.scan = scan

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply the network to one example.

        Args:
            x: an array of shape `(in_size,)`, or `()` if `in_size="scalar"`.
            key: ignored; accepted so that every layer can be called alike.

        Returns:
            An array of shape `(out_size,)`, or `()` if `out_size="scalar"`.
        """
        del key
        if self.in_size == "scalar":
            expected: tuple[int, ...] = ()
        else:
            expected = (self.in_size,)
        check_shape(
            f"MLP(in_size={self.in_size!r}, out_size={self.out_size!r})",
            "x",
            x,
            expected,
        )
        if self.scan and self.depth > 0:
            first, hidden, last = self.layers
            x = _apply_each(_select(self.activation, 0), first(x))

            def step(h: jax.Array, i_layer: tuple[jax.Array, Linear]) -> Any:
                i, layer = i_layer
                return _apply_each(_select(self.activation, i), layer(h)), None

            x, _ = jax.lax.scan(step, x, (jnp.arange(1, self.depth), hidden))
        else:
            last = self.layers[-1]
            for i, layer in enumerate(self.layers[:-1]):
                x = _apply_each(_select(self.activation, i), layer(x))
        x = last(x)
        if self.out_size == "scalar":
            return self.final_activation(x)
        return _apply_each(self.final_activation, x)
