"""`assert_max_traces` and `get_num_traces`: count how often a function body
runs, which inside `filter_jit` is how often it is traced."""

import functools
import threading
import types
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import jax
from typing_extensions import ParamSpec

__all__ = ["assert_max_traces", "get_num_traces"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_TOO_MANY_TRACES = """\
{fn} can only be traced {max_traces} times. However, it has now been traced \
{count} times. Each trace means a fresh compilation. The usual causes are:
  1. a non-array argument (a Python number, a string) whose value changes from \
call to call: non-arrays are static, so each new value traces again. Pass it as \
an array instead, e.g. `jnp.asarray(step)`;
  2. array arguments whose shapes or dtypes change between calls;
  3. arguments whose pytree structure changes (a list growing, a field set to \
None).
To see what changed at each retrace, turn on \
`pytreemod.debug.explain_retraces(True)`."""

_NOT_COUNTED = (
    "`get_num_traces` needs a function wrapped with "
    "`pytreemod.debug.assert_max_traces` (possibly inside `filter_jit` or another "
    "wrapper that sets `__wrapped__`); got {fn!r}. Wrap it first, e.g. "
    "`f = pytreemod.debug.assert_max_traces(f, max_traces=None)`."
)


# `assert_max_traces(max_traces=...)` without a function: return a decorator.
_NO_FUNCTION: Any = object()


class _Counter:
    """The trace count, shared by a wrapper and its pytree copies."""

    __slots__ = ("count", "lock", "__weakref__")

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()


class _AssertMaxTraces(Generic[_P, _T]):
    """A function that counts its calls; see `assert_max_traces`. A pytree
    whose child is the wrapped function, so that a wrapped Module's arrays are
    still traced by the transforms around it."""

    __slots__ = ("fn", "max_traces", "_counter", "__dict__", "__weakref__")

    def __init__(self, fn: Callable[_P, _T], max_traces: int | None, counter: _Counter):
        self.fn = fn
        self.max_traces = max_traces
        self._counter = counter
        for name in ("__module__", "__name__", "__qualname__", "__doc__"):
            try:
                self.__dict__[name] = getattr(fn, name)
            except AttributeError:
                pass

    @property
    def __wrapped__(self) -> Callable[_P, _T]:
        return self.fn

    def __call__(self, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        counter = self._counter
        with counter.lock:
            counter.count += 1
            count = counter.count
        if self.max_traces is not None and count > self.max_traces:
            raise RuntimeError(
                _TOO_MANY_TRACES.format(
                    fn=self.fn, count=count, max_traces=self.max_traces
                )
            )
        return self.fn(*args, **kwargs)

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return types.MethodType(self, instance)

    def __repr__(self) -> str:
        return f"assert_max_traces({self.fn!r}, max_traces={self.max_traces})"


jax.tree_util.register_pytree_with_keys(
    _AssertMaxTraces,
    lambda w: (
        ((jax.tree_util.GetAttrKey("fn"), w.fn),),
        (w.max_traces, w._counter),
    ),
    lambda aux, children: _AssertMaxTraces(children[0], *aux),
    lambda w: ((w.fn,), (w.max_traces, w._counter)),
)


@overload
def assert_max_traces(
    fn: Callable[_P, _T], *, max_traces: int | None
) -> Callable[_P, _T]: ...


@overload
def assert_max_traces(
    *, max_traces: int | None
) -> Callable[[Callable[_P, _T]], Callable[_P, _T]]: ...


def assert_max_traces(fn: Any = _NO_FUNCTION, *, max_traces: int | None) -> Any:
    """Count how often `fn` runs, and raise once it runs more than
    `max_traces` times.

    Put it inside `filter_jit` (or `jax.jit`), where the body runs once per
    trace: it then guards against a function that compiles more often than it
    should. `get_num_traces` reads the count.

    Args:
        fn: the function to wrap. Left out, `assert_max_traces` returns a
            decorator.
        max_traces: the most runs allowed, or `None` to only count.

    Returns:
        `fn` wrapped; it behaves as `fn` until the limit is passed.

    Raises:
        ValueError: if `max_traces` is negative.
        RuntimeError: when the wrapped function is called more than
            `max_traces` times.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @pytreemod.filter_jit
        ... @pytreemod.debug.assert_max_traces(max_traces=1)
        ... def double(x):
        ...     return 2 * x
        >>> _ = double(jnp.ones(3))
        >>> _ = double(jnp.zeros(3))  # same shape and dtype: no new trace
        >>> pytreemod.debug.get_num_traces(double)
        1
    """
    if max_traces is not None and (
        isinstance(max_traces, bool)
        or not isinstance(max_traces, int)
        or max_traces < 0
    ):
        raise ValueError(
            f"`max_traces` must be a non-negative int or None; got {max_traces!r}."
        )
    if fn is _NO_FUNCTION:
        return functools.partial(_wrap, max_traces=max_traces)
    return _wrap(fn, max_traces=max_traces)


def _wrap(fn: Any, *, max_traces: int | None) -> Any:
    if not callable(fn):
        raise TypeError(
            f"`assert_max_traces` needs a callable; got {fn!r} of type "
            f"{type(fn).__name__}."
        )
    return _AssertMaxTraces(fn, max_traces, _Counter())


def get_num_traces(fn: Callable[..., Any]) -> int:
    """How many times a function wrapped with `assert_max_traces` has run.

    Looks through wrappers that set `__wrapped__` (`filter_jit` does), so the
    compiled function itself can be passed.

    Args:
        fn: a function made by `assert_max_traces`, or a wrapper around one.

    Returns:
        The number of runs so far.

    Raises:
        ValueError: if no `assert_max_traces` wrapper is found.

    Example:
        >>> import pytreemod
        >>> counted = pytreemod.debug.assert_max_traces(abs, max_traces=None)
        >>> counted(-2), pytreemod.debug.get_num_traces(counted)
        (2, 1)
    """
    seen = 0
    current: Any = fn
    while current is not None and seen < 100:
        if isinstance(current, _AssertMaxTraces):
            return current._counter.count
        # A bound method's `__func__` is the wrapper itself; its `__wrapped__`
        # (forwarded to the function) would skip past it.
        inner = getattr(current, "__func__", None)
        current = inner if inner is not None else getattr(current, "__wrapped__", None)
        seen += 1
    raise ValueError(_NOT_COUNTED.format(fn=fn))
