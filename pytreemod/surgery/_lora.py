"""`LoRALinear`, `add_lora`, `merge_lora`: low-rank adapters on linear
layers, added and merged back by selection."""

import math
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import jax.random as jr

from .._module._field import field
from ..nn._linear import Linear
from ..select._selector import as_selector, instance
from ._replace import replace

__all__ = ["LoRALinear", "add_lora", "merge_lora"]

_T = TypeVar("_T")


class LoRALinear(Linear):
    r"""A `Linear` layer with a trainable low-rank update: computes
    `W x + bias + (alpha / rank) * B (A x)`.

    `A` (field `a`, shape `(rank, in_features)`) starts random and `B` (field
    `b`, shape `(out_features, rank)`) starts at zero, so a fresh adapter
    gives exactly the wrapped layer's output. It is a `Linear` (a subclass),
    so it fits wherever one is declared, such as the projections of
    `nn.MultiheadAttention`. Train `a` and `b` only: partition the model by
    `select.instance(LoRALinear) & select.field("a", "b")`.

    Args:
        linear: the `Linear` layer to adapt (its arrays are kept as they are).
        rank: the rank of the update (a positive int).
        alpha: the scale numerator; the update is scaled by `alpha / rank`.
            Defaults to `rank` (a scale of 1).
        key: a `jax.random` key for `A` (keyword only).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> from pytreemod import surgery
        >>> linear = ptm.nn.Linear(4, 3, key=jax.random.key(0))
        >>> lora = surgery.LoRALinear(linear, rank=2, key=jax.random.key(1))
        >>> lora.a.shape, lora.b.shape
        ((2, 4), (3, 2))
        >>> x = jnp.arange(4.0)
        >>> bool(jnp.array_equal(lora(x), linear(x)))  # B = 0 at the start
        True
    """

    a: jax.Array = field(axes=lambda self: _axes(self, "a"))
    b: jax.Array = field(axes=lambda self: _axes(self, "b"))
    alpha: float = field(static=True)

    def __init__(
        self,
        linear: Linear,
        rank: int,
        *,
        alpha: float | None = None,
        key: jax.Array,
    ):
        if not isinstance(linear, Linear) or isinstance(linear, LoRALinear):
            raise TypeError(
                "`LoRALinear` adapts a plain `nn.Linear`; got "
                f"`{type(linear).__name__}`. To adapt a LoRALinear again, "
                "merge it first with `surgery.merge_lora`."
            )
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"`rank` must be a positive int; got {rank!r}.")
        if "scalar" in (linear.in_features, linear.out_features):
            raise ValueError(
                "`LoRALinear` adapts a `Linear` of vectors; this one has "
                f"in_features={linear.in_features!r}, "
                f"out_features={linear.out_features!r}."
            )
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.use_bias = linear.use_bias
        self.axes = linear.axes
        dtype = linear.weight.dtype
        n_in = linear.in_features
        self.a = jr.normal(key, (rank, n_in), dtype) / math.sqrt(n_in)
        self.b = jnp.zeros((linear.out_features, rank), dtype)
        self.alpha = float(rank if alpha is None else alpha)

    @property
    def rank(self) -> int:
        return self.a.shape[-2]

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """`W x + bias + (alpha / rank) B (A x)` for `x` of shape
        `(in_features,)`."""
        y = super().__call__(x)
        scale = jnp.asarray(self.alpha / self.rank, y.dtype)
        return y + scale * (self.b @ (self.a @ x))

    def merge(self) -> Linear:
        """The plain `Linear` with weight `W + (alpha / rank) B A`: the same
        outputs up to rounding (the merged weight is rounded once, the
        adapter's path twice).

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import pytreemod as ptm
            >>> from pytreemod import surgery
            >>> lora = surgery.LoRALinear(ptm.nn.Linear(4, 3, key=jax.random.key(0)),
            ...                           rank=2, key=jax.random.key(1))
            >>> lora = ptm.tree_at(lambda m: m.b, lora, jnp.ones((3, 2)))
            >>> merged = lora.merge()
            >>> type(merged).__name__
            'Linear'
            >>> bool(jnp.allclose(merged(jnp.ones(4)), lora(jnp.ones(4)), atol=1e-5))
            True
        """
        scale = jnp.asarray(self.alpha / self.rank, self.weight.dtype)
        merged = Linear.__new__(Linear)
        for name in ("bias", "in_features", "out_features", "use_bias", "axes"):
            object.__setattr__(merged, name, getattr(self, name))
        object.__setattr__(merged, "weight", self.weight + scale * (self.b @ self.a))
        return merged


def _axes(layer: LoRALinear, name: str) -> Any:
    """`a` takes the `in` axis name of the weight, `b` its `out` name; the
    rank axis is unnamed (replicated)."""
    if layer.axes is None:
        return None
    out_name, in_name = layer.axes
    return (None, in_name) if name == "a" else (out_name, None)


def add_lora(
    tree: _T,
    selection: Any,
    rank: int,
    *,
    alpha: float | None = None,
    key: jax.Array,
    missing_ok: bool = False,
) -> _T:
    r"""A copy of `tree` with each selected `nn.Linear` replaced by a
    `LoRALinear` around it (each with its own key for `A`); the output is
    unchanged until the adapters are trained. Inside an `nn.Stacked`, every
    layer gets its own adapter, stacked like the rest.

    Args:
        tree: a model.
        selection: which `Linear`s to adapt (a `pytreemod.select` selector,
            a key-path pattern or a type); it is narrowed to `nn.Linear`s, so
            `nn.MultiheadAttention` selects its four projections.
        rank: the rank of each update.
        alpha: the scale numerator (default `rank`: a scale of 1).
        key: a `jax.random` key (keyword only).
        missing_ok: allow a selection that matches no `Linear`.

    Returns:
        The adapted copy; everything else is the same objects.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> from pytreemod import select, surgery
        >>> mha = ptm.nn.MultiheadAttention(2, 8, key=jax.random.key(0))
        >>> qv = select.field("query_proj", "value_proj")
        >>> tuned = surgery.add_lora(mha, qv, rank=2, key=jax.random.key(1))
        >>> type(tuned.query_proj).__name__, type(tuned.key_proj).__name__
        ('LoRALinear', 'Linear')
        >>> x = jnp.ones((5, 8))
        >>> bool(jnp.array_equal(tuned(x, x, x), mha(x, x, x)))
        True
    """
    calls = iter(range(2**31))

    def adapt(linear: Linear) -> LoRALinear:
        return LoRALinear(linear, rank, alpha=alpha, key=jr.fold_in(key, next(calls)))

    linears = as_selector(selection) & instance(Linear)
    return replace(tree, linears, adapt, missing_ok=missing_ok)


def merge_lora(tree: _T, *, missing_ok: bool = False) -> _T:
    r"""A copy of `tree` with every `LoRALinear` merged back into a plain
    `nn.Linear` (`LoRALinear.merge`), inside `nn.Stacked` too.

    Args:
        tree: a model with adapters.
        missing_ok: allow a model without any `LoRALinear`.

    Returns:
        The merged copy: no `LoRALinear` left, the same outputs up to
        rounding.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> from pytreemod import surgery
        >>> mlp = ptm.nn.MLP(4, 2, 8, 1, key=jax.random.key(0))
        >>> tuned = surgery.add_lora(mlp, ptm.nn.Linear, rank=2, key=jax.random.key(1))
        >>> merged = surgery.merge_lora(tuned)
        >>> [type(layer).__name__ for layer in merged.layers]
        ['Linear', 'Linear']
    """
    return replace(tree, instance(LoRALinear), LoRALinear.merge, missing_ok=missing_ok)
