"""`error_if` and `branched_error_if`: raise an error from runtime values, also
under `jax.jit`, `jax.vmap` and autodiff.

How the check is built, from the outside in:

1. If `pred` (and `index`) are concrete values, the check happens in Python at
   once: nothing is added to any computation.
2. Otherwise `pred` is reduced to one scalar bool and passed through
   `_collapse_batch`, a `custom_vmap` function whose batching rule reduces over
   the batch as well (any element fails, the largest failing `index` wins).
   Under eager `jax.vmap` or `jax.grad` that makes it concrete again, so step 1
   applies after all.
3. Still traced: the arrays of `x` go through `_checked`, a `custom_jvp`
   function whose primal is `lax.cond(pred, fail, identity, arrays)`. `fail`
   calls `jax.debug.callback`, which raises `PytreemodRuntimeError` on the
   host. Tangents pass straight through (they never meet the `cond`).

`jax.debug.callback` is effectful, so the compiler never removes the check,
even when only derivatives of `x` are used (`jax.grad` of a function linear in
`x`, `jax.jacfwd`): a `pure_callback` in the `cond` would be dropped there.
"""

import functools
import inspect
import os
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap

from .._module._is_array import is_array
from ._filters import combine, partition

__all__ = ["PytreemodRuntimeError", "branched_error_if", "error_if"]

_T = TypeVar("_T")

_NO_ARRAYS = """\
`error_if` got a traced `pred`, but `x` holds no arrays. The check is attached
to the arrays of `x`: the returned `x` is computed only after the check. Pass
the array(s) that the condition is about, and use the returned value:
    x = pytreemod.error_if(x, x < 0, "x must be non-negative")
If nothing suitable exists, pass the predicate itself:
    pred = pytreemod.error_if(pred, pred, "...")"""

_PRED_NOT_BOOL = (
    "`pred` must be a bool or a boolean array (such as `x < 0`); got {got}. "
    "Compare explicitly, e.g. `pred = count != 0`."
)

_BAD_INDEX = (
    "`index` must be a scalar integer (a Python int or an integer array of shape "
    "()); got {got}."
)

_INDEX_OUT_OF_RANGE = (
    "`index` is {index}, but there are only {count} message(s) in `msgs`; it must "
    "lie in [0, {count})."
)

# The package directories whose frames are not the user's call site.
_OWN_DIRS = (
    os.path.dirname(os.path.abspath(jax.__file__)) + os.sep,
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
)


_REPORTED = re.compile(
    r"PytreemodRuntimeError: (.*?\(error_if called at [^\n]*\))", re.S
)


def as_runtime_error(error: Exception) -> Exception:
    """`error` as the `PytreemodRuntimeError` it reports, if it is JAX's
    wrapping of one raised by `error_if` inside a computation; else `error`.
    `filter_jit` uses this so users catch one exception type."""
    found = _REPORTED.findall(str(error))
    if not found:
        return error
    return PytreemodRuntimeError(found[-1])


class PytreemodRuntimeError(RuntimeError):
    """The error raised by `error_if` and `branched_error_if`.

    Raised directly when the predicate is known in Python (eagerly, or at trace
    time). When the predicate is only known inside a compiled computation, it is
    raised on the host while that computation runs: a `filter_jit` call raises
    it as this type; under plain `jax.jit`, JAX reports it as a
    `jax.errors.JaxRuntimeError` whose message contains
    `PytreemodRuntimeError: <msg>`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> try:
        ...     pytreemod.error_if(jnp.array(-1.0), jnp.array(True), "negative")
        ... except pytreemod.PytreemodRuntimeError as e:
        ...     print(e)
        negative
    """


# Shown (and matched by users) under its public name.
PytreemodRuntimeError.__module__ = "pytreemod"


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _call_site() -> str:
    """`file:line in function` of the nearest frame outside pytreemod and jax."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            filename = os.path.abspath(frame.f_code.co_filename)
            if not filename.startswith(_OWN_DIRS):
                return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
            frame = frame.f_back
        return "<unknown>"
    finally:
        del frame


def _raise_from_host(msgs: tuple[str, ...], site: str, index: np.ndarray) -> None:
    """The host side of a failed traced check."""
    i = int(np.max(index))
    if 0 <= i < len(msgs):
        message = msgs[i]
    else:
        message = (
            f"(branched_error_if was given the index {i}, outside the "
            f"{len(msgs)} message(s) it has)"
        )
    raise PytreemodRuntimeError(f"{message}\n(error_if called at {site})")


@custom_vmap
def _collapse_batch(pred: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
    return pred, index


@_collapse_batch.def_vmap
def _collapse_batch_rule(
    axis_size: int, in_batched: list[bool], pred: jax.Array, index: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], tuple[bool, bool]]:
    pred_batched, index_batched = in_batched
    if not pred_batched:
        pred = jnp.broadcast_to(pred, (axis_size,))
    if not index_batched:
        index = jnp.broadcast_to(index, (axis_size,))
    # The message of a failing element: the largest index among those.
    chosen = jnp.max(jnp.where(pred, index, jnp.zeros_like(index)))
    # Called again so that an enclosing vmap collapses its own axis too.
    return _collapse_batch(jnp.any(pred), chosen), (False, False)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _checked(
    arrays: Any, pred: jax.Array, index: jax.Array, msgs: tuple[str, ...], site: str
) -> Any:
    def fail(values: Any) -> Any:
        jax.debug.callback(functools.partial(_raise_from_host, msgs, site), index)
        return values

    return jax.lax.cond(pred, fail, lambda values: values, arrays)


@_checked.defjvp
def _checked_jvp(
    msgs: tuple[str, ...], site: str, primals: tuple, tangents: tuple
) -> tuple[Any, Any]:
    arrays, pred, index = primals
    return _checked(arrays, pred, index, msgs, site), tangents[0]


def _check_pred(pred: Any) -> None:
    if isinstance(pred, (bool, np.bool_)):
        return
    dtype = getattr(pred, "dtype", None)
    if dtype is None:
        raise TypeError(_PRED_NOT_BOOL.format(got=f"a {type(pred).__name__}"))
    if dtype != np.bool_:
        raise TypeError(_PRED_NOT_BOOL.format(got=f"an array of dtype {dtype}"))


def _check_index(index: Any, count: int) -> None:
    if isinstance(index, bool):
        raise TypeError(_BAD_INDEX.format(got="a bool"))
    if isinstance(index, (int, np.integer)):
        shape: tuple[int, ...] = ()
    elif is_array(index):
        if not jnp.issubdtype(index.dtype, jnp.integer):
            raise TypeError(_BAD_INDEX.format(got=f"an array of dtype {index.dtype}"))
        shape = index.shape
    else:
        raise TypeError(_BAD_INDEX.format(got=f"a {type(index).__name__}"))
    if shape != ():
        raise TypeError(_BAD_INDEX.format(got=f"an array of shape {shape}"))
    if not _is_traced(index):
        value = int(index)
        if not 0 <= value < count:
            raise IndexError(_INDEX_OUT_OF_RANGE.format(index=value, count=count))


def _check_msgs(msgs: Any) -> tuple[str, ...]:
    if isinstance(msgs, str) or not isinstance(msgs, Sequence):
        raise TypeError(
            "`msgs` must be a sequence of strings, such as a list; got "
            f"{type(msgs).__name__}. For one message, use `error_if(x, pred, msg)` "
            "or pass `[msg]`."
        )
    if not msgs:
        raise ValueError("`msgs` must hold at least one message; got an empty one.")
    for i, msg in enumerate(msgs):
        if not isinstance(msg, str):
            raise TypeError(
                f"`msgs[{i}]` must be a string; got {type(msg).__name__} {msg!r}."
            )
    return tuple(msgs)


def _raise_now_or_return(x: _T, pred: Any, index: Any, msgs: tuple[str, ...]) -> _T:
    """The check for a concrete `pred` and `index`."""
    if np.any(np.asarray(pred)):
        raise PytreemodRuntimeError(msgs[int(index)])
    return x


def error_if(x: _T, pred: Any, msg: str) -> _T:
    """Return `x` unchanged, but raise an error with `msg` if `pred` is true
    anywhere. Works eagerly and inside `jax.jit`, `jax.vmap` and autodiff.

    When the error surfaces:

    - `pred` concrete (eager code, also under eager `jax.vmap`/`jax.grad`, or a
      constant inside `jax.jit`): `PytreemodRuntimeError` is raised at once, by
      this call (so inside `jax.jit`, at trace time).
    - `pred` traced (inside `jax.jit`, `pytreemod.filter_jit`, `lax.scan`, ...):
      when the compiled computation runs, as a `jax.errors.JaxRuntimeError`
      (a `RuntimeError`) whose message contains
      `PytreemodRuntimeError: <msg>` and where `error_if` was called.
      On CPU with jax 0.10, a computation that contains the check runs
      synchronously, so the jitted call itself raises; where JAX dispatches
      asynchronously, it is raised at the latest when the result is waited
      for (`block_until_ready`, printing, `np.asarray`).

    The returned `x` is computed after the check: use it in place of `x`. Under
    `jax.vmap` the error is raised if any batch element fails. Derivatives
    pass through unchanged, and the check is kept when only derivatives of `x`
    are used. Unlike Equinox, the check also runs when the returned value is
    unused (it is never removed as dead code); there is no switch to turn
    checks off or into NaNs.

    Args:
        x: any pytree. If `pred` is traced, it must hold at least one array.
        pred: a bool or boolean array; the error is raised if any element is
            `True`.
        msg: the error message.

    Returns:
        `x`, unchanged.

    Raises:
        PytreemodRuntimeError: at once, if `pred` is concrete and true.
        TypeError: if `pred` is not boolean or `msg` not a string.
        ValueError: if `pred` is traced and `x` holds no arrays.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @jax.jit
        ... def safe_log(x):
        ...     x = pytreemod.error_if(x, x <= 0, "log of a non-positive number")
        ...     return jnp.log(x)
        >>> safe_log(jnp.array([1.0, 2.0]))
        Array([0.       , 0.6931472], dtype=float32)
        >>> try:
        ...     safe_log(jnp.array([1.0, -2.0]))
        ... except RuntimeError as e:
        ...     print("log of a non-positive number" in str(e))
        True
    """
    if not isinstance(msg, str):
        raise TypeError(f"`msg` must be a string; got {type(msg).__name__} {msg!r}.")
    return branched_error_if(x, pred, 0, (msg,))


def branched_error_if(x: _T, pred: Any, index: Any, msgs: Sequence[str]) -> _T:
    """As `error_if`, with the message `msgs[index]` chosen by a (possibly
    traced) integer `index`.

    Under `jax.vmap`, if several batch elements fail, the message is that of
    the failing element with the largest `index`. (Equinox takes the largest
    `index` over the whole batch, failing or not.)

    Args:
        x: any pytree. If `pred` is traced, it must hold at least one array.
        pred: a bool or boolean array; the error is raised if any element is
            `True`.
        index: a scalar integer (Python int or integer array) in
            `[0, len(msgs))`.
        msgs: the possible error messages.

    Returns:
        `x`, unchanged.

    Raises:
        PytreemodRuntimeError: at once, if `pred` and `index` are concrete and
            `pred` is true.
        TypeError: if `pred`, `index` or `msgs` have the wrong type or shape.
        IndexError: if a concrete `index` is outside `msgs`.
        ValueError: if `pred` is traced and `x` holds no arrays.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> msgs = ["too small", "too large"]
        >>> def clip_check(x):
        ...     bad = (x < 0) | (x > 10)
        ...     which = jnp.where(jnp.any(x > 10), 1, 0)
        ...     return pytreemod.branched_error_if(x, bad, which, msgs)
        >>> jax.jit(clip_check)(jnp.array(3))
        Array(3, dtype=int32, weak_type=True)
        >>> try:
        ...     clip_check(jnp.array(11))
        ... except pytreemod.PytreemodRuntimeError as e:
        ...     print(e)
        too large
    """
    msgs = _check_msgs(msgs)
    _check_pred(pred)
    _check_index(index, len(msgs))
    pred_traced = _is_traced(pred)
    if not pred_traced and not np.any(np.asarray(pred)):
        return x
    if not pred_traced and not _is_traced(index):
        return _raise_now_or_return(x, pred, index, msgs)
    pred, index = _collapse_batch(jnp.any(pred), jnp.asarray(index, dtype=jnp.int32))
    if not _is_traced(pred) and not _is_traced(index):
        # Eager vmap or autodiff: the collapsed values are concrete.
        return _raise_now_or_return(x, pred, index, msgs)
    arrays, rest = partition(x, is_array)
    if not jax.tree_util.tree_leaves(arrays):
        raise ValueError(_NO_ARRAYS)
    arrays = _checked(arrays, pred, index, msgs, _call_site())
    return combine(arrays, rest)
