"""`error_if` and `branched_error_if`: raise an error from runtime values, also
under `jax.jit`, `jax.vmap` and autodiff.

How the check is built, from the outside in:

1. `on_error` (or the `EQX_ON_ERROR` environment variable) picks what a failed
   check does: raise (the default), return NaNs, open a debugger, or nothing.
2. If `pred` (and `index`) are concrete values, the check happens in Python at
   once: nothing is added to any computation.
3. Otherwise the arrays of `x` go through `_checked`, a `custom_jvp` function
   (tangents pass straight through) whose primal is a `custom_vmap` function
   made for this call. Outside `vmap` it is `lax.cond(pred, fail, identity)`,
   where `fail` calls `jax.debug.callback`, which raises `EquinoxRuntimeError`
   on the host. Its batching rule does not batch the `cond`: it moves the batch
   axis into `pred` and `index`, so the host sees every element and names the
   failing ones (`Batch index (1,) had error: ...`); under eager `vmap` the
   values are concrete there and the error is raised at once.

`jax.debug.callback` is effectful, so the compiler never removes the check,
even when only derivatives of `x` are used (`jax.grad` of a function linear in
`x`, `jax.jacfwd`), or when the returned value is unused.
"""

import functools
import os
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap

from .._module._is_array import is_array
from .._transform._filters import combine, partition
from .._transform._runtime_error import (
    EquinoxRuntimeError,
    EquinoxTracetimeError,
    raise_from_host,
)
from ._batch import collapse_batch

__all__ = ["branched_error_if", "error_if"]

_T = TypeVar("_T")

OnError = Literal["default", "raise", "breakpoint", "nan", "off"]
_MODES = ("raise", "breakpoint", "nan", "off")

_NO_ARRAYS = """\
No arrays to thread error on to: `error_if` got a traced `pred`, but `x` holds
no arrays. The check is attached to the arrays of `x`: the returned `x` is
computed only after the check. Pass the array(s) that the condition is about,
and use the returned value:
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

_BAD_ON_ERROR = (
    "Unrecognised value for `on_error`: got {got!r}; expected one of 'default', "
    "'raise', 'breakpoint', 'nan', 'off'."
)

_BAD_ENV = (
    "Unrecognised value for the environment variable `EQX_ON_ERROR`: got {got!r}; "
    "expected one of 'raise', 'breakpoint', 'nan', 'off'."
)

_NAN_AT_TRACE_TIME = (
    "Resolving error at trace time (because the predicate is statically "
    "resolvable), by substituting NaNs (because `on_error='nan'`). The check "
    "failed for every call: {msg!r}"
)

# What a failed check inside a compiled computation raises. The first line is
# Equinox's (users match on it): Python's traceback above the message is the
# stack outside the compiled function, the frames below are where `error_if`
# was traced.
_RUNTIME_MESSAGE = """\
Above is the stack outside of JIT. Below is the stack inside of JIT:
{stack}
{errors}

-------------------
`error_if` found this while the compiled computation ran. To investigate:
1) set the environment variable `EQX_ON_ERROR=breakpoint` to open a debugger
   where the check failed (`u` and `d` move between frames, a variable's name
   prints it);
2) set `JAX_DISABLE_JIT=1` to run the program as plain Python, where the
   error is raised at the failing line;
3) set `EQX_ON_ERROR=nan` to return NaNs instead and carry on, or
   `EQX_ON_ERROR=off` to skip every check."""

# The package directories whose frames are not the user's.
_OWN_DIRS = (
    os.path.dirname(os.path.abspath(jax.__file__)) + os.sep,
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
)
# How many of the user's frames a runtime error shows.
_STACK_FRAMES = 8


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _user_stack() -> str:
    """The innermost frames of the current stack outside pytreemod and JAX,
    formatted as a traceback."""
    frames = [
        frame
        for frame in traceback.extract_stack()
        if not os.path.abspath(frame.filename).startswith(_OWN_DIRS)
    ]
    return "".join(traceback.format_list(frames[-_STACK_FRAMES:]))


class _Report:
    """What one `error_if` call reports when it fails: its messages, the stack
    where it was traced, and the `custom_vmap` check that carries them."""

    def __init__(self, msgs: tuple[str, ...], stack: str) -> None:
        self.msgs = msgs
        self.stack = stack
        self.check = _make_check(self)

    def message(self, index: int) -> str:
        if 0 <= index < len(self.msgs):
            return self.msgs[index]
        return (
            f"(branched_error_if was given the index {index}, outside the "
            f"{len(self.msgs)} message(s) it has)"
        )

    def errors(self, pred: Any, index: Any) -> str | None:
        """The text for the failing elements of `pred` (`None` if none fail).
        Batched values (from `vmap`) name each failing batch index."""
        pred = np.asarray(pred)
        index = np.broadcast_to(np.asarray(index), pred.shape)
        if not pred.any():
            return None
        if pred.ndim == 0:
            return self.message(int(index))
        return "\n\n".join(
            f"Batch index {tuple(int(i) for i in where)} had error:\n"
            f"{self.message(int(index[tuple(where)]))}"
            for where in np.argwhere(pred)
        )

    def raise_now(self, pred: Any, index: Any) -> None:
        errors = self.errors(pred, index)
        if errors is not None:
            raise EquinoxRuntimeError(errors)

    def fail_on_host(self, pred: np.ndarray, index: np.ndarray) -> None:
        errors = self.errors(pred, index)
        raise_from_host(
            _RUNTIME_MESSAGE.format(stack=self.stack, errors=errors),
            errors=errors or "",
            stack=self.stack,
        )


def _make_check(report: _Report) -> Any:
    """The `custom_vmap` function `(arrays, pred, index) -> arrays` that raises
    `report`'s error on the host where `pred` holds. Under `vmap` its rule
    moves the batch axis into `pred` and `index` instead of batching the
    `cond`, so the host sees each element."""

    @custom_vmap
    def check(arrays: Any, pred: jax.Array, index: jax.Array) -> Any:
        def fail(arrays: Any) -> Any:
            jax.debug.callback(report.fail_on_host, pred, index)
            return arrays

        return jax.lax.cond(jnp.any(pred), fail, lambda arrays: arrays, arrays)

    @check.def_vmap
    def rule(
        axis_size: int, in_batched: Any, arrays: Any, pred: jax.Array, index: Any
    ) -> tuple[Any, Any]:
        arrays_batched, pred_batched, index_batched = in_batched
        if not pred_batched:
            pred = jnp.broadcast_to(pred, (axis_size, *jnp.shape(pred)))
        if not index_batched:
            index = jnp.broadcast_to(index, (axis_size, *jnp.shape(index)))
        if not _is_traced(pred) and not _is_traced(index):
            # Eager vmap: the values are known here.
            report.raise_now(pred, index)
            return arrays, arrays_batched
        return check(arrays, pred, index), arrays_batched

    return check


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _checked(arrays: Any, pred: jax.Array, index: jax.Array, report: _Report) -> Any:
    if not _is_traced(pred) and not _is_traced(index):
        # Eager autodiff evaluates the primal with concrete values.
        report.raise_now(pred, index)
        return arrays
    return report.check(arrays, pred, index)


@_checked.defjvp
def _checked_jvp(report: _Report, primals: tuple, tangents: tuple) -> tuple[Any, Any]:
    arrays, pred, index = primals
    return _checked(arrays, pred, index, report), tangents[0]


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


def _mode(on_error: Any) -> str:
    """The mode `on_error` asks for; "default" reads `EQX_ON_ERROR` (at trace
    time, so a compiled function keeps the mode it was traced with)."""
    if on_error == "default":
        mode = os.environ.get("EQX_ON_ERROR", "raise")
        if mode not in _MODES:
            raise RuntimeError(_BAD_ENV.format(got=mode))
        return mode
    if on_error not in _MODES:
        raise RuntimeError(_BAD_ON_ERROR.format(got=on_error))
    return on_error


def _breakpoint_frames() -> int:
    return int(os.environ.get("EQX_ON_ERROR_BREAKPOINT_FRAMES", "1"))


def _substitute_nans(x: _T, flag: Any) -> _T:
    """`x` with every inexact array filled with NaN (integer arrays with their
    largest value) where the scalar `flag` holds. Other leaves are unchanged."""

    def fill(leaf: Any) -> Any:
        if not is_array(leaf):
            return leaf
        dtype = leaf.dtype
        if jnp.issubdtype(dtype, jnp.inexact):
            value: Any = np.nan
        elif jnp.issubdtype(dtype, jnp.integer):
            value = jnp.iinfo(dtype).max
        else:
            return leaf
        return jnp.where(flag, jax.lax.full_like(leaf, value), leaf)

    return jax.tree_util.tree_map(fill, x)


def error_if(x: _T, pred: Any, msg: str, *, on_error: OnError = "default") -> _T:
    """Return `x` unchanged, but raise an error with `msg` if `pred` is true
    anywhere. Works eagerly and inside `jax.jit`, `jax.vmap` and autodiff.

    When the error surfaces:

    - `pred` a Python or NumPy bool: `EquinoxTracetimeError` at once (so inside
      `jax.jit`, at trace time).
    - `pred` a concrete array (eager code, also under eager `jax.vmap` and
      `jax.grad`): `EquinoxRuntimeError` at once, with `msg` as its message.
    - `pred` traced (inside `jax.jit`, `pytreemod.filter_jit`, `lax.scan`, ...):
      when the compiled computation runs. A `filter_jit` call raises
      `EquinoxRuntimeError`; plain `jax.jit` raises JAX's
      `jax.errors.JaxRuntimeError` (a `RuntimeError`) whose message contains
      ours. The message starts with Equinox's first line ("Above is the stack
      outside of JIT..."), then shows where `error_if` was traced, `msg`, and
      how to debug it.

    Under `jax.vmap` the error is raised if any batch element fails, and the
    message names each failing element: `Batch index (1,) had error:` then
    `msg`. The returned `x` is computed after the check: use it in place of
    `x`. Derivatives pass through unchanged. Unlike Equinox, the check also
    runs when the returned value is unused (it is never removed as dead code).

    Args:
        x: any pytree. If `pred` is traced, it must hold at least one array.
        pred: a bool or boolean array; the error is raised if any element is
            `True`.
        msg: the error message.
        on_error: what a failed check does: `"raise"`; `"nan"` returns `x` with
            its floating-point arrays set to NaN (integer arrays to their
            largest value) and carries on; `"breakpoint"` opens a debugger
            (`jax.debug.breakpoint`, with `EQX_ON_ERROR_BREAKPOINT_FRAMES`
            frames, default 1); `"off"` does nothing. `"default"` reads the
            environment variable `EQX_ON_ERROR` (default `"raise"`) when
            `error_if` is called, that is at trace time.

    Returns:
        `x`, unchanged (or with NaNs, for `on_error="nan"`).

    Raises:
        EquinoxTracetimeError: at once, if `pred` is a true Python bool.
        EquinoxRuntimeError: at once, if `pred` is a concrete array that holds
            `True`; or from `filter_jit` when a traced check fails.
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
    return branched_error_if(x, pred, 0, (msg,), on_error=on_error)


def branched_error_if(
    x: _T, pred: Any, index: Any, msgs: Sequence[str], *, on_error: OnError = "default"
) -> _T:
    """As `error_if`, with the message `msgs[index]` chosen by a (possibly
    traced) integer `index`.

    Under `jax.vmap`, each failing batch element is reported with its own
    message.

    Args:
        x: any pytree. If `pred` is traced, it must hold at least one array.
        pred: a bool or boolean array; the error is raised if any element is
            `True`.
        index: a scalar integer (Python int or integer array) in
            `[0, len(msgs))`.
        msgs: the possible error messages.
        on_error: as for `error_if`.

    Returns:
        `x`, unchanged (or with NaNs, for `on_error="nan"`).

    Raises:
        EquinoxTracetimeError: at once, if `pred` is a true Python bool.
        EquinoxRuntimeError: at once, if `pred` and `index` are concrete arrays
            and `pred` is true; or from `filter_jit` when a traced check fails.
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
        ... except pytreemod.EquinoxRuntimeError as e:
        ...     print(e)
        too large
    """
    msgs = _check_msgs(msgs)
    _check_pred(pred)
    _check_index(index, len(msgs))
    mode = _mode(on_error)
    if mode == "off":
        return x
    pred_traced = _is_traced(pred)
    if not pred_traced and not np.any(np.asarray(pred)):
        return x
    if mode == "nan":
        if not pred_traced:
            warnings.warn(
                _NAN_AT_TRACE_TIME.format(msg=msgs[0] if len(msgs) == 1 else msgs),
                UserWarning,
                stacklevel=3,
            )
        return _substitute_nans(x, jnp.any(pred))
    if mode == "breakpoint":
        frames = _breakpoint_frames()
        if not pred_traced:
            jax.debug.breakpoint(num_frames=frames)
            return x
        flag, _ = collapse_batch(jnp.any(pred), jnp.zeros((), jnp.int32))
        jax.lax.cond(
            flag, lambda: jax.debug.breakpoint(num_frames=frames), lambda: None
        )
        return x
    if not pred_traced and not _is_traced(index):
        if isinstance(pred, (bool, np.bool_)):
            raise EquinoxTracetimeError(msgs[int(index)])
        _Report(msgs, "").raise_now(np.any(np.asarray(pred)), index)
    arrays, rest = partition(x, is_array)
    if not jax.tree_util.tree_leaves(arrays):
        raise ValueError(_NO_ARRAYS)
    report = _Report(msgs, _user_stack())
    index = jnp.asarray(index, dtype=jnp.int32)
    arrays = _checked(arrays, jnp.any(pred), index, report)
    return combine(arrays, rest)
