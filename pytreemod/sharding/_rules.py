r"""Rules: logical axis names for arrays chosen by their key path.

A rule is a pair `(pattern, axes)`. `pattern` is a regular expression that
must match the whole of the array's key path as `jax.tree_util.keystr` writes
it (`.blocks.layers.mlp.weight`, `[0].mu['w']`), so `r".*\.weight"` matches
every field called `weight` and `r"\.embed\.weight"` only the one at the top.
`axes` is a tuple with one name or `None` per dimension, or `None` to leave
the array unnamed (replicated). The first rule that matches wins.
"""

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .._module._field import check_axes

RulesLike = Iterable[tuple[str | re.Pattern[str], tuple[str | None, ...] | None]]

_BAD_RULES = """\
`rules` must be a list of `(pattern, axes)` pairs, e.g.
    rules = [(r".*\\.mlp\\.up\\.weight", ("mlp", "embed")), (r".*\\.bias", None)]
where `pattern` is a regular expression matched against the whole key path
(`jax.tree_util.keystr`) and `axes` a tuple of names/`None` or `None`.
Got {got}."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """One parsed rule, and how to name it in an error message."""

    pattern: re.Pattern[str]
    axes: tuple[str | None, ...] | None
    index: int

    def describe(self) -> str:
        return f"rule {self.index} ({self.pattern.pattern!r})"


def parse_rules(rules: Any) -> tuple[Rule, ...]:
    """`rules` checked and compiled; an error says which rule is wrong."""
    if rules is None:
        return ()
    if isinstance(rules, Mapping):
        rules = list(rules.items())
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Iterable):
        raise TypeError(_BAD_RULES.format(got=f"{rules!r}"))
    parsed = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, (tuple, list)) or len(rule) != 2:
            raise TypeError(_BAD_RULES.format(got=f"rule {index} = {rule!r}"))
        pattern, axes = rule
        if isinstance(pattern, str):
            try:
                pattern = re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"rule {index}: the pattern {pattern!r} is not a valid regular "
                    f"expression ({error}). Patterns are Python regular "
                    "expressions matched against the whole key path, e.g. "
                    r'r".*\.weight"; escape a literal `.` or `[` with `\`.'
                ) from None
        elif not isinstance(pattern, re.Pattern):
            raise TypeError(_BAD_RULES.format(got=f"rule {index} = {rule!r}"))
        if axes is not None:
            if callable(axes):
                raise TypeError(_BAD_RULES.format(got=f"rule {index} = {rule!r}"))
            axes = check_axes(axes, f"the axes of rule {index}")
        parsed.append(Rule(pattern, axes, index))
    return tuple(parsed)


def match(rules: tuple[Rule, ...], path: str) -> Rule | None:
    """The first rule whose pattern matches all of `path`, if any."""
    for rule in rules:
        if rule.pattern.fullmatch(path):
            return rule
    return None
