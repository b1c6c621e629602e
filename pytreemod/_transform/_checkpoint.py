"""`filter_checkpoint`: `jax.checkpoint` (rematerialisation) for functions of
arbitrary pytrees."""

from collections.abc import Callable
from typing import Any, TypeVar, overload

import jax
from typing_extensions import ParamSpec

from .._module._field import field
from .._module._is_array import is_array
from .._module._module import Module
from .._module._partial import Partial, module_update_wrapper
from ._filters import _Static, combine, partition

__all__ = ["filter_checkpoint"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_NOT_CALLABLE = (
    "`filter_checkpoint` needs a callable to checkpoint; got {got!r}. To pass "
    "options, write `@filter_checkpoint(policy=...)` with keyword arguments."
)


class _Checkpointed(Module):
    """The callable that `filter_checkpoint` returns; a Module, so that the
    function it wraps (a bound method, say) is part of its pytree."""

    _fun: Callable[..., Any]
    _prevent_cse: bool = field(static=True)
    _policy: Callable[..., bool] | None = field(static=True)

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self._fun

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        dynamic, static = partition((args, kwargs), is_array)
        fun = self._fun

        def checkpointed(dyn: Any) -> Any:
            a, k = combine(dyn, static)
            out_dynamic, out_static = partition(fun(*a, **k), is_array)
            return out_dynamic, _Static(out_static)

        remat = jax.checkpoint(
            checkpointed, prevent_cse=self._prevent_cse, policy=self._policy
        )
        out_dynamic, box = remat(dynamic)
        return combine(out_dynamic, box.value)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # As a decorator on a method, bind the instance as the first argument.
        if instance is None:
            return self
        return Partial(self, instance)


@overload
def filter_checkpoint(
    *, prevent_cse: bool = True, policy: Callable[..., bool] | None = None
) -> Callable[[Callable[_P, _T]], Callable[_P, _T]]: ...
@overload
def filter_checkpoint(
    fun: Callable[_P, _T],
    *,
    prevent_cse: bool = True,
    policy: Callable[..., bool] | None = None,
) -> Callable[_P, _T]: ...
def filter_checkpoint(
    fun: Callable[..., Any] | None = None,
    *,
    prevent_cse: bool = True,
    policy: Callable[..., bool] | None = None,
) -> Any:
    """Checkpoint `fun`: under reverse-mode differentiation, recompute its
    intermediate values on the backward pass instead of storing them, trading
    compute for memory.

    Like `jax.checkpoint`, but `fun` may take and return any pytrees: arrays
    are traced, everything else is passed through as it is.

    Args:
        fun: the function. Leave it out to get a decorator:
            `@filter_checkpoint(policy=...)`.
        prevent_cse: as for `jax.checkpoint`: stop XLA from merging the
            recomputation with the forward computation. Can be set to `False`
            under `jax.lax.scan`, which already prevents that.
        policy: as for `jax.checkpoint`: which intermediate values may be saved
            after all, for example `jax.checkpoint_policies.dots_saveable`.

    Returns:
        A function with `fun`'s signature and results.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @pytreemod.filter_checkpoint
        ... def layer(x, activation):
        ...     return activation(jnp.sin(x))
        >>> jax.grad(lambda x: layer(x, jnp.exp))(jnp.zeros(()))
        Array(1., dtype=float32)
    """

    def wrap(f: Callable[..., Any]) -> Any:
        if not callable(f):
            raise TypeError(_NOT_CALLABLE.format(got=f))
        return module_update_wrapper(_Checkpointed(f, bool(prevent_cse), policy), f)

    if fun is None:
        return wrap
    return wrap(fun)
