"""`filter_custom_vjp`: `jax.custom_vjp` for functions of arbitrary pytrees,
differentiated with respect to their first argument."""

import functools
import warnings
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from .._module._is_array import is_array, is_inexact_array
from ._filters import _flatten_up_to, _is_none, _Static, combine, partition

__all__ = ["filter_custom_vjp"]

_T = TypeVar("_T")

_NOT_DEFINED = """\
`{name}` is a `filter_custom_vjp` function whose {missing} not defined yet.
Define both rules before calling it:
    @{name}.def_fwd
    def {name}_fwd(perturbed, vjp_arg, *args, **kwargs):
        ...
        return out, residuals

    @{name}.def_bwd
    def {name}_bwd(residuals, grad_out, perturbed, vjp_arg, *args, **kwargs):
        ...
        return grad_vjp_arg"""

_ARGS_PERTURBED = """\
Unexpected tangent. `*args` and `**kwargs` to `filter_custom_vjp` cannot be
autodifferentiated. `{name}` is differentiated with respect to its first
argument only, but an array among its other arguments depends on something
being differentiated: its gradient would be silently dropped. Pass
everything to differentiate in the first argument, as a tuple if need be:
    {name}((x, y), *other_args)"""

_DEFVJP_DEPRECATED = """\
`filter_custom_vjp.defvjp` is deprecated in favour of `.def_fwd` and `.def_bwd`
(as in Equinox since 0.10.7). The new rules take an extra `perturbed` argument
first (which leaves of `vjp_arg` are differentiated; ignoring it is fine), and
`grad_out` holds `None` for a zero cotangent of any leaf:
    @{name}.def_fwd
    def {name}_fwd(perturbed, vjp_arg, *args, **kwargs): ...
    @{name}.def_bwd
    def {name}_bwd(residuals, grad_out, perturbed, vjp_arg, *args, **kwargs): ..."""

_FWD_NOT_A_PAIR = (
    "The forward rule of `{name}` (`def_fwd`) must return a pair `(out, residuals)`;"
    " got {got}."
)

_BAD_GRADIENT = """\
The backward rule of `{name}` (`def_bwd`) must return a gradient with the
structure of the first argument `vjp_arg` (`None` allowed for any leaf or
subtree with zero gradient), but at `{path}` `vjp_arg` has
{arg_side}
and the gradient has
{grad_side}."""


class _Call:
    """What one call of a `filter_custom_vjp` function keeps outside JAX: the
    non-array parts of its inputs, outputs and residuals, and which leaves of
    `vjp_arg` are perturbed. It travels as a static (non-differentiated)
    argument, so the forward and backward rules of that call share it."""

    __slots__ = ("nonarray_vjp_arg", "nonarray_rest", "out", "residuals", "perturbed")

    def __init__(self, nonarray_vjp_arg: Any, nonarray_rest: Any):
        self.nonarray_vjp_arg = nonarray_vjp_arg
        self.nonarray_rest = nonarray_rest
        self.out: _Static | None = None
        self.residuals: Any = None
        self.perturbed: Any = None


def _split_output(out: Any, call: _Call) -> tuple[Any, Any]:
    array_out, nonarray_out = partition(out, is_array)
    call.out = _Static(nonarray_out)
    return partition(array_out, is_inexact_array)


def _zero_to_none(cotangent: Any) -> Any:
    return None if isinstance(cotangent, SymbolicZero) else cotangent


def _zero_to_zeros(cotangent: Any) -> Any:
    if isinstance(cotangent, SymbolicZero):
        return jnp.zeros(cotangent.aval.shape, cotangent.aval.dtype)
    return cotangent


class filter_custom_vjp(Generic[_T]):
    """Give a function of arbitrary pytrees a custom VJP (reverse-mode) rule,
    with respect to its first argument.

    Use it as a decorator on `fn(vjp_arg, *args, **kwargs)`, which may take and
    return any pytrees, then define the two halves of the rule:

    - `fwd(perturbed, vjp_arg, *args, **kwargs)` returns `(out, residuals)`.
      `perturbed` has the structure of `vjp_arg` and says, with a bool per
      leaf, which leaves are being differentiated (never one that is not a
      floating-point array). `residuals` may be any pytree.
    - `bwd(residuals, grad_out, perturbed, vjp_arg, *args, **kwargs)` returns
      the gradient with respect to `vjp_arg`: a pytree of its structure with
      `None` for leaves (or subtrees) with zero gradient. `grad_out` has the
      structure of `out`, with `None` wherever the cotangent is zero or the
      leaf is not a floating-point array.

    Only `vjp_arg` is differentiated: if an array among `args` or `kwargs`
    depends on something being differentiated, that is an error, so that its
    gradient is not silently lost. To differentiate several things, pass them
    as a tuple in `vjp_arg`.

    Args:
        fn: the function.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> @pytreemod.filter_custom_vjp
        ... def clip_gradient(x, bound):
        ...     return x
        >>> @clip_gradient.def_fwd
        ... def clip_fwd(perturbed, x, bound):
        ...     return x, None
        >>> @clip_gradient.def_bwd
        ... def clip_bwd(residuals, grad_out, perturbed, x, bound):
        ...     return jnp.clip(grad_out, -bound, bound)
        >>> jax.grad(lambda x: 5.0 * clip_gradient(x, 2.0))(jnp.array(1.0))
        Array(2., dtype=float32, weak_type=True)
    """

    def __init__(self, fn: Callable[..., _T]):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.fn_fwd: Callable[..., Any] | None = None
        self.fn_bwd: Callable[..., Any] | None = None
        # Set by the older `defvjp`: zero cotangents of floating-point outputs
        # reach `bwd` as arrays of zeros rather than `None`.
        self._zeros_as_arrays = False
        self._name = getattr(fn, "__name__", "the function")
        custom = jax.custom_vjp(self._primal, nondiff_argnums=(0,))
        custom.defvjp(self._fwd, self._bwd, symbolic_zeros=True)
        self._custom = custom

    def def_fwd(self, fn_fwd: Callable[..., Any]) -> Callable[..., Any]:
        """Set the forward rule `fn_fwd(perturbed, vjp_arg, *args, **kwargs)`,
        which returns `(out, residuals)`. Returns `fn_fwd`, so that it works as a
        decorator. See `filter_custom_vjp` for an example."""
        self.fn_fwd = fn_fwd
        return fn_fwd

    def def_bwd(self, fn_bwd: Callable[..., Any]) -> Callable[..., Any]:
        """Set the backward rule
        `fn_bwd(residuals, grad_out, perturbed, vjp_arg, *args, **kwargs)`, which
        returns the gradient with respect to `vjp_arg`. Returns `fn_bwd`, so
        that it works as a decorator. See `filter_custom_vjp` for an example."""
        self.fn_bwd = fn_bwd
        return fn_bwd

    def defvjp(self, fn_fwd: Callable[..., Any], fn_bwd: Callable[..., Any]) -> None:
        """The older API, deprecated as in Equinox: set both rules at once, as
        `fn_fwd(vjp_arg, *args, **kwargs) -> (out, residuals)` and
        `fn_bwd(residuals, grad_out, vjp_arg, *args, **kwargs)`, without
        `perturbed`. `grad_out` holds arrays of zeros (not `None`) for
        floating-point outputs with a zero cotangent.

        Example:
            >>> import warnings
            >>> import jax
            >>> import jax.numpy as jnp
            >>> import pytreemod
            >>> @pytreemod.filter_custom_vjp
            ... def double(x):
            ...     return 2 * x
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore", DeprecationWarning)
            ...     double.defvjp(lambda x: (double(x), None), lambda r, g, x: 2 * g)
            >>> jax.grad(double)(jnp.array(1.0))
            Array(2., dtype=float32, weak_type=True)
        """
        warnings.warn(
            _DEFVJP_DEPRECATED.format(name=self._name), DeprecationWarning, stacklevel=2
        )

        def fwd(perturbed: Any, vjp_arg: Any, *args: Any, **kwargs: Any) -> Any:
            del perturbed
            return fn_fwd(vjp_arg, *args, **kwargs)

        def bwd(
            residuals: Any, grad_out: Any, perturbed: Any, *args: Any, **kwargs: Any
        ) -> Any:
            del perturbed
            return fn_bwd(residuals, grad_out, *args, **kwargs)

        self.fn_fwd = fwd
        self.fn_bwd = bwd
        self._zeros_as_arrays = True

    def _inputs(
        self, box: _Static, diff: Any, nondiff: Any, rest: Any
    ) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        call: _Call = box.value
        vjp_arg = combine(diff, nondiff, call.nonarray_vjp_arg)
        args, kwargs = combine(rest, call.nonarray_rest)
        return vjp_arg, args, kwargs

    def _primal(self, box: _Static, diff: Any, nondiff: Any, rest: Any) -> Any:
        vjp_arg, args, kwargs = self._inputs(box, diff, nondiff, rest)
        return _split_output(self.fn(vjp_arg, *args, **kwargs), box.value)

    def _fwd(self, box: _Static, diff: Any, nondiff: Any, rest: Any) -> Any:
        # With `symbolic_zeros=True`, every array leaf comes as a
        # `CustomVJPPrimal` that says whether it is perturbed.
        def is_primal(x: Any) -> bool:
            return isinstance(x, CustomVJPPrimal)

        if any(p.perturbed for p in jtu.tree_leaves(rest, is_leaf=is_primal)):
            raise RuntimeError(_ARGS_PERTURBED.format(name=self._name))
        call: _Call = box.value
        diff_perturbed = jtu.tree_map(lambda p: p.perturbed, diff, is_leaf=is_primal)
        diff, nondiff, rest = jtu.tree_map(
            lambda p: p.value, (diff, nondiff, rest), is_leaf=is_primal
        )
        not_perturbed = jtu.tree_map(lambda _: False, (nondiff, call.nonarray_vjp_arg))
        perturbed = combine(diff_perturbed, *not_perturbed)
        call.perturbed = perturbed
        vjp_arg, args, kwargs = self._inputs(box, diff, nondiff, rest)
        assert self.fn_fwd is not None
        result = self.fn_fwd(perturbed, vjp_arg, *args, **kwargs)
        if not (isinstance(result, tuple) and len(result) == 2):
            got = f"a `{type(result).__name__}`"
            raise TypeError(_FWD_NOT_A_PAIR.format(name=self._name, got=got))
        out, residuals = result
        array_residuals, call.residuals = partition(residuals, is_array)
        return _split_output(out, call), (array_residuals, diff, nondiff, rest)

    def _bwd(self, box: _Static, saved: Any, cotangents: Any) -> Any:
        call: _Call = box.value
        array_residuals, diff, nondiff, rest = saved
        residuals = combine(array_residuals, call.residuals)
        vjp_arg, args, kwargs = self._inputs(box, diff, nondiff, rest)
        diff_cotangent, _ = cotangents
        if self._zeros_as_arrays:
            grad_out = jtu.tree_map(_zero_to_zeros, diff_cotangent)
        else:
            grad_out = jtu.tree_map(_zero_to_none, diff_cotangent)
        assert self.fn_bwd is not None
        grads = self.fn_bwd(
            residuals, grad_out, call.perturbed, vjp_arg, *args, **kwargs
        )
        return self._diff_gradient(grads, vjp_arg, diff), None, None

    def _diff_gradient(self, grads: Any, vjp_arg: Any, diff: Any) -> Any:
        """Keep the gradient's leaves at the floating-point arrays of
        `vjp_arg`, in the structure of `diff`; a `None` in `grads` may stand
        for a whole subtree."""
        grad_leaves, grad_def = jtu.tree_flatten(grads, is_leaf=_is_none)
        _flatten_up_to(
            grad_def,
            grads,
            vjp_arg,
            _is_none,
            lambda path, grad_side, arg_side: _BAD_GRADIENT.format(
                name=self._name,
                path="vjp_arg" + jtu.keystr(path),
                arg_side=arg_side,
                grad_side=grad_side,
            ),
        )
        diff_parts = grad_def.flatten_up_to(diff)
        kept = [
            jtu.tree_map(lambda _: None, d) if g is None or d is None else g
            for g, d in zip(grad_leaves, diff_parts, strict=True)
        ]
        return grad_def.unflatten(kept)

    def __call__(self, vjp_arg: Any, /, *args: Any, **kwargs: Any) -> _T:
        missing = [
            f"`{name}` rule"
            for name, rule in (("def_fwd", self.fn_fwd), ("def_bwd", self.fn_bwd))
            if rule is None
        ]
        if missing:
            missing_text = " and ".join(missing) + (
                " are" if len(missing) > 1 else " is"
            )
            raise TypeError(_NOT_DEFINED.format(name=self._name, missing=missing_text))
        array_vjp_arg, nonarray_vjp_arg = partition(vjp_arg, is_array)
        diff, nondiff = partition(array_vjp_arg, is_inexact_array)
        rest, nonarray_rest = partition((args, kwargs), is_array)
        call = _Call(nonarray_vjp_arg, nonarray_rest)
        diff_out, nondiff_out = self._custom(_Static(call), diff, nondiff, rest)
        assert call.out is not None, "neither the function nor its fwd rule ran"
        return combine(diff_out, nondiff_out, call.out.value)
