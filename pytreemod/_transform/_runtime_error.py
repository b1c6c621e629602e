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

Programs mix the two libraries (diffrax, optimistix and optax bring Equinox
along), so each side recognises the other's errors, by text only: pytreemod
never imports Equinox.

- Equinox's `error_if` raises, in its host callback, an exception of a class
  named `_EquinoxRuntimeError` whose message is the user's followed by
  `EQUINOX_FOOTER`; `equinox_message` finds that message in JAX's text, and
  `as_runtime_error` raises it as an `EquinoxRuntimeError`.
- `equinox.filter_jit` reports an error cleanly when JAX's text holds that
  class name and its module global `last_error_info` holds the message and
  the stack. Ours is raised as a class of that name, and `raise_from_host`
  sets the global when Equinox is already loaded (`sys.modules` only).
"""

import collections
import logging
import sys

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


class _EquinoxRuntimeError(EquinoxRuntimeError):
    """What pytreemod's host callbacks raise. Its name is the marker that
    `equinox.filter_jit` looks for in JAX's error text (Equinox names its own
    callback error so), so that it reports ours as it reports its own."""


# Equinox's marker: the name of the class its `error_if` raises on the host,
# as JAX's error text shows it before the message (`..._EquinoxRuntimeError:
# message`), and the line that ends the user's message there (Equinox
# 0.11-0.13 append a note saying to use `equinox.filter_jit`).
_EQUINOX_ERROR_NAME = "_EquinoxRuntimeError"
EQUINOX_MARKER = _EQUINOX_ERROR_NAME + ": "
EQUINOX_FOOTER = "\n\n\n--------------------\n"

# What `filter_jit` raises for Equinox's `error_if` failing inside it.
_EQUINOX_ERROR = """\
{message}

-------------------
An `error_if` check of Equinox (used by a library built on it, such as diffrax
or optimistix) found this while a computation compiled by
`pytreemod.filter_jit` ran. Equinox does not say where the check was traced.
To investigate:
1) set the environment variable `EQX_ON_ERROR=breakpoint` to open a debugger
   where the check failed;
2) set `JAX_DISABLE_JIT=1` to run the program as plain Python, where the
   error is raised at the failing line."""

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


class _DropEquinoxCallbackErrors(logging.Filter):
    """JAX logs, with its traceback, the error Equinox's `error_if` raises in
    its `jax.pure_callback`; `equinox.filter_jit` hides that log while it runs,
    and this does the same for `pytreemod.filter_jit`. The error itself still
    reaches the user: its message is in the error JAX raises."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or type(error).__name__ != _EQUINOX_ERROR_NAME


# The loggers of the modules that run `jax.debug.callback` (ours) and
# `jax.pure_callback` (Equinox's) on the host (only their names are used; a
# name that stops matching only brings the log line back).
_CALLBACK_LOGGER = "jax._src.debugging"
_PURE_CALLBACK_LOGGER = "jax._src.callback"
logging.getLogger(_CALLBACK_LOGGER).addFilter(_DropOurCallbackErrors())
logging.getLogger(_PURE_CALLBACK_LOGGER).addFilter(_DropEquinoxCallbackErrors())


def raise_from_host(message: str, *, errors: str, stack: str) -> None:
    """Raise `message` as an `EquinoxRuntimeError` from a host callback,
    remembering it so that `as_runtime_error` can recognise it.

    Args:
        message: the whole message, as `filter_jit` raises it.
        errors: the failed checks' own messages, and `stack`: where they were
            traced; `equinox.filter_jit`, if Equinox is loaded, is handed the
            two to report the error in its own format.
    """
    _RAISED.append(message)
    _tell_equinox(errors, stack)
    raise _EquinoxRuntimeError(message)


def _tell_equinox(errors: str, stack: str) -> None:
    """Set `equinox._jit.last_error_info` as Equinox's own `error_if` does,
    if the user's program has loaded Equinox: `equinox.filter_jit` reads it
    when JAX's text holds `EQUINOX_MARKER`, and ours always does. Setting it
    also keeps `equinox.filter_jit` from reporting an earlier error of its
    own instead of ours."""
    module = sys.modules.get("equinox._jit")
    if module is not None and hasattr(module, "last_error_info"):
        module.last_error_info = (errors, [stack])


def equinox_message(text: str) -> str | None:
    """The message of Equinox's `error_if` inside JAX's error `text`, if that
    is what `text` reports; else `None`.

    Example:
        >>> from pytreemod._transform._runtime_error import equinox_message
        >>> text = (
        ...     "INTERNAL: CpuCallback error calling callback: Traceback ...\\n"
        ...     "_EquinoxRuntimeError: max_steps reached\\n\\n\\n"
        ...     "--------------------\\nAn error occurred ..."
        ... )
        >>> equinox_message(text)
        'max_steps reached'
        >>> equinox_message("INTERNAL: something else") is None
        True
    """
    start = text.find(EQUINOX_MARKER)
    if start == -1:
        return None
    start += len(EQUINOX_MARKER)
    end = text.find(EQUINOX_FOOTER, start)
    if end == -1:
        return None
    return text[start:end]


def as_runtime_error(error: Exception) -> Exception:
    """`error` as the `EquinoxRuntimeError` it reports, if it is JAX's
    wrapping of one raised by `error_if` (pytreemod's or Equinox's) inside a
    computation; else `error`.

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
    message = equinox_message(text)
    if message is not None:
        return EquinoxRuntimeError(_EQUINOX_ERROR.format(message=message))
    return error
