"""`clear_caches`: empty the caches of every live `filter_jit` function, and
JAX's own."""

import weakref
from typing import Protocol

import jax

__all__ = ["clear_caches", "track"]


class _Clearable(Protocol):
    def clear(self) -> None: ...


# The caches of live `filter_jit` functions. Weak: a function that the user
# drops goes away with its cache and compiled executables.
_LIVE: "weakref.WeakSet[_Clearable]" = weakref.WeakSet()


def track(cache: _Clearable) -> None:
    """Register a cache for `clear_caches` to clear."""
    _LIVE.add(cache)


def clear_caches() -> None:
    """Empty the cache of every live `filter_jit` function, then JAX's own
    caches (`jax.clear_caches()`).

    Each `filter_jit` function keeps its own compiled versions, one per
    argument structure and static values, and frees them when the function
    itself is garbage-collected; call this to free them sooner, e.g. between
    experiments in one long-running process. The next call of each function
    traces and compiles again.

    Returns:
        None.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @pytreemod.filter_jit
        ... @pytreemod.debug.assert_max_traces(max_traces=None)
        ... def double(x):
        ...     return 2 * x
        >>> _ = double(jnp.ones(2))
        >>> pytreemod.clear_caches()
        >>> _ = double(jnp.ones(2))
        >>> pytreemod.debug.get_num_traces(double)
        2
    """
    for cache in list(_LIVE):
        cache.clear()
    jax.clear_caches()
