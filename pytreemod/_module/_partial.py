"""`Partial` (a pytree `functools.partial`) and `module_update_wrapper`."""

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._flatten import WRAPPER_FIELD_NAMES
from ._module import Module

_Return = TypeVar("_Return")

_NO_WRAPPED_PROPERTY_ERROR = (
    "Wrapper module must supply `__wrapped__` as a property. `{cls}.__wrapped__` "
    "is {got}; define\n"
    "    @property\n"
    "    def __wrapped__(self):\n"
    "        return self.fn   # the wrapped callable\n"
    "in the wrapper class, so that the wrapped callable stays a pytree child."
)


class Partial(Module, Generic[_Return]):
    """Like `functools.partial`, but a Module: the function and the bound
    arguments are pytree children, so their arrays are traced by transforms.

    `Partial` is generic in the return type of the function, so that
    `Partial[int]` can be written in annotations; an instance created as
    `Partial[int](f)` records that in `__orig_class__`, as generic classes do.

    Args:
        func: the function (or callable Module) to call.
        *args: positional arguments to put first.
        **kwargs: keyword arguments to pass; call-time keywords override them
            (as in `functools.partial`; Equinox raises `TypeError` instead).

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> add = pytreemod.Partial(jnp.add, jnp.array(1.0, dtype=jnp.float32))
        >>> add(jnp.array(2.0, dtype=jnp.float32))
        Array(3., dtype=float32)
    """

    func: Callable[..., _Return]
    args: tuple[Any, ...]
    keywords: dict[str, Any]

    def __init__(self, func: Callable[..., _Return], /, *args: Any, **kwargs: Any):
        # As in Equinox, `func` is not checked: a pytree transformation may
        # put a placeholder there, and calling a non-callable fails clearly.
        self.func = func
        self.args = args
        self.keywords = kwargs

    def __call__(self, *args: Any, **kwargs: Any) -> _Return:
        return self.func(*self.args, *args, **{**self.keywords, **kwargs})


def module_update_wrapper(
    wrapper: Module, wrapped: Callable[..., Any] | None = None
) -> Any:
    """Return a copy of a wrapper Module that looks like the callable it wraps,
    as `functools.update_wrapper` does for plain wrappers: `__module__`,
    `__name__`, `__qualname__`, `__doc__` and `__annotations__` are copied
    from the wrapped callable (those it has).

    The wrapper's class must define `__wrapped__` as a property (returning the
    wrapped callable, usually a field), as in Equinox: the wrapped callable
    then stays a pytree child rather than an attribute set on the instance.

    Args:
        wrapper: the wrapping Module instance. It is not modified.
        wrapped: where to copy the attributes from; by default
            `wrapper.__wrapped__`.

    Returns:
        A copy of `wrapper` (same class, same fields) with those attributes set
        on the instance. They are part of its pytree structure (its auxiliary
        data), so they survive `jax.tree_util.tree_map` and transforms.

    Raises:
        ValueError: if `type(wrapper).__wrapped__` is not a property.

    Example:
        >>> import pytreemod
        >>> def square(x):
        ...     "Square x."
        ...     return x * x
        >>> class Logged(pytreemod.Module):
        ...     fn: object
        ...     @property
        ...     def __wrapped__(self):
        ...         return self.fn
        ...     def __call__(self, x):
        ...         return self.fn(x)
        >>> logged = pytreemod.module_update_wrapper(Logged(square))
        >>> logged.__name__, logged.__doc__, logged(3)
        ('square', 'Square x.', 9)
    """
    missing = object()
    attribute = getattr(type(wrapper), "__wrapped__", missing)
    if not isinstance(attribute, property):
        got = "missing" if attribute is missing else f"a {type(attribute).__name__}"
        raise ValueError(
            _NO_WRAPPED_PROPERTY_ERROR.format(cls=type(wrapper).__name__, got=got)
        )
    if wrapped is None:
        wrapped = wrapper.__wrapped__
    copy = object.__new__(type(wrapper))
    copy.__dict__.update(wrapper.__dict__)
    for name in WRAPPER_FIELD_NAMES:
        try:
            value = getattr(wrapped, name)
        except AttributeError:
            continue
        copy.__dict__[name] = value
    return copy
