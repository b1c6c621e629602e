r"""Sharding rules: logical axis names for arrays chosen by selection.

A rule is a pair `(selection, axes)`, the ordered first-match rules of
`pytreemod.select` (`select/_rules.py`): the selection is a key-path pattern
(the one path syntax: a regular expression matching the whole key path, such
as `r".*\.weight"` or `r"\.embed\.weight"`), a type, or any selector.
`axes` is a tuple with one name or `None` per dimension, or `None` to leave
the array unnamed (replicated). The first rule that selects an array wins.
"""

import re
from collections.abc import Iterable
from typing import Any

from .._module._field import check_axes
from ..select._rules import Rule
from ..select._rules import parse_rules as parse_selection_rules
from ..select._selector import Selector

__all__ = ["Rule", "RulesLike", "parse_rules"]

RulesLike = Iterable[
    tuple[str | re.Pattern[str] | type | Selector, tuple[str | None, ...] | None]
]


def _check(axes: Any, index: int) -> tuple[str | None, ...] | None:
    if axes is None:
        return None
    if callable(axes):
        raise TypeError(
            f"rule {index}: `axes` must be a tuple of logical names (`str` or "
            f"`None`) or `None`; got the function {axes!r}."
        )
    return check_axes(axes, f"the axes of rule {index}")


def parse_rules(rules: Any) -> tuple[Rule[Any], ...]:
    """`rules` checked and parsed; an error says which rule is wrong."""
    return parse_selection_rules(
        rules, what="`rules`", value="axes", example='("mlp", None)', check=_check
    )
