"""`--compare OLD.json`: pytreemod now against an earlier run, flagging only
changes that the noise of the rounds cannot explain.

A figure counts as changed when it moved by more than `CHANGED_BY` and each
run's median lies outside the other run's interquartile range of rounds: a
busy machine widens the spread of its run, so a slowdown from load alone is
not flagged. Both the ratio to the floor (which divides most of the load out,
and is what to trust) and the per-call time are compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._case import FLOOR, PYTREEMOD
from ._spread import paired_ratios, quartiles
from ._terminal import align, cut, group_line, us, wrap

#: The least change that can be flagged (0.10: 10%), even with tight spreads.
CHANGED_BY = 0.10


def _spreads(entry: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    """The interquartile ranges of pytreemod's ratio to the floor and of its
    per-call time, from the rounds; a point at the median when an entry has no
    rounds."""
    rounds = entry.get("rounds_us") or {}
    if PYTREEMOD in rounds and FLOOR in rounds:
        ratio = quartiles(paired_ratios(rounds[PYTREEMOD], rounds[FLOOR]))
        return ratio, quartiles(rounds[PYTREEMOD])
    r, t = entry["ratio_to_floor"][PYTREEMOD], entry["per_call_us"][PYTREEMOD]
    return (r, r), (t, t)


def change(
    old: float,
    old_iqr: Sequence[float],
    new: float,
    new_iqr: Sequence[float],
    by: float = CHANGED_BY,
) -> str | None:
    """`"slower"`, `"faster"`, or `None` when the change is within the noise.

    A change counts when it exceeds the factor `1 + by` and each median lies
    outside the other run's spread.

    >>> change(1.0, (0.9, 1.1), 1.5, (1.4, 1.6))
    'slower'
    >>> change(1.0, (0.9, 1.6), 1.5, (1.4, 1.6)) is None  # within the old spread
    True
    """
    if new > old * (1 + by) and new > old_iqr[1] and old < new_iqr[0]:
        return "slower"
    if new * (1 + by) < old and new < old_iqr[0] and old > new_iqr[1]:
        return "faster"
    return None


def compare(
    old: Mapping[str, Any], new: Mapping[str, Any], by: float = CHANGED_BY
) -> list[dict[str, Any]]:
    """pytreemod's figures now against an earlier run, for each case and size
    that ran in both.

    Args:
        old: An earlier run's JSON data.
        new: This run's JSON data.
        by: The least change that can be flagged.

    Returns:
        One entry per case and size: old and new ratio to the floor and
        per-call time with their interquartile ranges, and the verdicts
        `ratio` / `time` (`"slower"`, `"faster"` or `None`), also as the flags
        `slower_ratio` / `slower_time`.
    """
    before = {(r["case"], r["size"]): r for r in old["results"] if r["status"] == "ok"}
    out = []
    for r in new["results"]:
        o = before.get((r["case"], r["size"]))
        if r["status"] != "ok" or o is None or PYTREEMOD not in o["per_call_us"]:
            continue
        (old_ratio_iqr, old_us_iqr), (new_ratio_iqr, new_us_iqr) = (
            _spreads(o),
            _spreads(r),
        )
        old_ratio = o["ratio_to_floor"][PYTREEMOD]
        new_ratio = r["ratio_to_floor"][PYTREEMOD]
        old_us, new_us = o["per_call_us"][PYTREEMOD], r["per_call_us"][PYTREEMOD]
        ratio = change(old_ratio, old_ratio_iqr, new_ratio, new_ratio_iqr, by)
        time = change(old_us, old_us_iqr, new_us, new_us_iqr, by)
        out.append(
            {
                "case": r["case"],
                "size_label": r["size_label"],
                "size": r["size"],
                "old_ratio_to_floor": old_ratio,
                "new_ratio_to_floor": new_ratio,
                "old_ratio_iqr": list(old_ratio_iqr),
                "new_ratio_iqr": list(new_ratio_iqr),
                "old_us": old_us,
                "new_us": new_us,
                "old_us_iqr": list(old_us_iqr),
                "new_us_iqr": list(new_us_iqr),
                "ratio": ratio,
                "time": time,
                "slower_ratio": ratio == "slower",
                "slower_time": time == "slower",
            }
        )
    return out


def _percent(old: float, new: float) -> str:
    return f"{(new / old - 1) * 100:+.0f}%"


def _verdict(verdict: str | None) -> str:
    """`SLOWER` shouts, `faster` does not; nothing when within the noise."""
    return "SLOWER" if verdict == "slower" else verdict or ""


def _flags(e: Mapping[str, Any]) -> str:
    flags = []
    if e["ratio"]:
        flags.append(f"{_verdict(e['ratio'])} by ratio to floor")
    if e["time"]:
        flags.append(f"{_verdict(e['time'])} by time")
    return ", ".join(flags)


def _summary(entries: Sequence[Mapping[str, Any]]) -> str:
    slower = sum(e["slower_ratio"] or e["slower_time"] for e in entries)
    faster = sum(
        "faster" in (e["ratio"], e["time"])
        and not (e["slower_ratio"] or e["slower_time"])
        for e in entries
    )
    return (
        f"{slower} of {len(entries)} compared case(s) flagged slower, {faster} faster."
    )


def _rule(old_path: str, by: float) -> str:
    return (
        f"Compared with {old_path} (pytreemod). A change is flagged when it "
        f"exceeds {by:.0%} and each run's median is outside the other run's "
        "IQR (interquartile range of rounds): load that only widens the spread "
        "is not a regression. Trust the ratio to the floor over the time."
    )


def comparison_text(
    entries: Sequence[Mapping[str, Any]], old_path: str, by: float = CHANGED_BY
) -> str:
    """The comparison for a terminal: aligned, at most 120 columns."""

    def iqr(span: Sequence[float]) -> str:
        return f"{span[0]:.2f}–{span[1]:.2f}"

    labels = {e["size_label"] for e in entries}
    size_header = labels.pop() if len(labels) == 1 else "size"
    groups = ["", "", "pytreemod ÷ floor", "", "", "", "", ""]
    groups += ["pytreemod µs per call", "", "", ""]
    lines = [
        [
            "case",
            size_header,
            "before",
            "IQR",
            "now",
            "IQR",
            "change",
            "flag",
            "before",
            "now",
            "change",
            "flag",
        ]
    ]
    for e in entries:
        size = str(e["size"])
        if size_header == "size":
            size = f"{e['size_label']} {size}"
        lines.append(
            [
                e["case"],
                size,
                f"{e['old_ratio_to_floor']:.2f}",
                iqr(e["old_ratio_iqr"]),
                f"{e['new_ratio_to_floor']:.2f}",
                iqr(e["new_ratio_iqr"]),
                _percent(e["old_ratio_to_floor"], e["new_ratio_to_floor"]),
                _verdict(e["ratio"]),
                us(e["old_us"]),
                us(e["new_us"]),
                _percent(e["old_us"], e["new_us"]),
                _verdict(e["time"]),
            ]
        )
    right = [False] + [True] * 6 + [False] + [True] * 3 + [False]
    table, widths = align(lines, right)
    out = wrap([_rule(old_path, by)]) + [""]
    out += [cut(group_line(groups, widths)), *(cut(line) for line in table)]
    if not entries:
        out.append("(no case ran in both)")
    out += ["", _summary(entries)]
    return "\n".join(out)


def markdown_comparison(
    entries: Sequence[Mapping[str, Any]], old_path: str, by: float = CHANGED_BY
) -> str:
    """The comparison as Markdown: a table, and how many cases were flagged."""
    lines = [
        _rule(old_path, by),
        "",
        "| case | size | ratio to floor, before → now (IQR) "
        "| µs, before → now (IQR) | flag |",
        "|---|---|---:|---:|---|",
    ]
    for e in entries:
        old_r, new_r = e["old_ratio_iqr"], e["new_ratio_iqr"]
        ratio = (
            f"{e['old_ratio_to_floor']:.2f} ({old_r[0]:.2f}–{old_r[1]:.2f}) → "
            f"{e['new_ratio_to_floor']:.2f} ({new_r[0]:.2f}–{new_r[1]:.2f}) "
            f"{_percent(e['old_ratio_to_floor'], e['new_ratio_to_floor'])}"
        )
        old_t, new_t = e["old_us_iqr"], e["new_us_iqr"]
        time = (
            f"{e['old_us']:,.1f} ({old_t[0]:,.1f}–{old_t[1]:,.1f}) → "
            f"{e['new_us']:,.1f} ({new_t[0]:,.1f}–{new_t[1]:,.1f}) "
            f"{_percent(e['old_us'], e['new_us'])}"
        )
        size = f"{e['size_label']} {e['size']}"
        lines.append(f"| {e['case']} | {size} | {ratio} | {time} | {_flags(e)} |")
    if not entries:
        lines.append("| (no case ran in both) | | | | |")
    lines += ["", _summary(entries)]
    return "\n".join(lines)
