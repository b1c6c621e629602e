"""`filter_vmap` and `if_array`: vectorise a function over the arrays in its
arguments, whatever else those arguments hold.

The arguments are flattened once. Each leaf gets an axis from `in_axes` (a
prefix of the argument tuple whose leaves are ints, `None`, or callables
`leaf -> int | None`); the leaves with an axis go through `jax.vmap`, and all
the others (unmapped arrays, functions, strings, ...) are closed over. Inside,
the output is split the same way by `out_axes`: mapped leaves come out of
`jax.vmap` on axis 0 and are moved to their axis afterwards, unmapped arrays
come out with `out_axes=None`, and non-arrays are captured while tracing
(`jax.vmap` traces the function exactly once per call).

The helpers that pair leaves with axes and check mapped sizes are shared with
`filter_pmap`.
"""

import dataclasses
import functools
import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import Any, overload

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._module._is_array import is_array, is_array_like
from .._module._module import Module
from .._module._partial import Partial, module_update_wrapper
from ._filters import _flatten_up_to, _is_none

__all__ = ["filter_vmap", "if_array"]

AxisSpec = int | None | Callable[[Any], int | None]

# Stands for "no function given": `filter_vmap(in_axes=...)` is a decorator.
_MISSING: Any = object()

_NOT_A_PREFIX = """\
`{what}` is not a prefix of the {whose}: at `{path}` `{what}` has
{spec_side}
but the {whose} have
{tree_side}.
`{what}` must match the structure of the {whose} down to its own leaves, which
are ints, `None`, or callables such as `pytreemod.if_array(0)` that give the
axis for every leaf of the subtree below them. Either
  1. pass a single int, `None` or callable to apply it to everything; or
  2. give one entry per positional argument, e.g. `in_axes=(0, None)` for
     `f(x, y)`, each of which may itself be a prefix of that argument."""

_BAD_AXIS_SPEC = (
    "`{what}` leaves must be ints, `None`, or callables `leaf -> int | None` "
    "(such as `pytreemod.if_array(0)`); got {got!r} of type `{type}` at "
    "`{what}{path}`."
)

_BAD_RESOLVED_AXIS = (
    "the callable {spec!r} in `{what}` returned {got!r} for the leaf at "
    "`{path}`; it must return an int or `None`."
)

_NOT_AN_ARRAY = """\
`{what}` maps the leaf at `{path}` over axis {axis}, but that leaf is a
`{type}`, not an array: only arrays have axes to map over. Use
`pytreemod.if_array({axis})` (map arrays, leave everything else alone) or
`None` for that position."""

_AXIS_OUT_OF_RANGE = (
    "`{what}` maps the leaf at `{path}` over axis {axis}, but that leaf has "
    "shape {shape} ({ndim} axes). Pick an axis in range, or `None` to leave it "
    "unmapped."
)

_SIZE_MISMATCH = """\
`{name}` needs every mapped axis to have the same size, but got:
{sizes}
Map only over axes of one size: give `None` (or `pytreemod.if_array(...)` on a
subtree) in `in_axes` for the arguments that should not be mapped, or reshape
the arrays so that their mapped axes agree."""

_NO_BATCH_SIZE = """\
Cannot resolve batch dimension. `filter_vmap` cannot tell the size of the batch:
no input is mapped and `axis_size` was not given; {unmapped}.
(Equinox raises this only when an output is mapped; otherwise it runs the
function once and returns its output without a batch axis, which a caller
cannot tell from a batched one.) Either
  1. map an array input, e.g. `in_axes=pytreemod.if_array(0)` (the default);
  2. pass `axis_size=n` to broadcast the computation over a batch of n; or
  3. call the function directly if nothing is meant to be batched."""

_UNMAPPED_BATCHED = """\
`out_axes` gives `None` (not mapped) to an array output that differs across
the batch; the unmapped array outputs are {paths}. An unmapped output must be
the same for every batch element. Give it a batch axis instead, e.g.
`out_axes=pytreemod.if_array(0)` (the default), or compute it outside the
vmapped function."""

_NO_KEYWORDS = """\
a function wrapped by `{name}` takes positional arguments only (`in_axes` is a
prefix of the positional arguments); got keyword arguments {names}. Pass them
positionally, or bind them first with `functools.partial(fun, {first}=...)`."""

_UNKNOWN_NAMED_AXES = (
    "`in_axes` is a dict, so its keys must name positional arguments that were "
    "passed to the function; {unknown} {verb} not among them (passed: "
    "{passed}). Pass those arguments positionally, or remove them from "
    "`in_axes`."
)


@dataclasses.dataclass(frozen=True)
class if_array:  # lower case, as in Equinox: it is used like a function
    """An axis spec for `filter_vmap`/`filter_pmap`: `axis` for arrays, `None`
    (not mapped) for anything else.

    Args:
        axis: the axis to give to array leaves.

    Returns:
        A callable `leaf -> int | None`; it is hashable and prints readably.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> spec = pytreemod.if_array(1)
        >>> spec(jnp.zeros((2, 3))), spec("relu")
        (1, None)
        >>> spec
        if_array(axis=1)
    """

    axis: int

    def __post_init__(self) -> None:
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise TypeError(
                f"`if_array(axis)` needs an int axis; got {self.axis!r} of type "
                f"`{type(self.axis).__name__}`."
            )

    def __call__(self, x: Any) -> int | None:
        return self.axis if is_array(x) else None


def _is_axis(x: Any) -> bool:
    return x is None or (isinstance(x, int) and not isinstance(x, bool))


def check_axis_spec(spec: Any, what: str) -> None:
    """Check, before any call, that every leaf of an `in_axes`/`out_axes` spec
    is an int, `None` or a callable."""
    for path, leaf in jtu.tree_flatten_with_path(spec, is_leaf=_is_none)[0]:
        if not (_is_axis(leaf) or callable(leaf)):
            raise ValueError(
                _BAD_AXIS_SPEC.format(
                    what=what,
                    got=leaf,
                    type=type(leaf).__name__,
                    path=jtu.keystr(path),
                )
            )


def _leaf_path(tree: Any, index: int, root: str) -> str:
    """The key path of the `index`-th leaf of `tree`, for error messages."""
    path, _ = jtu.tree_flatten_with_path(tree)[0][index]
    return root + jtu.keystr(path)


def _not_an_array(what: str, path: str, axis: int, leaf: Any) -> ValueError:
    """The error for the leaf at `path`, which `what` maps over `axis` but
    which is not an array."""
    return ValueError(
        _NOT_AN_ARRAY.format(what=what, path=path, axis=axis, type=type(leaf).__name__)
    )


def resolve_axes(spec: Any, tree: Any, what: str, root: str) -> list[int | None]:
    """Give every leaf of `tree` (in `jtu.tree_leaves` order) its axis from
    the prefix `spec`, calling callable spec leaves on each leaf below them.

    `what` names the spec (`"in_axes"`) and `root` the tree (`"args"`) in
    error messages.
    """
    spec_leaves, spec_def = jtu.tree_flatten(spec, is_leaf=_is_none)
    subtrees = _flatten_up_to(
        spec_def,
        spec,
        tree,
        _is_none,
        lambda path, spec_side, tree_side: _NOT_A_PREFIX.format(
            what=what,
            whose="arguments" if root == "args" else "outputs",
            path=root + jtu.keystr(path),
            spec_side=spec_side,
            tree_side=tree_side,
        ),
        catch=(ValueError, TypeError),
    )
    axes: list[int | None] = []
    for axis_spec, subtree in zip(spec_leaves, subtrees, strict=True):
        leaves = jtu.tree_leaves(subtree)
        if _is_axis(axis_spec):
            axes.extend([axis_spec] * len(leaves))
            continue
        for leaf in leaves:
            axis = axis_spec(leaf)
            if not _is_axis(axis):
                raise ValueError(
                    _BAD_RESOLVED_AXIS.format(
                        spec=axis_spec,
                        what=what,
                        got=axis,
                        path=_leaf_path(tree, len(axes), root),
                    )
                )
            axes.append(axis)
    return axes


def check_mapped_leaves(
    tree: Any,
    leaves: Sequence[Any],
    axes: Sequence[int | None],
    axis_size: int | None,
    name: str,
) -> int | None:
    """Check that every mapped leaf is an array with that axis, and that all
    mapped axes (and `axis_size`, if given) agree. Returns the batch size, or
    `None` if nothing is mapped and no `axis_size` was given."""
    sizes: list[tuple[int, int, int]] = []  # (leaf index, axis, size)
    for index, (leaf, axis) in enumerate(zip(leaves, axes, strict=True)):
        if axis is None:
            continue
        if not is_array(leaf):
            path = _leaf_path(tree, index, "args")
            raise _not_an_array("in_axes", path, axis, leaf)
        if not -leaf.ndim <= axis < leaf.ndim:
            raise ValueError(
                _AXIS_OUT_OF_RANGE.format(
                    what="in_axes",
                    path=_leaf_path(tree, index, "args"),
                    axis=axis,
                    shape=tuple(leaf.shape),
                    ndim=leaf.ndim,
                )
            )
        sizes.append((index, axis, leaf.shape[axis]))
    distinct = {size for _, _, size in sizes}
    if axis_size is not None:
        distinct.add(axis_size)
    if len(distinct) > 1:
        lines = [f"    `axis_size` = {axis_size}"] if axis_size is not None else []
        lines += [
            f"    {_leaf_path(tree, index, 'args')} has size {size} on axis {axis}"
            for index, axis, size in sizes
        ]
        raise ValueError(_SIZE_MISMATCH.format(name=name, sizes="\n".join(lines)))
    return distinct.pop() if distinct else None


def check_no_keywords(kwargs: dict[str, Any], name: str) -> None:
    if kwargs:
        names = ", ".join(f"`{k}`" for k in kwargs)
        raise TypeError(
            _NO_KEYWORDS.format(name=name, names=names, first=next(iter(kwargs)))
        )


def named_in_axes(fun: Callable[..., Any], in_axes: Any, args: tuple) -> Any:
    """Turn a dict `in_axes` (argument name -> spec) into a tuple with one spec
    per positional argument passed; the unnamed ones get `if_array(0)`. A
    top-level list is read as a tuple, as `jax.vmap` does."""
    if isinstance(in_axes, list):
        return tuple(in_axes)
    if not isinstance(in_axes, dict):
        return in_axes
    names = list(inspect.signature(fun).parameters)[: len(args)]
    unknown = [key for key in in_axes if key not in names]
    if unknown:
        raise ValueError(
            _UNKNOWN_NAMED_AXES.format(
                unknown=", ".join(f"`{k}`" for k in unknown),
                verb="is" if len(unknown) == 1 else "are",
                passed=", ".join(f"`{n}`" for n in names) or "none",
            )
        )
    return tuple(in_axes.get(name, if_array(0)) for name in names)


def split_output(out: Any, out_axes: Any) -> tuple[list, list, list, list, Any]:
    """Split an output by `out_axes` into (mapped leaves, unmapped arrays, the
    leaf list with `None` in place of every array, the axis of every leaf,
    treedef); `join_output` puts them back together."""
    leaves, treedef = jtu.tree_flatten(out)
    axes = resolve_axes(out_axes, out, "out_axes", "output")
    mapped, unmapped, static = [], [], []
    for index, (leaf, axis) in enumerate(zip(leaves, axes, strict=True)):
        if axis is not None:
            if not is_array_like(leaf):
                path = _leaf_path(out, index, "output")
                raise _not_an_array("out_axes", path, axis, leaf)
            mapped.append(leaf)
            static.append(None)
        elif is_array(leaf):
            unmapped.append(leaf)
            static.append(None)
        else:
            static.append(leaf)
    return mapped, unmapped, static, axes, treedef


def join_output(
    mapped: Sequence[Any],
    unmapped: Sequence[Any],
    static: Sequence[Any],
    axes: Sequence[int | None],
    treedef: Any,
) -> Any:
    """Undo `split_output`, given mapped leaves with the batch on axis 0:
    each is moved to its axis."""
    mapped_iter, unmapped_iter = iter(mapped), iter(unmapped)
    leaves = []
    for leaf, axis in zip(static, axes, strict=True):
        if axis is not None:
            x = next(mapped_iter)
            leaves.append(x if axis == 0 else jnp.moveaxis(x, 0, axis))
        elif leaf is None:
            leaves.append(next(unmapped_iter))
        else:
            leaves.append(leaf)
    return treedef.unflatten(leaves)


def _unmapped_but_batched(static: list, axes: list, treedef: Any) -> str:
    positions = treedef.unflatten(range(len(static)))
    paths = [
        "output" + jtu.keystr(path)
        for path, i in jtu.tree_flatten_with_path(positions)[0]
        if axes[i] is None and static[i] is None
    ]
    return _UNMAPPED_BATCHED.format(paths=", ".join(f"`{p}`" for p in paths))


def _unmapped_arrays(args: tuple) -> str:
    """The array leaves of `args`, all of which got axis `None`, for
    `_NO_BATCH_SIZE`."""
    paths = [
        "`args" + jtu.keystr(path) + "`"
        for path, leaf in jtu.tree_flatten_with_path(args)[0]
        if is_array(leaf)
    ]
    if not paths:
        return "the arguments hold no arrays"
    shown = ", ".join(paths[:5]) + (", ..." if len(paths) > 5 else "")
    return f"`in_axes` gave axis `None` to every array: {shown}"


class _VmapWrapper(Module):
    """What `filter_vmap(fun)` returns: a Module, so that a vmapped model is
    still a pytree of its arrays."""

    fun: Callable[..., Any]
    in_axes: Any
    out_axes: Any
    axis_name: Hashable | None
    axis_size: int | None
    # Further keywords for `jax.vmap` (`spmd_axis_name=`), as sorted pairs so
    # that the wrapper stays hashable.
    vmapkwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self.fun

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        check_no_keywords(kwargs, "filter_vmap")
        in_axes = named_in_axes(self.fun, self.in_axes, args)
        leaves, treedef = jtu.tree_flatten(args)
        axes = resolve_axes(in_axes, args, "in_axes", "args")
        size = check_mapped_leaves(args, leaves, axes, self.axis_size, "filter_vmap")
        if size is None:
            raise ValueError(_NO_BATCH_SIZE.format(unmapped=_unmapped_arrays(args)))

        mapped_index = [i for i, axis in enumerate(axes) if axis is not None]
        traced: dict[str, Any] = {}

        def body(mapped: list[Any]) -> tuple[list[Any], list[Any]]:
            new_leaves = list(leaves)
            for i, x in zip(mapped_index, mapped, strict=True):
                new_leaves[i] = x
            out = self.fun(*treedef.unflatten(new_leaves))
            out_mapped, out_unmapped, *traced["rest"] = split_output(out, self.out_axes)
            return out_mapped, out_unmapped

        try:
            out_mapped, out_unmapped = jax.vmap(
                body,
                in_axes=([axes[i] for i in mapped_index],),
                out_axes=(0, None),
                axis_name=self.axis_name,
                axis_size=size,
                **dict(self.vmapkwargs),
            )([leaves[i] for i in mapped_index])
        except ValueError as e:
            # `body` returned, so JAX refused its output: an unmapped array
            # output that varies over the batch.
            if "rest" in traced and "None" in str(e):
                raise ValueError(_unmapped_but_batched(*traced["rest"])) from e
            raise
        return join_output(out_mapped, out_unmapped, *traced["rest"])

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # Used as a method decorator: bind the instance as the first argument.
        if instance is None:
            return self
        return Partial(self, instance)


@overload
def filter_vmap(
    *,
    in_axes: Any = if_array(0),
    out_axes: Any = if_array(0),
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    **vmapkwargs: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


@overload
def filter_vmap(
    fun: Callable[..., Any],
    *,
    in_axes: Any = if_array(0),
    out_axes: Any = if_array(0),
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    **vmapkwargs: Any,
) -> Callable[..., Any]: ...


def filter_vmap(
    fun: Any = _MISSING,
    *,
    in_axes: Any = if_array(0),
    out_axes: Any = if_array(0),
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    **vmapkwargs: Any,
) -> Any:
    """Vectorise `fun` over the arrays in its arguments, like `jax.vmap`, but
    accepting any Python objects as arguments and outputs.

    By default every array is mapped over its axis 0 and everything else is
    passed through unchanged; array outputs get the batch axis at 0 and other
    outputs come back as returned. Vmapping a constructor over keys builds an
    ensemble: one Module whose arrays have a leading batch axis.

    Args:
        fun: the function to vectorise, called as `fun(*args)` (no keyword
            arguments). Leave it out to use `filter_vmap(...)` as a decorator.
        in_axes: a prefix of the tuple of positional arguments (or a dict
            from argument names to specs, the others getting `if_array(0)`),
            with leaves that are an int (the axis to map), `None` (not mapped)
            or a callable `leaf -> int | None`, called on each leaf below it.
        out_axes: the same for the output: where the batch axis goes in each
            output leaf. Outputs with `None` must not depend on the batch.
        axis_name: a name for the mapped axis, for collectives such as
            `jax.lax.pmean(x, axis_name)` inside `fun`.
        axis_size: the batch size; needed only when no input is mapped.
        **vmapkwargs: passed on to `jax.vmap` (e.g. `spmd_axis_name=`), as in
            Equinox.

    Returns:
        The vectorised function (a Module, so it is a pytree of whatever
        arrays `fun` holds).

    Raises:
        ValueError: if `in_axes`/`out_axes` is not a prefix of the
            arguments/outputs, maps a non-array, or mapped sizes disagree;
            or if no input is mapped and `axis_size` is not given (Equinox
            returns the unbatched output then).

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def scale(x, how):
        ...     return x * 2 if how == "double" else x
        >>> pytreemod.filter_vmap(scale)(jnp.arange(3.0), "double")
        Array([0., 2., 4.], dtype=float32)
        >>> @pytreemod.filter_vmap(in_axes=(None, 0))
        ... def outer(x, y):
        ...     return x * y
        >>> outer(jnp.arange(2.0), jnp.arange(3.0)).shape
        (3, 2)
    """
    if fun is _MISSING:
        return functools.partial(
            filter_vmap,
            in_axes=in_axes,
            out_axes=out_axes,
            axis_name=axis_name,
            axis_size=axis_size,
            **vmapkwargs,
        )
    check_options(fun, in_axes, out_axes, axis_name, axis_size, "filter_vmap")
    wrapper = _VmapWrapper(
        fun, in_axes, out_axes, axis_name, axis_size, tuple(sorted(vmapkwargs.items()))
    )
    return module_update_wrapper(wrapper)


def check_options(
    fun: Any,
    in_axes: Any,
    out_axes: Any,
    axis_name: Any,
    axis_size: Any,
    name: str,
) -> None:
    """The checks `filter_vmap` and `filter_pmap` make when they wrap."""
    if not callable(fun):
        raise TypeError(
            f"`{name}` needs a callable to transform; got {fun!r} of type "
            f"`{type(fun).__name__}`."
        )
    if not isinstance(in_axes, dict):
        check_axis_spec(in_axes, "in_axes")
    else:
        for key, spec in in_axes.items():
            check_axis_spec(spec, f"in_axes[{key!r}]")
    check_axis_spec(out_axes, "out_axes")
    if axis_size is not None and (
        isinstance(axis_size, bool) or not isinstance(axis_size, int) or axis_size < 1
    ):
        raise ValueError(
            f"`axis_size` must be a positive int or None; got {axis_size!r}"
        )
    try:
        hash(axis_name)
    except TypeError:
        raise TypeError(
            f"`axis_name` must be hashable (usually a string); got {axis_name!r}"
        ) from None
