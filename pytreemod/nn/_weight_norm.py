"""`WeightNorm`, which splits a layer's weight into a direction and a length."""

from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from .._module._field import field
from .._module._is_array import is_array
from .._module._module import Module
from .._module._tree_at import tree_at

_Layer = TypeVar("_Layer")


def _norm_except(v: jax.Array, axis: int | None) -> jax.Array:
    """The 2-norm of `v` over every axis except `axis` (over all if `None`),
    keeping the reduced axes as size 1."""
    if axis is None:
        reduce: tuple[int, ...] = tuple(range(v.ndim))
    else:
        keep = axis % v.ndim
        reduce = tuple(i for i in range(v.ndim) if i != keep)
    return jnp.sqrt(jnp.sum(jnp.square(jnp.abs(v)), axis=reduce, keepdims=True))


class WeightNorm(Module, Generic[_Layer]):
    """Reparameterise one weight of a layer as a length times a direction.

    The weight `W` of `layer` is replaced by `g * v / norm(v)`, where the
    direction `v` is `layer`'s own weight (initially `W`) and the length `g`
    starts at `norm(W)`, so that the layer initially computes what it did.
    The norm is taken over every axis except `axis`: with the default
    `axis=0`, each output neuron (row of a `Linear`'s weight, output channel
    of a convolution's) has its own length. Training `v` and `g` separately
    is Salimans and Kingma's weight normalisation (2016).

    Args:
        layer: the layer to wrap, e.g. a `Linear` or a convolution.
        weight_name: the name of the array field of `layer` to normalise.
        axis: the axis not to reduce over; `None` reduces over all axes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> linear = ptm.nn.Linear(3, 2, key=jax.random.key(0))
        >>> normed = ptm.nn.WeightNorm(linear)
        >>> normed.g.shape  # one length per output
        (2, 1)
        >>> x = jnp.ones(3)
        >>> bool(jnp.allclose(normed(x), linear(x)))
        True
    """

    layer: _Layer
    g: jax.Array
    weight_name: str = field(static=True)
    axis: int | None = field(static=True)

    def __init__(
        self, layer: _Layer, weight_name: str = "weight", axis: int | None = 0
    ):
        weight = getattr(layer, weight_name, None)
        if not is_array(weight):
            raise ValueError(
                f"WeightNorm: `layer` has no array field {weight_name!r} to "
                f"normalise (it is a {type(layer).__name__}); pass the name of its "
                "weight as `weight_name=`."
            )
        ndim = np.ndim(weight)
        if axis is not None and not -ndim <= axis < ndim:
            raise ValueError(
                f"WeightNorm: `axis` must be None or an axis of the weight "
                f"{weight_name!r} of shape {np.shape(weight)}; got axis={axis}."
            )
        self.layer = layer
        self.weight_name = weight_name
        self.axis = axis
        self.g = _norm_except(jnp.asarray(weight), axis)

    def _weight(self) -> jax.Array:
        """The weight the wrapped layer uses: `g * v / norm(v)`."""
        v = getattr(self.layer, self.weight_name)
        return self.g * (v / _norm_except(v, self.axis))

    def __call__(self, x: Any, *, key: jax.Array | None = None) -> Any:
        """Call the wrapped layer with the normalised weight in place.

        Args:
            x: the input of the wrapped layer.
            key: passed on to the wrapped layer when given.

        Returns:
            What the wrapped layer returns.
        """
        name = self.weight_name
        layer: Any = tree_at(lambda lay: getattr(lay, name), self.layer, self._weight())
        return layer(x) if key is None else layer(x, key=key)
