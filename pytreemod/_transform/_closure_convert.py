"""`filter_closure_convert`: turn a function's closed-over arrays and tracers
into pytree leaves of a Module, so they can cross a JAX API boundary."""

import types
from collections.abc import Callable
from typing import Any, TypeVar, cast

import jax
import jax.tree_util as jtu
from typing_extensions import ParamSpec

from .._module._field import field
from .._module._is_array import is_array
from .._module._module import Module
from .._module._tree_equal import tree_equal
from ._filters import combine, partition

__all__ = ["filter_closure_convert"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_DIFFERENT_ARRAYS = """\
A function made by `filter_closure_convert` was called with arrays that differ
from its example arguments: it was traced for
    {expected}
but got
    {got}.
It can only be called with arrays of the same structure, shapes and dtypes as
the example arguments. Convert it again with the new arguments."""

_DIFFERENT_STATIC = """\
A function made by `filter_closure_convert` was called with non-array arguments
that differ from its example arguments: it was traced for
    {expected}
but got
    {got}.
Non-array arguments are fixed when the function is converted. Convert it again
with the new arguments."""

_NOT_CALLABLE = "`filter_closure_convert` needs a callable first argument; got {got!r}."


def _is_struct(x: Any) -> bool:
    return is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _struct(x: Any) -> jax.ShapeDtypeStruct:
    # Weak types are dropped, so that a Python-scalar-derived example array and
    # a normal array of the same dtype are interchangeable.
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


class _Converted(Module):
    """Base of the closure-converted functions: records the example inputs and
    checks each call against them."""

    in_structs: tuple[jax.ShapeDtypeStruct, ...] = field(static=True)
    in_def: Any = field(static=True)
    in_static: tuple[tuple[Any, ...], Any] = field(static=True)

    @property
    def in_struct(self) -> Any:
        """The example `(args, kwargs)`, with arrays as `jax.ShapeDtypeStruct`s."""
        static_leaves, static_def = self.in_static
        dynamic = self.in_def.unflatten(self.in_structs)
        return combine(dynamic, static_def.unflatten(static_leaves))

    def _check_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        dynamic, static = partition((args, kwargs), is_array)
        leaves, treedef = jtu.tree_flatten(dynamic)
        structs = tuple(map(_struct, leaves))
        if treedef != self.in_def or structs != self.in_structs:
            expected = self.in_def.unflatten(self.in_structs)
            got = treedef.unflatten(structs)
            raise ValueError(_DIFFERENT_ARRAYS.format(expected=expected, got=got))
        static_leaves, static_def = self.in_static
        recorded = static_def.unflatten(static_leaves)
        if tree_equal(static, recorded) is not True:
            raise ValueError(_DIFFERENT_STATIC.format(expected=recorded, got=static))
        return leaves


class _TrivialClosureConvert(_Converted):
    """For a function with no closure: nothing to hoist, so just call it."""

    fn: Callable[..., Any]

    @property
    def consts(self) -> list[Any]:
        """The hoisted values: none, as the function has no closure."""
        return []

    @property
    def out_struct(self) -> Any:
        """The output for the example inputs, with arrays as
        `jax.ShapeDtypeStruct`s."""
        args, kwargs = self.in_struct
        dynamic, static = partition((args, kwargs), _is_struct)
        out_static = []

        def run(dyn: Any) -> Any:
            a, k = combine(dyn, static)
            out_dynamic, rest = partition(self.fn(*a, **k), is_array)
            out_static.append(rest)
            return out_dynamic

        out_dynamic = jax.eval_shape(run, dynamic)
        return combine(out_dynamic, out_static[-1])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._check_inputs(args, kwargs)
        return self.fn(*args, **kwargs)


class _Jaxpr(_Converted):
    """A function traced to a jaxpr; its closed-over values are `consts`."""

    # A plain (non-static) field, as in a jaxpr-holding pytree JAX expects.
    jaxpr: Any
    consts: list[Any]
    out_structs: tuple[jax.ShapeDtypeStruct, ...] = field(static=True)
    out_def: Any = field(static=True)
    out_static: tuple[tuple[Any, ...], Any] = field(static=True)

    @property
    def out_struct(self) -> Any:
        """The output for the example inputs, with arrays as
        `jax.ShapeDtypeStruct`s."""
        static_leaves, static_def = self.out_static
        dynamic = self.out_def.unflatten(self.out_structs)
        return combine(dynamic, static_def.unflatten(static_leaves))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        leaves = self._check_inputs(args, kwargs)
        out_leaves = jax.core.eval_jaxpr(self.jaxpr, self.consts, *leaves)
        static_leaves, static_def = self.out_static
        return combine(
            self.out_def.unflatten(out_leaves), static_def.unflatten(static_leaves)
        )


def _flat(tree: Any) -> tuple[tuple[Any, ...], Any]:
    leaves, treedef = jtu.tree_flatten(tree)
    return tuple(leaves), treedef


def filter_closure_convert(
    fn: Callable[_P, _T], *args: Any, **kwargs: Any
) -> Callable[_P, _T]:
    """Trace `fn` at example arguments and return an equivalent function that
    carries everything `fn` closes over (arrays, and tracers of enclosing
    transforms) as pytree leaves.

    Like `jax.closure_convert`, but for functions of arbitrary pytrees, and
    every closed-over array is hoisted, not just floating-point ones. This is
    what a function needs before crossing an API boundary that cannot see
    closures, such as the rules of `jax.custom_vjp` or a custom primitive.

    Args:
        fn: the function.
        *args: example positional arguments. Arrays (and `jax.ShapeDtypeStruct`s)
            are only used for their shapes and dtypes; everything else, Python
            numbers included, is fixed as it is.
        **kwargs: example keyword arguments, likewise.

    Returns:
        A Module callable as `fn` is, with arrays of the same shapes and dtypes
        and the same non-array arguments as the examples; anything else is an
        error. Its `consts` field holds the hoisted values.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def outer(x):
        ...     scale = 2.0 * x  # a tracer of `jax.grad`
        ...     g = pytreemod.filter_closure_convert(lambda y: scale * y, x)
        ...     assert any(c is scale for c in g.consts)
        ...     return g(x)
        >>> jax.grad(outer)(jnp.array(3.0))
        Array(12., dtype=float32)
    """
    if not callable(fn):
        raise TypeError(_NOT_CALLABLE.format(got=fn))
    in_dynamic, in_static = partition((args, kwargs), _is_struct)
    in_leaves, in_def = jtu.tree_flatten(in_dynamic)
    in_structs = tuple(map(_struct, in_leaves))
    if isinstance(fn, types.FunctionType) and fn.__closure__ is None:
        # A plain function without a closure cannot close over tracers; it may
        # still read module globals, which are not transform-local anyway.
        return cast(
            Callable[_P, _T],
            _TrivialClosureConvert(in_structs, in_def, _flat(in_static), fn),
        )

    outputs = []

    def flat_fn(*leaves: Any) -> list[Any]:
        a, k = combine(in_def.unflatten(leaves), in_static)
        out_dynamic, out_static = partition(fn(*a, **k), is_array)
        out_leaves, out_def = jtu.tree_flatten(out_dynamic)
        outputs.append((out_def, out_static))
        return out_leaves

    closed_jaxpr, out_shapes = jax.make_jaxpr(flat_fn, return_shape=True)(*in_structs)
    out_def, out_static = outputs[-1]
    converted = _Jaxpr(
        in_structs,
        in_def,
        _flat(in_static),
        closed_jaxpr.jaxpr,
        list(closed_jaxpr.consts),
        tuple(map(_struct, out_shapes)),
        out_def,
        _flat(out_static),
    )
    return cast(Callable[_P, _T], converted)
