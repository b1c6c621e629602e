"""`SpectralNorm`: a layer whose weight is divided by an estimate of its
largest singular value, kept up to date by power iteration in the `State`."""

import functools
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax

from .._module._field import field
from .._module._tree_at import tree_at
from .._state._index import StateIndex
from .._state._state import State
from ._stateful import StatefulLayer

_Layer = TypeVar("_Layer")

# Power iterations run at construction, so that the first call starts from
# good singular vectors rather than random ones.
_INITIAL_ITERATIONS = 15


def _unit(v: jax.Array, eps: float) -> jax.Array:
    return v / jnp.maximum(jnp.linalg.norm(v), eps)


def _power_iteration(
    matrix: jax.Array, u: jax.Array, v: jax.Array, eps: float
) -> tuple[jax.Array, jax.Array]:
    """One step towards the leading left (`u`) and right (`v`) singular
    vectors of `matrix`."""
    u = _unit(matrix @ v, eps)
    v = _unit(matrix.T @ u, eps)
    return u, v


@functools.partial(jax.jit, static_argnums=3)
def _initial_vectors(
    matrix: jax.Array, u: jax.Array, v: jax.Array, eps: float
) -> tuple[jax.Array, jax.Array]:
    """`_INITIAL_ITERATIONS` power-iteration steps, compiled as one loop
    (cheaper than dispatching each operation eagerly)."""
    return lax.fori_loop(
        0,
        _INITIAL_ITERATIONS,
        lambda _, uv: _power_iteration(matrix, *uv, eps),
        (u, v),
    )


def _as_matrix(weight: jax.Array) -> jax.Array:
    """The weight as a matrix: the first axis (outputs) by all the others."""
    return jnp.reshape(weight, (weight.shape[0], -1))


class SpectralNorm(StatefulLayer, Generic[_Layer]):
    """Wrap a layer so that its weight `W` is used as `W / sigma(W)`, where
    `sigma(W)` estimates the largest singular value of `W` (reshaped to a
    matrix with the output axis first).

    The estimate comes from power iteration: the current left and right
    singular vectors `(u, v)` live in the `State`, and every training call
    refines them by `num_power_iterations` steps (with no gradient through
    them) before computing `sigma = u @ W @ v`. In inference mode they are
    used as they are. Call it as `y, state = layer(x, state)`.

    Args:
        layer: the layer to wrap, e.g. a `Linear` or a convolution.
        weight_name: the name of the layer's array field to normalise, e.g.
            `"weight"`; it must have at least two dimensions.
        num_power_iterations: power-iteration steps per training call.
        eps: the smallest norm divided by, for numerical safety.
        inference: whether to leave `(u, v)` unchanged; set by
            `pytreemod.nn.inference_mode`.
        key: a `jax.random` key for the initial `(u, v)` (keyword only).

    Raises:
        ValueError: if the weight is not an array of at least two dimensions.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> linear = pytreemod.nn.Linear(3, 3, key=jax.random.key(0))
        >>> linear = pytreemod.tree_at(lambda m: m.weight, linear, 5 * jnp.eye(3))
        >>> layer, state = pytreemod.nn.make_with_state(pytreemod.nn.SpectralNorm)(
        ...     linear, "weight", key=jax.random.key(1)
        ... )
        >>> y, state = layer(jnp.array([1.0, 0.0, 0.0]), state)
        >>> (y - linear.bias).round(4)  # 5 * I divided by its norm, 5
        Array([1., 0., 0.], dtype=float32)
    """

    layer: _Layer
    weight_name: str = field(static=True)
    uv_index: StateIndex[tuple[jax.Array, jax.Array]]
    num_power_iterations: int = field(static=True)
    eps: float = field(static=True)
    inference: bool

    def __init__(
        self,
        layer: _Layer,
        weight_name: str,
        num_power_iterations: int = 1,
        eps: float = 1e-12,
        inference: bool = False,
        *,
        key: jax.Array,
    ) -> None:
        weight = getattr(layer, weight_name, None)
        if getattr(weight, "ndim", 0) < 2:
            raise ValueError(
                f"SpectralNorm: `{type(layer).__name__}.{weight_name}` must be an "
                "array of at least two dimensions (a weight matrix or kernel); "
                f"got {weight!r}. Pass the name of the layer's weight field, "
                'e.g. `SpectralNorm(linear, "weight", key=key)`.'
            )
        matrix = _as_matrix(weight)
        u_key, v_key = jr.split(key)
        u = jr.normal(u_key, matrix.shape[:1], matrix.dtype)
        v = jr.normal(v_key, matrix.shape[1:], matrix.dtype)
        u, v = _initial_vectors(matrix, u, v, eps)
        self.layer = layer
        self.weight_name = weight_name
        self.uv_index = StateIndex((u, v))
        self.num_power_iterations = num_power_iterations
        self.eps = eps
        self.inference = inference

    def __call__(
        self,
        x: Any,
        state: State,
        *,
        key: jax.Array | None = None,
        inference: bool | None = None,
    ) -> tuple[Any, State]:
        """Call the wrapped layer with its weight spectrally normalised.

        Args:
            x: the input of the wrapped layer.
            state: the `State` holding `(u, v)`.
            key: ignored; accepted so that every layer can be called alike.
            inference: overrides the `inference` field for this call when not
                `None`.

        Returns:
            `(y, state)`: the wrapped layer's output and the new `State`.
        """
        del key
        if inference is None:
            inference = self.inference
        weight = getattr(self.layer, self.weight_name)
        matrix = _as_matrix(weight)
        u, v = state.get(self.uv_index)
        if not inference:
            fixed = lax.stop_gradient(matrix)
            for _ in range(self.num_power_iterations):
                u, v = _power_iteration(fixed, u, v, self.eps)
            state = state.set(self.uv_index, (u, v))
        sigma = u @ matrix @ v
        normalised = jnp.reshape(matrix / sigma, weight.shape)
        layer = tree_at(
            lambda wrapped: getattr(wrapped, self.weight_name), self.layer, normalised
        )
        return layer(x), state
