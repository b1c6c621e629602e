"""`field`: a dataclass field with pytreemod's static and converter markers."""

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

# Keys in `dataclasses.Field.metadata`. "static" is also the key that
# `jax.tree_util.register_dataclass` reads, so the two agree.
STATIC = "static"
CONVERTER = "converter"
# Logical axis names of an array field, read by `pytreemod.sharding`: a tuple
# with one `str` or `None` per dimension, or a function of the Module instance
# returning such a tuple (for names chosen per instance, like a layer's
# `axes=` argument). On a field holding a subtree, the names are those of the
# leading dimensions shared by every array below it (e.g. a stack of layers).
AXES = "pytreemod.axes"


def field(
    *,
    converter: Callable[[Any], Any] | None = None,
    static: bool = False,
    axes: tuple[str | None, ...] | Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> Any:
    """A field of a `pytreemod.Module`: `dataclasses.field` plus markers.

    Args:
        static: if `True`, the value is not a pytree child but part of the
            treedef: transforms never trace it, and it must be hashable and
            compared by `==` (ints, strings, tuples, functions). Never put an
            array in a static field; it is a user error and warns.
        converter: a function applied to the value after `__init__` (and
            `__post_init__`) has run, e.g. `jnp.asarray`. It is not applied
            when a Module is rebuilt by `tree_unflatten`.
        axes: logical axis names of an array field, one per dimension (`None`
            for an unnamed one), e.g. `("embed", "mlp")`; read by
            `pytreemod.sharding.logical_specs` and `shard`, which map them to
            mesh axes. On a field that holds a subtree, they name the leading
            dimensions of every array below (a stack of layers). May be a
            function of the Module instance returning the tuple, for names set
            per instance. Not part of the pytree: it never adds a leaf. (A
            pytreemod extension; Equinox has no `axes`.)
        **kwargs: passed on to `dataclasses.field` (`default`,
            `default_factory`, `init`, `repr`, `kw_only`, `metadata`, ...).

    Returns:
        A `dataclasses.Field` to assign in the class body.

    Raises:
        TypeError: if `converter` is not callable, or `metadata` already uses
            one of the keys `"static"`, `"converter"` or `"pytreemod.axes"`, or `axes`
            is neither a tuple of `str`/`None`, a function, nor `None`.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> class Scale(pytreemod.Module):
        ...     factor: jnp.ndarray = pytreemod.field(converter=jnp.asarray)
        ...     name: str = pytreemod.field(static=True, default="scale")
        >>> Scale(2.0).factor
        Array(2., dtype=float32, weak_type=True)
    """
    metadata = dict(kwargs.pop("metadata", None) or {})
    for key in (STATIC, CONVERTER, AXES):
        if key in metadata:
            raise TypeError(
                f"`field(metadata=...)` may not use the key {key!r}: pytreemod "
                f"sets it itself. Pass `field({key}=...)` instead."
            )
    if static:
        metadata[STATIC] = True
    if converter is not None:
        if not callable(converter):
            raise TypeError(
                f"`converter` must be callable, e.g. `jnp.asarray`; got "
                f"{converter!r} of type {type(converter).__name__}."
            )
        metadata[CONVERTER] = converter
    if axes is not None:
        metadata[AXES] = check_axes(axes, "`axes`")
    return dataclasses.field(metadata=metadata, **kwargs)


def check_axes(axes: Any, what: str) -> Any:
    """`axes` if it is a tuple of `str`/`None` (or a function), else a
    `TypeError` that names `what`."""
    if callable(axes):
        return axes
    if isinstance(axes, list):
        axes = tuple(axes)
    if not isinstance(axes, tuple) or not all(
        name is None or isinstance(name, str) for name in axes
    ):
        raise TypeError(
            f"{what} must be a tuple with one logical axis name (a `str`) or "
            f'`None` per dimension, e.g. `("embed", "mlp")`; got {axes!r}.'
        )
    return axes


def static_field(**kwargs: Any) -> Any:
    """Deprecated: use `field(static=True, ...)`; kept because Equinox has it.

    Same as `field(static=True, **kwargs)`, and warns with a
    `DeprecationWarning` that names the replacement.

    Example:
        >>> import warnings
        >>> import pytreemod
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     class Config(pytreemod.Module):
        ...         size: int = pytreemod.static_field(default=3)
        >>> Config().size
        3
    """
    warnings.warn(
        "`equinox.static_field` is deprecated in favour of "
        "`equinox.field(static=True)`: write `pytreemod.field(static=True, ...)`.",
        DeprecationWarning,
        stacklevel=2,
    )
    return field(static=True, **kwargs)
