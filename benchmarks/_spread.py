"""How much a case's rounds disagree: quartiles, and the noisy-round warning.

The machine this suite runs on is shared and noisy, so a median alone can
mislead: every figure the report shows comes with the spread of its rounds,
and `--compare` only calls a change real when it lies outside that spread.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

#: Rounds of one contender that differ by more than this factor (slowest round
#: over fastest) make the row noisy: the report marks it and warns.
NOISY_FACTOR = 2.0


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles of `values` (both the value when there is
    one): the interquartile range, the spread the report shows.

    >>> quartiles([1.0, 2.0, 3.0, 4.0, 5.0])
    (2.0, 4.0)
    """
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def disagreement(values: Sequence[float]) -> float:
    """Slowest round over fastest: 1.0 when the rounds agree exactly.

    >>> disagreement([10.0, 12.0, 25.0])
    2.5
    """
    return max(values) / min(values)


def paired_ratios(mine: Sequence[float], floor: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two contenders' per-call times.

    Rounds are interleaved, so round `i` of both ran at nearly the same time,
    under the same load: their ratio divides most of the load out, and the
    spread of these ratios is the spread of the ratio to the floor.

    >>> paired_ratios([2.0, 3.0], [1.0, 2.0])
    [2.0, 1.5]
    """
    return [a / b for a, b in zip(mine, floor, strict=True)]
