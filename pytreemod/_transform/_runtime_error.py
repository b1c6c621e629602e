"""The errors that `error_if` raises, and how a transform hands them back.

`error_if` (in `pytreemod._errors`) raises `EquinoxRuntimeError` from a host
callback while a compiled computation runs. JAX reports that as a
`jax.errors.JaxRuntimeError` whose text embeds ours; `filter_jit` calls
`as_runtime_error` to raise the `EquinoxRuntimeError` itself instead, so that
users catch one type. The classes live here, in layer 2, because `filter_jit`
needs them and must not import the layer above it.

`raise_from_host` remembers the last few messages it raised (a bounded deque,
appends are atomic), and `as_runtime_error` looks for one of them inside JAX's
error text: no parsing of JAX's formatting, which changes between versions.
"""

import collections
import logging

__all__ = [
    "EquinoxRuntimeError",
    "EquinoxTracetimeError",
    "PytreemodRuntimeError",
    "as_runtime_error",
    "raise_from_host",
]


class EquinoxRuntimeError(RuntimeError):
    """The error raised by `error_if` and `branched_error_if` when a check fails
    on runtime values (the name is Equinox's, so that code catching it runs
    unchanged).

    Raised directly by a `filter_jit` call whose computation failed a check, and
    by eager code whose predicate is a concrete array. Under plain `jax.jit`,
    JAX reports it as a `jax.errors.JaxRuntimeError` whose message contains
    this error's message. `pytreemod.PytreemodRuntimeError` is the same class.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> try:
        ...     pytreemod.error_if(jnp.array(-1.0), jnp.array(True), "negative")
        ... except pytreemod.EquinoxRuntimeError as e:
        ...     print(e)
        negative
    """


class EquinoxTracetimeError(RuntimeError):
    """The error raised by `error_if` when its predicate is a Python (or NumPy)
    bool that is true: the check fails before anything runs, at trace time
    under `jax.jit`.

    Example:
        >>> import pytreemod
        >>> try:
        ...     pytreemod.error_if(1.0, True, "always wrong")
        ... except pytreemod.EquinoxTracetimeError as e:
        ...     print(e)
        always wrong
    """


# pytreemod's earlier name for `EquinoxRuntimeError`: the same class.
PytreemodRuntimeError = EquinoxRuntimeError

# Shown (and matched by users) under their public names.
EquinoxRuntimeError.__module__ = "pytreemod"
EquinoxTracetimeError.__module__ = "pytreemod"

# The messages raised most recently by host callbacks. Only their text is
# kept; a few suffice, as JAX raises the first failure of a computation.
_RAISED: collections.deque[str] = collections.deque(maxlen=8)


class _DropOurCallbackErrors(logging.Filter):
    """JAX logs every exception raised in a `jax.debug.callback` before
    re-raising it. Ours is raised to the user anyway (with its full message),
    so the log would only print it twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, EquinoxRuntimeError)


# The logger of the module that runs `jax.debug.callback` on the host (only its
# name is used; a name that stops matching only brings the log line back).
_CALLBACK_LOGGER = "jax._src.debugging"
logging.getLogger(_CALLBACK_LOGGER).addFilter(_DropOurCallbackErrors())


def raise_from_host(message: str) -> None:
    """Raise `EquinoxRuntimeError(message)` from a host callback, remembering
    the message so that `as_runtime_error` can recognise it."""
    _RAISED.append(message)
    raise EquinoxRuntimeError(message)


def as_runtime_error(error: Exception) -> Exception:
    """`error` as the `EquinoxRuntimeError` it reports, if it is JAX's
    wrapping of one raised by `error_if` inside a computation; else `error`.

    Example:
        >>> import jax
        >>> from pytreemod._transform._runtime_error import as_runtime_error
        >>> error = jax.errors.JaxRuntimeError("INTERNAL: something else")
        >>> as_runtime_error(error) is error
        True
    """
    text = str(error)
    for message in reversed(_RAISED):
        if message in text:
            return EquinoxRuntimeError(message)
    return error
