"""`breakpoint_if`: `jax.debug.breakpoint` behind a runtime condition."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors._batch import collapse_batch as _collapse_batch

__all__ = ["breakpoint_if"]


def _open_breakpoint(kwargs: dict[str, Any]) -> Any:
    # Looked up at call time, so that the debugger JAX uses is the current one.
    return jax.debug.breakpoint(**kwargs)


def breakpoint_if(pred: Any, **kwargs: Any) -> Any:
    """Open a debugger, as `jax.debug.breakpoint` does, only where `pred` is
    true (anywhere, for an array).

    Works eagerly and inside `jax.jit`. Under `jax.vmap` the predicate is
    first reduced over the batch, so one breakpoint opens if any batch element
    asks for it (rather than one per element, or one always).

    Args:
        pred: a bool, or a boolean array of any shape.
        **kwargs: passed on to `jax.debug.breakpoint` (`backend`, `num_frames`,
            `filter_frames`, `ordered`, `token`).

    Returns:
        What `jax.debug.breakpoint` returns: the `token` keyword argument if
        one was given, else `None`.

    `jax.debug.breakpoint` flattens the locals and globals of every frame on
    the stack when it is traced; `num_frames=1` keeps only the caller's frame,
    which is cheaper and avoids JAX failing on a deeply nested object
    somewhere up the stack.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @jax.jit
        ... def checked_log(x):
        ...     pytreemod.debug.breakpoint_if(x <= 0, num_frames=1)
        ...     return jnp.log(x)
        >>> checked_log(jnp.array([1.0, 2.0]))  # all positive: no breakpoint
        Array([0.       , 0.6931472], dtype=float32)
    """
    token = kwargs.get("token")
    if not isinstance(pred, jax.core.Tracer):
        # Known in Python: decide now, adding nothing to the computation.
        if np.any(np.asarray(pred)):
            return _open_breakpoint(kwargs)
        return token
    flag, _ = _collapse_batch(jnp.any(pred), jnp.zeros((), jnp.int32))
    return jax.lax.cond(flag, lambda: _open_breakpoint(kwargs), lambda: token)
