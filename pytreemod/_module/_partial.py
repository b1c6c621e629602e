"""`Partial` (a pytree `functools.partial`) and `module_update_wrapper`."""

from collections.abc import Callable
from typing import Any

from ._module import Module

# Attributes copied from a wrapped function, as `functools.update_wrapper` does.
_WRAPPER_ASSIGNMENTS = ("__module__", "__name__", "__qualname__", "__doc__")


class Partial(Module):
    """Like `functools.partial`, but a Module: the function and the bound
    arguments are pytree children, so their arrays are traced by transforms.

    Args:
        func: the function (or callable Module) to call.
        *args: positional arguments to put first.
        **kwargs: keyword arguments to pass; call-time keywords override them.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> add = pytreemod.Partial(jnp.add, jnp.array(1.0, dtype=jnp.float32))
        >>> add(jnp.array(2.0, dtype=jnp.float32))
        Array(3., dtype=float32)
    """

    func: Callable[..., Any]
    args: tuple[Any, ...]
    keywords: dict[str, Any]

    def __init__(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any):
        if not callable(func):
            raise TypeError(
                f"`Partial` needs a callable first argument; got {func!r} of type "
                f"{type(func).__name__}."
            )
        self.func = func
        self.args = args
        self.keywords = kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*self.args, *args, **{**self.keywords, **kwargs})


def module_update_wrapper(wrapper: Module, wrapped: Callable[..., Any] | None = None):
    """Make a Module that wraps a function look like that function, the way
    `functools.update_wrapper` does for plain wrappers: copy `__module__`,
    `__name__`, `__qualname__` and `__doc__`, and set `__wrapped__`.

    Args:
        wrapper: the wrapping Module instance.
        wrapped: the function it wraps; by default `wrapper.__wrapped__`, which
            the wrapper class then defines (as a property or a field).

    Returns:
        `wrapper` itself. The copied attributes are set on the instance only,
        so they describe it but are not pytree fields.

    Example:
        >>> import pytreemod
        >>> def square(x):
        ...     "Square x."
        ...     return x * x
        >>> class Logged(pytreemod.Module):
        ...     fn: object
        ...     def __call__(self, x):
        ...         return self.fn(x)
        >>> logged = pytreemod.module_update_wrapper(Logged(square), square)
        >>> logged.__name__, logged.__doc__, logged(3)
        ('square', 'Square x.', 9)
    """
    if wrapped is None:
        try:
            wrapped = wrapper.__wrapped__
        except AttributeError:
            raise TypeError(
                f"`module_update_wrapper`: {type(wrapper).__name__} has no "
                "`__wrapped__`; pass the wrapped function as the second argument."
            ) from None
    for name in _WRAPPER_ASSIGNMENTS:
        try:
            value = getattr(wrapped, name)
        except AttributeError:
            continue
        object.__setattr__(wrapper, name, value)
    if "__wrapped__" not in type(wrapper).__dict__:
        object.__setattr__(wrapper, "__wrapped__", wrapped)
    return wrapper
