r"""Ordered rules: `(selection, value)` pairs where the first match wins.

The one shape every selection-driven policy takes: optimiser labels
(`labels`), sharding rules (`pytreemod.sharding`), initialisers and dtype
policies (`pytreemod.policy`). A rule's selection is anything `as_selector`
takes: a selector, a key-path pattern, or a type.
"""

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import jax.tree_util as jtu

from ._selector import Selector, as_selector, decide_all, is_array_leaf

__all__ = [
    "Labels",
    "Rule",
    "first_matches",
    "labels",
    "parse_rules",
    "unmatched_message",
]

_V = TypeVar("_V")

_BAD_RULES = """\
{what} must be a list of `(selection, {value})` pairs, e.g.
    [(select.path(r"\\.head"), {example}), (select.instance(nn.LayerNorm), {example})]
where a selection is a `pytreemod.select` selector, a key-path pattern or a
type; the first pair whose selection matches a leaf decides for it.
Got {got}."""

_UNLABELLED = """\
{count} array{s} of this `{tree}` match{es} no rule and there is no `default`:
{paths}
Add a rule that matches {them}, or pass `default=` (e.g. `default="rest"`)."""


@dataclasses.dataclass(frozen=True)
class Rule(Generic[_V]):
    """One parsed rule; `index` is its place in the list, for messages."""

    selector: Selector
    value: _V
    index: int

    def describe(self) -> str:
        return f"rule {self.index} ({self.selector!r})"


def parse_rules(
    rules: Any,
    *,
    what: str = "`rules`",
    value: str = "value",
    example: str = "...",
    check: Callable[[Any, int], Any] = lambda value, index: value,
) -> tuple[Rule[Any], ...]:
    """`rules` (pairs, or a mapping from selection to value) checked and
    parsed; `check(value, index)` checks and converts each value. An error
    says which rule is wrong."""
    if rules is None:
        return ()
    if isinstance(rules, Mapping):
        rules = list(rules.items())
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
        raise TypeError(
            _BAD_RULES.format(what=what, value=value, example=example, got=f"{rules!r}")
        )
    parsed = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, (tuple, list)) or len(rule) != 2:
            raise TypeError(
                _BAD_RULES.format(
                    what=what,
                    value=value,
                    example=example,
                    got=f"rule {index} = {rule!r}",
                )
            )
        selection, value = rule
        try:
            selector = as_selector(selection)
        except (TypeError, ValueError) as error:
            raise type(error)(f"rule {index}: {error}") from None
        parsed.append(Rule(selector, check(value, index), index))
    return tuple(parsed)


def first_matches(
    tree: Any, rules: tuple[Rule[_V], ...], *, missing_ok: bool = False
) -> list[Rule[_V] | None]:
    """For each leaf of `tree` (in `jax.tree_util.tree_leaves` order), the
    first rule that selects it, or `None`. One walk of the tree for all the
    rules; a rule whose selection matches nothing is an error unless
    `missing_ok`."""
    leaves = jtu.tree_leaves(tree)
    if not rules:
        return [None] * len(leaves)
    decided = decide_all(tuple(r.selector for r in rules), tree, missing_ok)
    out: list[Rule[_V] | None] = []
    for i, (node, _) in enumerate(decided[0]):
        if node.is_leaf:
            out.append(
                next((r for r, d in zip(rules, decided, strict=True) if d[i][1]), None)
            )
    return out


def unmatched_message(template: str, paths: list[str], tree: Any) -> str:
    """`template` filled in for the arrays at `paths` of `tree` that no rule
    covers: `{count}`, `{paths}` (20 at most), `{tree}` (its type), and the
    words that agree with the count: `{s}`, `{es}`, `{it}`, `{them}`."""
    n = len(paths)
    return template.format(
        count=n,
        s="" if n == 1 else "s",
        es="es" if n == 1 else "",
        it="it" if n == 1 else "they",
        them="it" if n == 1 else "them",
        tree=type(tree).__name__,
        paths="\n".join(f"    {p}" for p in paths[:20])
        + ("\n    ..." if n > 20 else ""),
    )


@dataclasses.dataclass(frozen=True)
class Labels:
    r"""A label for every array of a tree, from ordered rules; made by
    `labels`. Call it on a tree to get the label tree."""

    rules: tuple[Rule[Any], ...]
    default: Any
    missing_ok: bool

    def __call__(self, tree: Any) -> Any:
        matched = first_matches(tree, self.rules, missing_ok=self.missing_ok)
        out: list[Any] = []
        unlabelled: list[str] = []
        entries = jtu.tree_leaves_with_path(tree)
        for (path, leaf), rule in zip(entries, matched, strict=True):
            if rule is not None:
                out.append(rule.value)
            elif self.default is not None or not is_array_leaf(leaf):
                out.append(self.default)
            else:
                out.append(None)
                unlabelled.append(jtu.keystr(path))
        if unlabelled:
            raise ValueError(unmatched_message(_UNLABELLED, unlabelled, tree))
        return jtu.tree_unflatten(jtu.tree_structure(tree), out)


def labels(rules: Any, *, default: Any = None, missing_ok: bool = False) -> Labels:
    r"""Label every array of a tree by ordered rules: the `param_labels`
    that `optax.multi_transform` takes.

    Returns a function from a tree to its label tree: each array gets the
    label of the first rule whose selection matches it, or `default`. Leaves
    that are not arrays get `default` too, or `None` (which matches the
    `None`s that `pytreemod.filter(model, is_array)` puts in their place). It
    is a function, not a tree, because optax calls a callable `param_labels`
    and a label tree shaped like a Module with a `__call__` would itself be
    callable.

    Args:
        rules: `(selection, label)` pairs, in order, or a mapping; a
            selection is a `pytreemod.select` selector, a key-path pattern or
            a type.
        default: the label of every array no rule matches; with `None`, every
            array must match a rule.
        missing_ok: allow rules that match nothing.

    Raises:
        TypeError: (here) if `rules` is not a list of pairs of a selection
            and a label.
        ValueError: (here) if a pattern is not a valid regular expression;
            (when called) if a rule matches nothing (unless `missing_ok`),
            or some arrays match no rule and there is no `default` (naming
            them).

    Example:
        >>> import jax, optax, pytreemod as ptm
        >>> from pytreemod import select
        >>> mlp = ptm.nn.MLP(2, 1, 8, 1, key=jax.random.key(0))
        >>> params = ptm.filter(mlp, ptm.is_array)
        >>> groups = select.labels([(r"\.layers\[1\]", "head")], default="body")
        >>> groups(params).layers[1].weight, groups(params).layers[0].weight
        ('head', 'body')
        >>> tx = optax.multi_transform(
        ...     {"head": optax.adam(1e-3), "body": optax.adam(1e-4)}, groups
        ... )
    """
    return Labels(parse_rules(rules, value="label"), default, missing_ok)
