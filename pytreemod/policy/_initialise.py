r"""`initialise`: re-initialise the selected arrays of a model, each with a key
derived from its key path, directly in its final sharding.

An array's key is `fold_in(key, crc32(keystr(path)))`: it depends on the
array's own key path and on nothing else, so adding, removing or reordering
other layers changes no other array's values. (`zlib.crc32`, not Python's
`hash`, which is salted per process.)

Everything selected is created by one `jax.jit` whose `out_shardings` are the
arrays' shardings, so each device computes and holds its own shard, and an
abstract model from `pytreemod.filter_eval_shape` (`jax.ShapeDtypeStruct`
leaves) is built once, directly in its final values.
"""

import dataclasses
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.sharding import Sharding

from ..select._rules import first_matches, parse_rules, unmatched_message
from ..select._selector import is_array_leaf

__all__ = ["initialise", "path_key"]

Initialiser = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]

_ABSTRACT_LEFT = """\
{count} abstract array{s} (`jax.ShapeDtypeStruct`) of this `{tree}` match{es} \
no rule, so {it} would have no value:
{paths}
Add a rule that selects {them}, or pass `default=` (an initialiser for every
array no rule selects, e.g. `default=jax.nn.initializers.zeros`)."""

_BAD_INITIALISER = """\
The initialiser of {rule} failed for the array at {path} (shape {shape}, \
dtype {dtype}): {error}
An initialiser is called as `init(key, shape, dtype)` and returns an array of
that shape and dtype, as `jax.nn.initializers.*` do; e.g.
    (select.field("bias"), jax.nn.initializers.zeros)
    (select.instance(nn.Linear), jax.nn.initializers.orthogonal())"""

_WRONG_RESULT = """\
The initialiser of {rule} returned the wrong {what} for the array at {path}: \
expected {expected}, got {got}. It must return an array of the shape and dtype \
it is given (`init(key, shape, dtype)`)."""


def path_key(key: jax.Array, path: str) -> jax.Array:
    """The key of the array at key path `path` (as `jax.tree_util.keystr`
    writes it): `key` folded with the CRC-32 of the path, the same in every
    process and run.

    Example:
        >>> import jax, pytreemod as ptm
        >>> k = ptm.policy.path_key(jax.random.key(0), ".layers[0].weight")
        >>> bool((jax.random.key_data(k) == jax.random.key_data(
        ...     ptm.policy.path_key(jax.random.key(0), ".layers[0].weight"))).all())
        True
    """
    return jax.random.fold_in(key, np.uint32(zlib.crc32(path.encode("utf-8"))))


@dataclasses.dataclass(frozen=True)
class _Job:
    index: int  # among the leaves of the tree
    path: str
    init: Initialiser
    rule: str
    shape: tuple[int, ...]
    dtype: Any
    sharding: Sharding | None


def _check_initialiser(value: Any, index: int) -> Any:
    if not callable(value):
        raise TypeError(
            f"rule {index} of `rules`: an initialiser must be a function "
            f"`(key, shape, dtype) -> array`; got {value!r} (of type "
            f"`{type(value).__name__}`)."
        )
    return value


def _sharding_of(shardings: Any, tree: Any) -> Callable[[str], Sharding | None]:
    """A look-up from key path to sharding, from a single `Sharding`, a tree
    of them (such as `pytreemod.sharding.named_shardings` gives), or `None`."""
    if shardings is None:
        return lambda path: None
    if isinstance(shardings, Sharding):
        return lambda path: shardings
    pairs = jtu.tree_leaves_with_path(
        shardings, is_leaf=lambda x: x is None or isinstance(x, Sharding)
    )
    by_path: dict[str, Sharding | None] = {}
    for path, value in pairs:
        if value is not None and not isinstance(value, Sharding):
            raise TypeError(
                "`shardings` must be a `jax.sharding.Sharding`, or a tree of "
                "them of the model's structure (e.g. from "
                "`pytreemod.sharding.named_shardings`); at "
                f"{jtu.keystr(path)} it holds {value!r}."
            )
        by_path[jtu.keystr(path)] = value
    return lambda path: by_path.get(path)


def _plan(
    tree: Any,
    rules: Any,
    shardings: Any,
    default: Initialiser | None,
    missing_ok: bool,
) -> list[_Job]:
    parsed = parse_rules(
        rules,
        what="`rules`",
        value="initialiser",
        example="jax.nn.initializers.zeros",
        check=_check_initialiser,
    )
    if default is not None:
        _check_initialiser(default, len(parsed))
    matched = first_matches(tree, parsed, missing_ok=missing_ok)
    sharding_of = _sharding_of(shardings, tree)
    jobs, left = [], []
    for index, ((path, leaf), rule) in enumerate(
        zip(jtu.tree_leaves_with_path(tree), matched, strict=True)
    ):
        if not is_array_leaf(leaf):
            continue
        path_str = jtu.keystr(path)
        if rule is not None:
            init, name = rule.value, rule.describe()
        elif default is not None:
            init, name = default, "`default`"
        elif isinstance(leaf, jax.ShapeDtypeStruct):
            left.append(path_str)
            continue
        else:
            continue
        jobs.append(
            _Job(
                index,
                path_str,
                init,
                name,
                tuple(leaf.shape),
                jnp.dtype(leaf.dtype),
                sharding_of(path_str),
            )
        )
    if left:
        raise ValueError(unmatched_message(_ABSTRACT_LEFT, left, tree))
    return jobs


def _check_abstractly(jobs: list[_Job], key: jax.Array) -> None:
    """Run every initialiser abstractly, so that a wrong signature or result
    names the array, before anything is computed."""
    for job in jobs:

        def one(key: jax.Array, job: _Job = job) -> Any:
            return job.init(path_key(key, job.path), job.shape, job.dtype)

        try:
            out = jax.eval_shape(one, key)
        except Exception as error:  # noqa: BLE001 - re-raised with the path
            kind = type(error) if isinstance(error, ValueError) else TypeError
            raise kind(
                _BAD_INITIALISER.format(
                    rule=job.rule,
                    path=job.path,
                    shape=job.shape,
                    dtype=job.dtype,
                    error=f"{type(error).__name__}: {error}",
                )
            ) from error
        if not isinstance(out, jax.ShapeDtypeStruct):
            raise TypeError(
                _WRONG_RESULT.format(
                    rule=job.rule,
                    what="kind of value",
                    path=job.path,
                    expected="one array",
                    got=f"{type(out).__name__}",
                )
            )
        for what, expected, got in (
            ("shape", job.shape, tuple(out.shape)),
            ("dtype", job.dtype, jnp.dtype(out.dtype)),
        ):
            if expected != got:
                raise ValueError(
                    _WRONG_RESULT.format(
                        rule=job.rule,
                        what=what,
                        path=job.path,
                        expected=expected,
                        got=got,
                    )
                )


def compiled_initialiser(jobs: list[_Job]) -> Callable[[jax.Array], list[jax.Array]]:
    """One `jax.jit` that makes every job's array from the root key, each
    created directly with its sharding (`out_shardings`)."""

    def make(key: jax.Array) -> list[jax.Array]:
        return [job.init(path_key(key, job.path), job.shape, job.dtype) for job in jobs]

    if all(job.sharding is None for job in jobs):
        return jax.jit(make)
    return jax.jit(make, out_shardings=[job.sharding for job in jobs])


def initialise(
    tree: Any,
    rules: Any,
    *,
    key: jax.Array,
    shardings: Any = None,
    default: Initialiser | None = None,
    missing_ok: bool = False,
) -> Any:
    r"""Re-initialise the selected arrays of `tree` (a model, or an abstract
    one from `pytreemod.filter_eval_shape`).

    Each rule `(selection, init)` gives the arrays it selects (the first
    matching rule wins) new values `init(key, shape, dtype)`, with the array's
    own shape and dtype and a key derived from `key` and the array's key path
    (`path_key`): the values do not change when other layers are added,
    removed or reordered. Every other leaf is the same object as before;
    abstract arrays (`jax.ShapeDtypeStruct`) must all be selected (or given a
    `default`), so the result holds only real arrays.

    Args:
        tree: the model to (re-)initialise.
        rules: `(selection, initialiser)` pairs, in order, or a mapping; a
            selection is a `pytreemod.select` selector, a key-path pattern or
            a type; an initialiser is any `(key, shape, dtype) -> array`, such
            as `jax.nn.initializers.orthogonal()`.
        key: the root PRNG key.
        shardings: where to create the arrays: a `jax.sharding.Sharding` for
            all, or a tree of them of `tree`'s structure (`None` at leaves to
            leave to JAX), such as `pytreemod.sharding.named_shardings` gives.
            Each array is created directly sharded, by one compiled function
            whose outputs have these shardings.
        default: the initialiser of arrays that no rule selects; by default
            they are left as they are (concrete ones) or are an error
            (abstract ones).
        missing_ok: allow rules that select nothing.

    Returns:
        `tree` with the selected arrays replaced; the tree structure is
        unchanged.

    Raises:
        TypeError: if a rule is not a `(selection, callable)` pair, or an
            initialiser fails when called as `init(key, shape, dtype)` (naming
            the array's key path; a `ValueError` it raises stays one).
        ValueError: if an initialiser returns the wrong shape or dtype (naming
            the path), a rule selects nothing (unless `missing_ok`), or an
            abstract array is selected by no rule.

    Example:
        >>> import jax, pytreemod as ptm
        >>> from pytreemod import select
        >>> init = jax.nn.initializers
        >>> abstract = ptm.filter_eval_shape(
        ...     ptm.nn.MLP, 4, 2, 8, 2, key=jax.random.key(0)
        ... )
        >>> mlp = ptm.policy.initialise(
        ...     abstract,
        ...     [
        ...         (select.field("bias"), init.zeros),
        ...         (select.path(r"\.layers\[2\]\..*"), init.normal(1e-3)),
        ...         (select.field("weight"), init.orthogonal()),
        ...     ],
        ...     key=jax.random.key(1),
        ... )
        >>> float(abs(mlp.layers[0].bias).max()), mlp.layers[2].weight.shape
        (0.0, (2, 8))
    """
    jobs = _plan(tree, rules, shardings, default, missing_ok)
    if not jobs:
        return tree
    _check_abstractly(jobs, key)
    arrays = compiled_initialiser(jobs)(key)
    leaves, treedef = jtu.tree_flatten(tree)
    for job, array in zip(jobs, arrays, strict=True):
        leaves[job.index] = array
    return jtu.tree_unflatten(treedef, leaves)
