"""What a benchmark case is: contenders that do the same work, for several sizes.

A `Case` names one thing to measure (say, `filter_jit` dispatch of a forward
pass) and knows how to `build` it for a given size. Building returns a `Setup`:
one `Contender` per library that can do the work, the peers that could not be
built (with the reason), and the number of array leaves involved (the x axis
of the plot). The runner checks that all contenders agree, then times them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

#: The contender every other one is divided by: plain JAX doing the same work.
FLOOR = "floor"
#: The library under test.
PYTREEMOD = "pytreemod"
#: Peers compared with when they are importable, in the order they are reported.
PEERS = ("equinox", "nnx")
#: Every contender name, in the order of the report's columns.
CONTENDERS = (PYTREEMOD, FLOOR, *PEERS)


class Unavailable(Exception):
    """A case cannot be built yet, because a pytreemod feature it needs is missing.

    The runner reports the case as "unavailable: <reason>" and goes on.
    """


@dataclasses.dataclass(frozen=True)
class Contender:
    """One library's way of doing a case's work.

    Attributes:
        name: One of `CONTENDERS`.
        call: Does the work once and returns something to block on. This is what
            is timed, many times over. A contender whose work carries state
            from call to call (a training loop) keeps it itself.
        result: Returns the contender's answer as a flat list (arrays, or plain
            values such as shapes), in a layout shared by every contender of the
            case. It is called twice, before the timed calls and after them,
            and must give the same answer both times: a contender whose calls
            change its state (a training loop, NNX's in-place updates) computes
            its answer from a fresh start, through the same compiled function,
            so that the second check sees what the caches serve after
            thousands of calls.
        prepare: Called, untimed, with the number of calls about to be timed
            back to back, so that a contender can build their arguments
            beforehand (the `tracing` case makes a new model for each call);
            `None` when there is nothing to prepare.
    """

    name: str
    call: Callable[[], Any]
    result: Callable[[], Sequence[Any]]
    prepare: Callable[[int], None] | None = None


@dataclasses.dataclass(frozen=True)
class Setup:
    """A case built for one size, ready to check and time.

    Attributes:
        leaves: How many array leaves the work handles (the plot's x axis).
        contenders: The contenders, `pytreemod` and the floor first.
        absent: Peers that are not in `contenders`, mapped to why not.
        after: Run once after the timed rounds, to check something about them
            (the `tracing` case asserts that nothing retraced); `None` for none.
    """

    leaves: int
    contenders: Sequence[Contender]
    absent: Mapping[str, str] = dataclasses.field(default_factory=dict)
    after: Callable[[], None] | None = None


@dataclasses.dataclass(frozen=True)
class Case:
    """One thing to measure, for several sizes.

    Attributes:
        name: What `--only` selects it by.
        summary: One line saying what is timed.
        size_label: What the size counts, e.g. `"depth"`.
        sizes: The sizes of a full run.
        quick_sizes: The sizes of a `--quick` run.
        build: Builds the case for one size, `build(size, peers)`, trying only
            the peers named in `peers`; raises `Unavailable` when a pytreemod
            feature it needs is not there yet.
    """

    name: str
    summary: str
    size_label: str
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]
    build: Callable[[int, Collection[str]], Setup]
