"""Loss scaling for float16 training: `DynamicLossScale`, `StaticLossScale`
and `NoOpLossScale`, the three with one interface (`scale`, `unscale`,
`adjust`).

float16 has five exponent bits: small gradients underflow to zero. Scaling the
loss up before differentiating (and the gradients down after) keeps them in
range; when the scale is so large that something overflows, the gradients are
not finite, the step is skipped (`select_tree`) and the scale lowered. Each
scale is a pytreemod Module, so it passes into and out of `filter_jit` as an
argument, its numbers as arrays (no retrace when they change) and its settings
as static fields.
"""

from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._module._field import field
from .._module._module import Module
from ._dtypes import is_float_array

__all__ = ["DynamicLossScale", "NoOpLossScale", "StaticLossScale"]


def _times(tree: Any, factor: jax.Array) -> Any:
    """Every floating array of `tree` times `factor`, in its own dtype."""
    return jtu.tree_map(
        lambda x: x * factor.astype(x.dtype) if is_float_array(x) else x, tree
    )


class NoOpLossScale(Module):
    """No loss scaling (for float32 or bfloat16): `scale` and `unscale` return
    their argument, `adjust` returns `self`.

    Example:
        >>> import jax.numpy as jnp, pytreemod as ptm
        >>> s = ptm.policy.NoOpLossScale()
        >>> float(s.unscale(s.scale(jnp.array(3.0))))
        3.0
    """

    def scale(self, tree: Any) -> Any:
        """`tree`, unchanged."""
        return tree

    def unscale(self, tree: Any) -> Any:
        """`tree`, unchanged."""
        return tree

    def adjust(self, grads_finite: jax.Array) -> "NoOpLossScale":
        """`self`: a fixed scale of 1 never changes."""
        del grads_finite
        return self


class StaticLossScale(Module):
    """Loss scaling by a fixed factor.

    Args:
        scale: the factor (e.g. `2.0**10`).

    Example:
        >>> import jax.numpy as jnp, pytreemod as ptm
        >>> s = ptm.policy.StaticLossScale(8.0)
        >>> float(s.scale(jnp.array(3.0))), float(s.unscale(jnp.array(24.0)))
        (24.0, 3.0)
    """

    loss_scale: jax.Array

    def __init__(self, scale: Any):
        self.loss_scale = jnp.asarray(scale, jnp.float32)

    def scale(self, tree: Any) -> Any:
        """Every floating array of `tree` (the loss) times the scale."""
        return _times(tree, self.loss_scale)

    def unscale(self, tree: Any) -> Any:
        """Every floating array of `tree` (the gradients) divided by the scale."""
        return _times(tree, 1 / self.loss_scale)

    def adjust(self, grads_finite: jax.Array) -> "StaticLossScale":
        """`self`: a static scale never changes."""
        del grads_finite
        return self


class DynamicLossScale(Module):
    """Loss scaling that adapts: lowered after every step whose gradients are
    not finite, raised after `period` finite steps in a row.

    After a step, `adjust(all_finite(grads))` returns the next scale:

    - gradients not finite: `scale / factor` (at least `min_scale`), and the
      count of finite steps starts again; the step itself should be skipped
      (`pytreemod.policy.select_tree`).
    - gradients finite: the count goes up by one; at `period` it starts again
      and the scale becomes `scale * factor`.

    Args:
        scale: the initial scale (e.g. `2.0**15`).
        period: how many finite steps in a row before the scale is raised.
        factor: what the scale is multiplied or divided by.
        min_scale: the scale never goes below this.

    Example:
        >>> import jax.numpy as jnp, pytreemod as ptm
        >>> s = ptm.policy.DynamicLossScale(2.0**15, period=2)
        >>> s = s.adjust(jnp.array(False))
        >>> float(s.loss_scale), int(s.counter)
        (16384.0, 0)
        >>> s = s.adjust(jnp.array(True)).adjust(jnp.array(True))
        >>> float(s.loss_scale)
        32768.0
    """

    loss_scale: jax.Array
    counter: jax.Array
    period: int = field(static=True)
    factor: float = field(static=True)
    min_scale: float = field(static=True)

    def __init__(
        self,
        scale: Any = 2.0**15,
        *,
        period: int = 2000,
        factor: float = 2.0,
        min_scale: float = 1.0,
        counter: Any = 0,
    ):
        if not isinstance(period, int) or isinstance(period, bool) or period < 1:
            raise ValueError(f"`period` must be a positive int; got {period!r}.")
        if not factor > 1:
            raise ValueError(f"`factor` must be greater than 1; got {factor!r}.")
        if not min_scale > 0:
            raise ValueError(f"`min_scale` must be positive; got {min_scale!r}.")
        self.loss_scale = jnp.asarray(scale, jnp.float32)
        self.counter = jnp.asarray(counter, jnp.int32)
        self.period = period
        self.factor = float(factor)
        self.min_scale = float(min_scale)

    def scale(self, tree: Any) -> Any:
        """Every floating array of `tree` (the loss) times the scale."""
        return _times(tree, self.loss_scale)

    def unscale(self, tree: Any) -> Any:
        """Every floating array of `tree` (the gradients) divided by the scale."""
        return _times(tree, 1 / self.loss_scale)

    def adjust(self, grads_finite: jax.Array) -> "DynamicLossScale":
        """The scale for the next step, given whether this step's gradients
        were all finite (`pytreemod.policy.all_finite(grads)`)."""
        finite = jnp.asarray(grads_finite, bool)
        counter = self.counter + 1
        raise_now = counter >= self.period
        factor = jnp.float32(self.factor)
        grown = jnp.where(raise_now, self.loss_scale * factor, self.loss_scale)
        grown = jnp.where(jnp.isfinite(grown), grown, self.loss_scale)
        shrunk = jnp.maximum(self.loss_scale / factor, jnp.float32(self.min_scale))
        return DynamicLossScale(
            jnp.where(finite, grown, shrunk),
            period=self.period,
            factor=self.factor,
            min_scale=self.min_scale,
            counter=jnp.where(finite & ~raise_now, counter, 0),
        )
