"""Checks that a case's contenders agree, then times them in interleaved rounds.

Timing scheme, for one case at one size:

1. Each contender's answer is compared with the floor's (compiling it), and
   it is called once more to warm up: a mismatch raises `ResultMismatch`.
2. Each contender gets a batch size: how many calls make a round last about
   `round_s` (5-20 ms by default).
3. Rounds are interleaved: round 1 times a batch of A, then of B, then of C;
   round 2 does the same; and so on. Slow drifts of the machine (another
   process, frequency scaling) then hit every contender alike.
4. A batch is `batch` calls back to back, timed with `time.perf_counter`, and
   `jax.block_until_ready` on the last result only: what is measured is the
   dispatch overhead a user feels when calling in a loop, not the latency of
   one call waited for. Garbage collection is off while a batch runs.
5. The per-call time is the median over rounds of (batch time / batch size);
   the spread of the rounds is kept with it (see `_spread.py`).
6. After the timed rounds the answers are compared with the floor's again:
   a cache that serves a stale or wrong result after thousands of calls
   fails here, not only one that is wrong on the first call.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ._case import FLOOR, PEERS, Case, Contender, Unavailable
from ._progress import Progress
from ._spread import NOISY_FACTOR, disagreement, quartiles

#: Tolerances for "computes the same result" (float32 work, compiled differently).
RTOL = 1e-4
ATOL = 1e-5
#: No batch grows beyond this many calls, however cheap a call is.
MAX_BATCH = 1_000_000

RESULT_MISMATCH = """\
Case `{case}` ({size}): contender `{name}` does not compute what the floor computes
{when}: {problem}.
Timing contenders that do different work would compare nothing, so the run
stops here. Either the library under test is wrong, or the case builds the
contenders differently (different weights, inputs or layer options): make
every contender of the case do the same work."""


class ResultMismatch(Exception):
    """Raised when a contender's answer differs from the floor's."""


@dataclasses.dataclass(frozen=True)
class Timing:
    """How long one contender took.

    Attributes:
        per_call_us: Median over rounds of the per-call time, in microseconds.
        rounds_us: The per-call time of each round, in microseconds.
        calls_per_round: The batch size: calls timed together in each round.
    """

    per_call_us: float
    rounds_us: tuple[float, ...]
    calls_per_round: int

    @property
    def iqr_us(self) -> tuple[float, float]:
        """First and third quartiles of the rounds' per-call times."""
        return quartiles(self.rounds_us)

    @property
    def disagreement(self) -> float:
        """Slowest round over fastest (see `_spread.NOISY_FACTOR`)."""
        return disagreement(self.rounds_us)


@dataclasses.dataclass(frozen=True)
class Row:
    """One case at one size: its timings, or why it could not run.

    Attributes:
        case: The case's name.
        size_label: What `size` counts, e.g. `"depth"`.
        size: The size.
        leaves: Array leaves the work handles; `None` when unavailable.
        timings: Each contender that ran, by name.
        absent: Each peer that did not run, with why.
        unavailable: Why the case could not run at all; `None` when it ran.
    """

    case: str
    size_label: str
    size: int
    leaves: int | None
    timings: Mapping[str, Timing]
    absent: Mapping[str, str]
    unavailable: str | None = None

    @property
    def disagreement(self) -> float:
        """The largest slowest-over-fastest round factor among the contenders."""
        return max((t.disagreement for t in self.timings.values()), default=1.0)

    @property
    def noisy(self) -> bool:
        """Whether some contender's rounds disagree by more than `NOISY_FACTOR`."""
        return self.disagreement > NOISY_FACTOR


def difference(expected: Sequence[Any], got: Sequence[Any]) -> str | None:
    """Says how `got` differs from `expected`, or `None` when they agree.

    Array-like items must have the same shape and be close (`RTOL`, `ATOL`);
    anything else (shapes, dtypes, names) must be equal.
    """
    if len(got) != len(expected):
        return f"it returns {len(got)} values where the floor returns {len(expected)}"
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        if hasattr(want, "shape") or hasattr(have, "shape"):
            want_a, have_a = np.asarray(want), np.asarray(have)
            if want_a.shape != have_a.shape:
                return f"value {i} has shape {have_a.shape}, the floor's {want_a.shape}"
            if not np.allclose(have_a, want_a, rtol=RTOL, atol=ATOL):
                gap = float(np.max(np.abs(have_a - want_a)))
                return f"value {i} differs from the floor's by up to {gap:.3g}"
        elif want != have:
            return f"value {i} is {have!r}, the floor's is {want!r}"
    return None


#: When `check_agreement` runs, as its message says it.
BEFORE, AFTER = "before the timed rounds", "after the timed rounds"


def check_agreement(
    case: str, size: str, contenders: Sequence[Contender], when: str = BEFORE
) -> None:
    """Raises `ResultMismatch` unless every contender's answer matches the floor's.

    Args:
        case: The case's name, for the message.
        size: The size, for the message (e.g. `"depth 8"`).
        contenders: The contenders; one of them must be the floor.
        when: `BEFORE` or `AFTER` the timed rounds, for the message.
    """
    results = {c.name: list(c.result()) for c in contenders}
    expected = results[FLOOR]
    for name, got in results.items():
        problem = difference(expected, got)
        if problem is not None:
            raise ResultMismatch(
                RESULT_MISMATCH.format(
                    case=case, size=size, name=name, when=when, problem=problem
                )
            )


def time_batch(
    call: Callable[[], Any],
    calls: int,
    prepare: Callable[[int], None] | None = None,
) -> float:
    """Seconds taken by `calls` calls back to back, blocking on the last result.

    `prepare(calls)`, when given, runs first and is not timed.
    """
    if prepare is not None:
        prepare(calls)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        out = None
        for _ in range(calls):
            out = call()
        jax.block_until_ready(out)
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def batch_size(
    call: Callable[[], Any],
    round_s: float,
    prepare: Callable[[int], None] | None = None,
) -> int:
    """How many calls make a batch last about `round_s` seconds."""
    calls = 1
    while True:
        elapsed = time_batch(call, calls, prepare)
        if elapsed >= round_s / 2 or calls >= MAX_BATCH:
            break
        grow = math.ceil(round_s / max(elapsed, 1e-7))
        calls = min(calls * min(max(grow, 2), 100), MAX_BATCH)
    return max(1, min(MAX_BATCH, round(calls * round_s / max(elapsed, 1e-9))))


def time_interleaved(
    contenders: Sequence[Contender],
    rounds: int,
    round_s: float,
    on_round: Callable[[], None] = lambda: None,
) -> dict[str, Timing]:
    """Times each contender over `rounds` interleaved rounds (see module docstring).

    Args:
        contenders: The contenders, already checked and warmed up.
        rounds: How many rounds.
        round_s: About how long each contender's batch should last, in seconds.
        on_round: Called after each round (for the progress bar).

    Returns:
        Each contender's `Timing`, by name.
    """
    batches = {c.name: batch_size(c.call, round_s, c.prepare) for c in contenders}
    per_call: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for c in contenders:
            seconds = time_batch(c.call, batches[c.name], c.prepare)
            per_call[c.name].append(seconds / batches[c.name] * 1e6)
        on_round()
    return {
        name: Timing(
            per_call_us=statistics.median(samples),
            rounds_us=tuple(samples),
            calls_per_round=batches[name],
        )
        for name, samples in per_call.items()
    }


def steps_per_case(rounds: int) -> int:
    """Progress steps of one case at one size: the check, the rounds, the
    check after them."""
    return rounds + 2


def run_case(
    case: Case,
    size: int,
    rounds: int,
    round_s: float,
    progress: Progress,
    peers: Collection[str] = PEERS,
) -> Row:
    """Builds, checks and times one case at one size.

    Args:
        case: The case.
        size: The size to build it at.
        peers: The peers to try; the others are reported absent.
        rounds: How many interleaved rounds to time.
        round_s: About how long each contender's batch should last, in seconds.
        progress: Advanced once for the build and check, once per round, and
            once for the check after the rounds.

    Returns:
        The case's `Row`; an unavailable one when a pytreemod feature is missing.

    Raises:
        ResultMismatch: A contender computes something else than the floor.
    """
    size_text = f"{case.size_label} {size}"
    label = f"{case.name} {size_text}"
    progress.note(f"{label}: building")
    try:
        setup = case.build(size, peers)
    except Unavailable as e:
        progress.advance(f"{label}: unavailable", steps_per_case(rounds))
        return Row(case.name, case.size_label, size, None, {}, {}, str(e))
    progress.note(f"{label}: compiling and checking answers")
    check_agreement(case.name, size_text, setup.contenders)
    for contender in setup.contenders:
        jax.block_until_ready(contender.call())
    progress.advance(f"{label}: checked, timing")
    done = [0]

    def on_round() -> None:
        done[0] += 1
        progress.advance(f"{label}: round {done[0]}/{rounds}")

    timings = time_interleaved(setup.contenders, rounds, round_s, on_round)
    check_agreement(case.name, size_text, setup.contenders, AFTER)
    if setup.after is not None:
        setup.after()
    progress.advance(f"{label}: checked again")
    return Row(
        case.name, case.size_label, size, setup.leaves, timings, dict(setup.absent)
    )
