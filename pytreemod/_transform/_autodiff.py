"""What the autodiff transforms share: differentiating with respect to the
floating-point arrays of the first argument, and checking `has_aux` pairs.

`filter_grad`/`filter_value_and_grad` and `filter_jacfwd`/`filter_jacrev`
split their first argument the same way; those and `filter_vjp` check the
`(out, aux)` pair the same way. Each keeps its own messages, which are passed
in here as templates.
"""

from collections.abc import Callable
from typing import Any

from .._module._is_array import is_inexact_array
from ._filters import combine, partition


def describe(value: Any) -> str:
    """How an error message names a value of the wrong kind: "a `list`",
    "a `tuple` of length 3"."""
    got = f"a `{type(value).__name__}`"
    if isinstance(value, tuple):
        got += f" of length {len(value)}"
    return got


def check_pair(out: Any, message: str, **names: str) -> None:
    """Raise `TypeError` unless `out` is a pair `(out, aux)`; the message is
    `message` formatted with `got` (what `out` is) and `names`."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(message.format(got=describe(out), **names))


def split_first_argument(
    fun: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    message: str,
    name: str,
) -> tuple[Any, Callable[[Any], Any]]:
    """Split the floating-point arrays off the first positional argument.

    Returns those arrays, and a function of such arrays that calls
    `fun(first_argument, *other_args, **kwargs)` with them put back in.
    Without a positional argument, raises `TypeError` with `message`,
    formatted with `name` and `got` (what was passed instead).
    """
    if not args:
        got = "keyword arguments only" if kwargs else "no arguments"
        raise TypeError(message.format(name=name, got=got))
    x, *rest = args
    diff_x, nondiff_x = partition(x, is_inexact_array)

    def call(diff: Any) -> Any:
        return fun(combine(diff, nondiff_x), *rest, **kwargs)

    return diff_x, call
