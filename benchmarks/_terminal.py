"""What `python -m benchmarks` prints: an aligned table that fits 120 columns.

The full Markdown table (every ratio) goes to `--markdown FILE`; the terminal
gets what a reader needs at a glance: each contender's median per-call time,
pytreemod's ratio to the floor with the interquartile range of its rounds,
pytreemod's ratio to each peer that ran, and how much the rounds disagree.
Peers that ran nowhere have no columns. Notes under the table say why a peer
is absent and warn when rounds disagree by more than `NOISY_FACTOR`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from ._case import CONTENDERS, PEERS, PYTREEMOD
from ._report import (
    absent_notes,
    present_contenders,
    ratio_iqr,
    ratio_to_floor,
    ratio_to_peers,
)
from ._runner import Row
from ._spread import NOISY_FACTOR

#: The widest line the terminal output may have.
WIDTH = 120
#: Between columns.
GAP = "  "
#: Marks a noisy row (rounds disagree by more than `NOISY_FACTOR`).
NOISY_MARK = "!"

NOISY_WARNING = (
    "{mark} In {count} row(s) some contender's rounds disagree by more than "
    "{factor:g}x (slowest over fastest: the max/min column): the machine was "
    "busy while they ran, so their medians are less sure. Rerun on a quieter "
    "machine or with more --rounds; ratios to the floor suffer less than times, "
    "as rounds are interleaved."
)


def us(value: float) -> str:
    """A per-call time in µs, short: one decimal below 1,000, none above."""
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def ratio(value: float) -> str:
    """A ratio, e.g. `1.18×`; three decimals below 0.1, so that it never
    reads `0.00×`."""
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.3f}×"


def align(
    lines: Sequence[Sequence[str]], right: Sequence[bool]
) -> tuple[list[str], list[int]]:
    """Pads cells into columns, `GAP` apart, with a rule under the first line.

    Args:
        lines: Cells, line by line, the header first. A line with fewer cells
            than columns lets its last cell run on (an unavailable row's
            reason) and does not widen the columns.
        right: Per column, whether it is right-aligned (figures) or left.

    Returns:
        The lines, and the width of each column.
    """
    widths = [0] * len(right)
    for cells in lines:
        if len(cells) == len(right):
            for i, cell in enumerate(cells):
                widths[i] = max(widths[i], len(cell))
    out = []
    for cells in lines:
        if len(cells) < len(right):
            head = [c.ljust(widths[i]) for i, c in enumerate(cells[:-1])]
            out.append(GAP.join([*head, cells[-1]]).rstrip())
        else:
            padded = [
                c.rjust(w) if r else c.ljust(w)
                for c, w, r in zip(cells, widths, right, strict=True)
            ]
            out.append(GAP.join(padded).rstrip())
        if len(out) == 1:
            out.append(GAP.join("-" * w for w in widths))
    return out, widths


def group_line(groups: Sequence[str], widths: Sequence[int]) -> str:
    """A line naming groups of columns: each non-empty entry of `groups` starts
    above its column (or just after the previous group's name, if that is
    longer than its columns)."""
    line, start = "", 0
    for text, width in zip(groups, widths, strict=True):
        if text:
            line = line.ljust(max(start, len(line) + 1 if line else 0)) + text
        start += width + len(GAP)
    return line


def cut(line: str) -> str:
    """`line`, cut to `WIDTH` with an ellipsis if longer."""
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"


def wrap(notes: Sequence[str]) -> list[str]:
    """Notes under a table, each wrapped to `WIDTH`."""
    out = []
    for note in notes:
        out += textwrap.wrap(note, WIDTH, subsequent_indent="  ")
    return out


def terminal_table(rows: Sequence[Row], rounds: int) -> str:
    """The report for a terminal: aligned columns, at most `WIDTH` wide.

    Args:
        rows: The run's rows.
        rounds: How many rounds each median is of (for the caption).
    """
    present = present_contenders(rows)
    times = [n for n in CONTENDERS if n in present]
    peers = [n for n in PEERS if n in present]
    labels = {row.size_label for row in rows}
    size_header = labels.pop() if len(labels) == 1 else "size"

    groups = ["", "", ""] + [""] * len(times) + ["pytreemod ÷ floor", ""]
    groups += [""] * len(peers) + ["rounds"]
    groups[3] = "µs per call"
    if peers:
        groups[5 + len(times)] = "pytreemod ÷"
    header = ["case", size_header, "leaves", *times, "median", "IQR", *peers]
    header.append("max/min")
    right = [False] + [True] * (len(header) - 1)

    lines: list[list[str]] = [header]
    for row in rows:
        size = (
            f"{row.size_label} {row.size}" if size_header == "size" else str(row.size)
        )
        if row.unavailable is not None:
            lines.append([row.case, size, f"unavailable: {row.unavailable}"])
            continue
        to_floor, to_peers = ratio_to_floor(row), ratio_to_peers(row)
        lo, hi = ratio_iqr(row, PYTREEMOD)
        cells = [row.case, size, str(row.leaves)]
        cells += [
            us(row.timings[n].per_call_us) if n in row.timings else "–" for n in times
        ]
        cells += [ratio(to_floor[PYTREEMOD]), f"{lo:.2f}–{hi:.2f}"]
        cells += [ratio(to_peers[n]) if n in to_peers else "–" for n in peers]
        mark = f" {NOISY_MARK}" if row.noisy else "  "
        cells.append(f"{row.disagreement:.1f}×{mark}")
        lines.append(cells)

    table, widths = align(lines, right)
    caption = (
        f"µs per call: median of {rounds} interleaved rounds; ratios: median and "
        "IQR of per-round ratios (<1×: pytreemod faster)."
    )
    out = wrap([caption]) + [""]
    out += [cut(group_line(groups, widths)), *(cut(line) for line in table)]

    notes = []
    noisy = [row for row in rows if row.unavailable is None and row.noisy]
    if noisy:
        notes.append(
            NOISY_WARNING.format(mark=NOISY_MARK, count=len(noisy), factor=NOISY_FACTOR)
        )
    notes += [f"Absent: {note}" for note in absent_notes(rows)]
    notes += [
        f"Unavailable: {row.case} {row.size_label} {row.size}: {row.unavailable}"
        for row in rows
        if row.unavailable is not None
    ]
    if notes:
        out += ["", *wrap(notes)]
    return "\n".join(out)
