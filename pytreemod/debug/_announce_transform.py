"""`announce_transform`: an identity on any pytree that reports each JAX
transform its arrays go through.

The arrays pass through one primitive, `pytreemod_announce`, whose rules do
the reporting. Each rule that transforms the primitive binds it again with
one more stage on its `path` parameter (`vmap`, `jvp_p` for the primal half
of a JVP, `jvp_t` for the tangent half, `transpose`), and the rules that end
a chain (eager evaluation, abstract evaluation, lowering to MLIR) report the
whole path, such as `vmap:impl` or `jvp_t:transpose:mlir`.
"""

import warnings
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import jax.tree_util as jtu

from .._module._compat import define_primitive, is_symbolic_zero
from .._module._is_array import is_array
from .._transform._filters import combine, partition

__all__ = ["announce_transform"]

_T = TypeVar("_T")

_UNAVAILABLE = (
    "`announce_transform` needs to define a JAX primitive, which this JAX "
    "version does not allow in the way pytreemod expects; it returns its input "
    "unchanged and announces nothing."
)


def _report(path: tuple[str, ...], label: str, announce: Callable[[str], Any]) -> None:
    announce(label + ":".join(path))


def _bind(values: Sequence[Any], path: tuple[str, ...], **params: Any) -> list[Any]:
    if not values:
        return []
    return list(_announce_p.bind(*values, path=path, **params))


def _impl(*values: Any, path, label, intermediates, announce) -> Sequence[Any]:
    _report(path + ("impl",), label, announce)
    return values


def _abstract_eval(*avals: Any, path, label, intermediates, announce) -> list[Any]:
    _report(path + ("abstract",), label, announce)
    return list(avals)


def _lowering(*values: Any, path, label, intermediates, announce) -> list[Any]:
    _report(path + ("mlir",), label, announce)
    return list(values)


def _bind_nonzero(values: Sequence[Any], path: tuple[str, ...], **params) -> list:
    """Bind the values that are not symbolic zeros; keep the zeros in place."""
    nonzero = iter(
        _bind([v for v in values if not is_symbolic_zero(v)], path, **params)
    )
    return [v if is_symbolic_zero(v) else next(nonzero) for v in values]


def _jvp(primals, tangents, *, path, label, intermediates, announce):
    params = dict(label=label, intermediates=intermediates, announce=announce)
    if intermediates:
        _report(path + ("jvp",), label, announce)
    primals_out = _bind(primals, path + ("jvp_p",), **params)
    tangents_out = _bind_nonzero(tangents, path + ("jvp_t",), **params)
    return primals_out, tangents_out


def _transpose(cotangents, *primals, path, label, intermediates, announce):
    del primals
    path = path + ("transpose",)
    if intermediates:
        _report(path, label, announce)
    params = dict(label=label, intermediates=intermediates, announce=announce)
    return _bind_nonzero(cotangents, path, **params)


def _batch(values, dims, *, path, label, intermediates, announce):
    path = path + ("vmap",)
    if intermediates:
        _report(path, label, announce)
    params = dict(label=label, intermediates=intermediates, announce=announce)
    return _bind(values, path, **params), dims


_announce_p = define_primitive(
    "pytreemod_announce",
    impl=_impl,
    abstract_eval=_abstract_eval,
    jvp=_jvp,
    transpose=_transpose,
    batch=_batch,
    lowering=_lowering,
)


def announce_transform(
    x: _T,
    name: Hashable | None = None,
    intermediates: bool = False,
    announce: Callable[[str], Any] = print,
) -> _T:
    """Return `x` unchanged, and report each JAX transform applied to its arrays.

    A debugging aid: it shows which transforms (`jit`, `vmap`, `grad`, ...)
    the arrays at this point of a program actually go through. A report is a
    colon-separated path of stages, ending where the value is finally
    evaluated: `impl` (run eagerly), `abstract` (traced, as under `jax.jit`)
    or `mlir` (lowered to be compiled). The stages before it are `vmap`,
    `jvp_p` and `jvp_t` (the primal and tangent halves of a JVP) and
    `transpose` (reverse mode). So `jax.jit(jax.vmap(f))` reports
    `vmap:abstract` then `vmap:mlir`. Leaves that are not arrays are passed
    through untouched.

    Args:
        x: any pytree.
        name: an optional label, shown as `(name) ` before each report.
        intermediates: whether to report also each transform as it is applied,
            before the value reaches a final stage (`vmap`, then `vmap:impl`).
        announce: what each report (a string) is passed to; `print` by default.

    Returns:
        `x`, unchanged.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> f = lambda x: pytreemod.debug.announce_transform(x, name="x")
        >>> _ = jax.vmap(f)(jnp.arange(3.0))
        (x) vmap:impl
    """
    if _announce_p is None:  # pragma: no cover - depends on the JAX version
        warnings.warn(_UNAVAILABLE, RuntimeWarning, stacklevel=2)
        return x
    label = "" if name is None else f"({name}) "
    arrays, rest = partition(x, is_array)
    leaves, treedef = jtu.tree_flatten(arrays)
    leaves = _bind(
        leaves,
        (),
        label=label,
        intermediates=bool(intermediates),
        announce=announce,
    )
    return combine(jtu.tree_unflatten(treedef, leaves), rest)
