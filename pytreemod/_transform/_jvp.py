"""`filter_jvp`: forward-mode derivatives of functions of arbitrary pytrees."""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import jax.extend.core
import jax.numpy as jnp
import jax.tree_util as jtu

from .._module._compat import is_traced_by
from .._module._is_array import is_inexact_array_like
from ._filters import _flatten_up_to, _is_none, _Static

__all__ = ["filter_jvp"]

_T = TypeVar("_T")

_NOT_SEQUENCES = (
    "`filter_jvp` takes `primals` and `tangents` as sequences (tuples or lists) of "
    "positional arguments, like `jax.jvp`; got {got}. Write "
    "`filter_jvp(fn, (x,), (tx,))` for a function of one argument."
)

_STRUCTURE_MISMATCH = """\
`filter_jvp` needs `tangents` to have the structure of `primals`, with `None`
for every leaf that is not differentiated, but at `{path}` the primals have
{primal_side}
and the tangents have
{tangent_side}.
Build the tangents from the primals, for example
    tangents = jax.tree_util.tree_map(
        lambda p: jnp.ones_like(p) if pytreemod.is_inexact_array(p) else None,
        primals,
    )"""

_NOT_DIFFERENTIABLE = """\
`filter_jvp` got a tangent for `{path}`, which is {what}: only floating-point
arrays and Python floats/complexes can have tangents. Pass `None` as the
tangent of this leaf."""

_SHAPE_MISMATCH = (
    "`filter_jvp`: the tangent of `{path}` has shape {tangent_shape}, but the primal "
    "has shape {primal_shape}; a tangent must have its primal's shape."
)


def _describe_leaf(x: Any) -> str:
    if hasattr(x, "dtype"):
        return f"an array of dtype {x.dtype}"
    return f"a `{type(x).__name__}`"


def _check_tangents(
    primals: Any, primal_leaves: list[Any], tangents: Any, treedef: Any
) -> list[Any]:
    """Flatten `tangents` like `primals` and check each tangent against its
    primal, raising errors that name the offending argument."""
    tangent_leaves = _flatten_up_to(
        treedef,
        primals,
        tangents,
        _is_none,
        lambda path, primal_side, tangent_side: _STRUCTURE_MISMATCH.format(
            path="primals" + jtu.keystr(path),
            primal_side=primal_side,
            tangent_side=tangent_side,
        ),
    )
    for i, (p, t) in enumerate(zip(primal_leaves, tangent_leaves, strict=True)):
        if t is None:
            continue
        if not is_inexact_array_like(p):
            path = jtu.tree_flatten_with_path(primals, is_leaf=_is_none)[0][i][0]
            raise TypeError(
                _NOT_DIFFERENTIABLE.format(
                    path="primals" + jtu.keystr(path), what=_describe_leaf(p)
                )
            )
        if jnp.shape(t) != jnp.shape(p):
            path = jtu.tree_flatten_with_path(primals, is_leaf=_is_none)[0][i][0]
            raise ValueError(
                _SHAPE_MISMATCH.format(
                    path="primals" + jtu.keystr(path),
                    tangent_shape=jnp.shape(t),
                    primal_shape=jnp.shape(p),
                )
            )
    return tangent_leaves


def filter_jvp(
    fn: Callable[..., _T],
    primals: Sequence[Any],
    tangents: Sequence[Any],
    **kwargs: Any,
) -> tuple[_T, Any]:
    """Evaluate `fn(*primals, **kwargs)` and its Jacobian-vector product with
    `tangents`, where the arguments and the output may be any pytrees.

    Like `jax.jvp`, but a leaf of `primals` need not be an array: give a tangent
    (an array of the primal's shape) for each floating-point leaf you want to
    perturb, and `None` for every other leaf (integer arrays, strings,
    functions, floats you hold fixed).

    Args:
        fn: the function; called as `fn(*primals, **kwargs)`. It may return any
            pytree.
        primals: a sequence of the positional arguments of `fn`.
        tangents: a sequence with the structure of `primals`, holding an array
            or `None` at each leaf.
        **kwargs: keyword arguments for `fn`; they are not differentiated.

    Returns:
        `(out, tangents_out)`: the output of `fn`, and a pytree of its structure
        holding the tangent of each output leaf, or `None` where a leaf's
        tangent is zero because it does not depend on the perturbed inputs or is
        not a floating-point array.

    Raises:
        TypeError: if `primals` or `tangents` is not a sequence, or a tangent is
            given for a leaf that cannot be differentiated.
        ValueError: if `tangents` does not have the structure of `primals`, or a
            tangent's shape is not its primal's.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> def f(x, activation, label):
        ...     return {"y": activation(2.0 * x), "label": label}
        >>> out, t_out = pytreemod.filter_jvp(
        ...     f, (jnp.zeros(()), jnp.exp, "a"), (jnp.ones(()), None, None)
        ... )
        >>> out
        {'label': 'a', 'y': Array(1., dtype=float32)}
        >>> t_out
        {'label': None, 'y': Array(2., dtype=float32)}
    """
    if not isinstance(primals, (tuple, list)) or not isinstance(
        tangents, (tuple, list)
    ):
        got = f"`{type(primals).__name__}` and `{type(tangents).__name__}`"
        raise TypeError(_NOT_SEQUENCES.format(got=got))
    primals = tuple(primals)
    tangents = tuple(tangents)
    primal_leaves, treedef = jtu.tree_flatten(primals, is_leaf=_is_none)
    tangent_leaves = _check_tangents(primals, primal_leaves, tangents, treedef)
    perturbed = [i for i, t in enumerate(tangent_leaves) if t is not None]
    if not perturbed:
        out = fn(*primals, **kwargs)
        return out, jtu.tree_map(lambda _: None, out)

    def flat_fn(*diff_leaves: Any) -> Any:
        leaves = list(primal_leaves)
        for i, leaf in zip(perturbed, diff_leaves, strict=True):
            leaves[i] = leaf
        out = fn(*treedef.unflatten(leaves), **kwargs)
        this_trace = jax.extend.core.find_top_trace(diff_leaves)
        out_leaves, out_def = jtu.tree_flatten(out)
        traced, kept = [], []
        for x in out_leaves:
            # An output leaf has a tangent exactly when it is traced by this
            # JVP; constants and outer tracers get `None`.
            if is_traced_by(x, this_trace):
                traced.append(x)
                kept.append(None)
            else:
                kept.append(x)
        return traced, _Static((out_def, kept))

    diff_primals = [primal_leaves[i] for i in perturbed]
    diff_tangents = [tangent_leaves[i] for i in perturbed]
    (traced, box), (traced_tangents, _) = jax.jvp(flat_fn, diff_primals, diff_tangents)
    out_def, kept = box.value
    out_leaves, tangent_out_leaves = [], []
    traced_iter = iter(zip(traced, traced_tangents, strict=True))
    for x in kept:
        if x is None:
            primal, tangent = next(traced_iter)
            out_leaves.append(primal)
            differentiable = jnp.issubdtype(jnp.result_type(primal), jnp.inexact)
            tangent_out_leaves.append(tangent if differentiable else None)
        else:
            out_leaves.append(x)
            tangent_out_leaves.append(None)
    return out_def.unflatten(out_leaves), out_def.unflatten(tangent_out_leaves)
