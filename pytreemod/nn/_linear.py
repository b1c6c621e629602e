"""`Linear`, an affine map, and `Identity`, a layer that does nothing."""

from typing import Any, Literal, TypeVar

import jax
import jax.numpy as jnp
import jax.random as jr

from .._module._field import check_axes, field
from .._module._module import Module
from ._checks import check_shape
from ._init import fan_in_limit, resolve_dtype, uniform_init

_T = TypeVar("_T")


class Linear(Module):
    """An affine map `x -> weight @ x + bias` on a single vector.

    `weight` has shape `(out_features, in_features)` and `bias` shape
    `(out_features,)`; both start uniform in `[-1/sqrt(in_features),
    1/sqrt(in_features)]`. Either size may be the string `"scalar"`, for an
    input or output of shape `()`.

    Args:
        in_features: the input size, or `"scalar"`.
        out_features: the output size, or `"scalar"`.
        use_bias: whether to add a bias.
        dtype: the dtype of the parameters; defaults to `float32` (`float64`
            with `jax_enable_x64`).
        key: a `jax.random` key for the initialisation (keyword only).
        axes: optional logical axis names `(out_name, in_name)` for
            `pytreemod.sharding` (keyword only): `weight` gets
            `(out_name, in_name)`, `bias` `(out_name,)`. E.g. an MLP's
            up-projection `("mlp", "embed")`, its down-projection
            `("embed", "mlp")`. Default `None`: unnamed (replicated). Static
            metadata: it adds no leaf.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
        >>> linear.weight.shape, linear.bias.shape
        ((2, 3), (2,))
        >>> linear(jnp.ones(3)).shape
        (2,)
        >>> jax.vmap(linear)(jnp.ones((5, 3))).shape  # a batch
        (5, 2)
    """

    weight: jax.Array = field(axes=lambda self: self.axes)
    # The bias takes the weight's names but the last (`in`): `(out,)`, or
    # `(None, out)` for the hidden layers `MLP(scan=True)` stacks.
    bias: jax.Array | None = field(
        axes=lambda self: None if self.axes is None else self.axes[:-1]
    )
    in_features: int | Literal["scalar"] = field(static=True)
    out_features: int | Literal["scalar"] = field(static=True)
    use_bias: bool = field(static=True)
    # pytreemod extension: logical axis names (out, in), read by
    # `pytreemod.sharding`; static, so the pytree's leaves are unchanged.
    axes: tuple[str | None, str | None] | None = field(
        static=True, default=None, repr=False
    )

    def __init__(
        self,
        in_features: int | Literal["scalar"],
        out_features: int | Literal["scalar"],
        use_bias: bool = True,
        dtype: Any = None,
        *,
        key: jax.Array,
        axes: tuple[str | None, str | None] | None = None,
    ):
        _check_size("in_features", in_features)
        self.axes = check_layer_axes("Linear", axes, ("out", "in"))
        _check_size("out_features", out_features)
        dtype = resolve_dtype(dtype)
        n_in = 1 if in_features == "scalar" else in_features
        n_out = 1 if out_features == "scalar" else out_features
        lim = fan_in_limit(n_in)
        weight_key, bias_key = jr.split(key)
        self.weight = uniform_init(weight_key, (n_out, n_in), dtype, lim)
        self.bias = uniform_init(bias_key, (n_out,), dtype, lim) if use_bias else None
        self.in_features = in_features
        self.out_features = out_features
        self.use_bias = use_bias

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply the map to one example.

        Args:
            x: an array of shape `(in_features,)`, or `()` if
                `in_features="scalar"`.
            key: ignored; accepted so that every layer can be called alike.

        Returns:
            An array of shape `(out_features,)`, or `()` if
            `out_features="scalar"`.
        """
        del key
        if self.in_features == "scalar":
            expected: tuple[int, ...] = ()
        else:
            expected = (self.in_features,)
        check_shape(
            f"Linear(in_features={self.in_features!r}, "
            f"out_features={self.out_features!r})",
            "x",
            x,
            expected,
        )
        if self.in_features == "scalar":
            x = jnp.reshape(x, (1,))
        y = self.weight @ x
        if self.bias is not None:
            y = y + self.bias
        if self.out_features == "scalar":
            y = jnp.reshape(y, ())
        return y


def _check_size(name: str, size: object) -> None:
    if size == "scalar":
        return
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(
            f"`{name}` must be a non-negative int or the string 'scalar'; got {size!r}."
        )


class Identity(Module):
    """A layer that returns its input unchanged; a placeholder for another layer.

    Its constructor accepts and ignores any arguments, so that it can stand in
    for a layer whose constructor takes some.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> identity = ptm.nn.Identity(3, key=None)
        >>> identity(jnp.arange(3))
        Array([0, 1, 2], dtype=int32)
    """

    def __init__(self, *args: Any, **kwargs: Any):
        del args, kwargs

    def __call__(self, x: _T, *, key: jax.Array | None = None) -> _T:
        """Return `x` unchanged.

        Args:
            x: anything.
            key: ignored; accepted so that every layer can be called alike.

        Returns:
            `x` itself.
        """
        del key
        return x


def check_layer_axes(
    layer: str, axes: object, names: tuple[str, ...], *, what: str | None = None
) -> Any:
    """A layer's `axes=` argument checked: `None`, or one logical name (or
    `None`) for each of `names`. Errors call the argument `what`, by default
    `` `{layer}(axes=...)` ``."""
    if axes is None:
        return None
    what = f"`{layer}(axes=...)`" if what is None else what
    axes = check_axes(axes, what)
    if callable(axes) or len(axes) != len(names):
        count = f"{len(names)} logical name{'' if len(names) == 1 else 's'}"
        raise ValueError(
            f"{what} takes {count}, for ({', '.join(names)}); got {axes!r}."
        )
    return axes
