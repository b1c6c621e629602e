"""Turns rows of timings into the Markdown table and the JSON record.

Times are never shown alone: every row gives each contender's per-call time,
its ratio to the floor (plain JAX doing the same work), pytreemod's ratio to
each peer, and the spread of the rounds. Ratios to the floor are what to
compare across machines. The aligned terminal table is in `_terminal.py`,
`--compare` in `_compare.py`.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from ._case import CONTENDERS, FLOOR, PEERS, PYTREEMOD
from ._peers import LEFT_OUT, peer_versions
from ._runner import Row
from ._spread import paired_ratios, quartiles

#: Bump when the JSON layout changes in a way `--compare` must know about.
#: 2 added `iqr_us` and `ratio_to_floor_iqr`; `--compare` still reads 1, whose
#: `rounds_us` hold everything the spreads are computed from.
SCHEMA = 2
#: The schemas `--compare` can read.
READABLE_SCHEMAS = (1, 2)


def paired_median(row: Row, name: str, other: str) -> float:
    """The median over rounds of `name`'s per-call time divided by `other`'s
    in the same round. Rounds are interleaved, so each round's ratio divides
    out the load of that moment; and this median lies inside the IQR that
    `ratio_iqr` reports, which a ratio of medians need not."""
    return statistics.median(
        paired_ratios(row.timings[name].rounds_us, row.timings[other].rounds_us)
    )


def ratio_to_floor(row: Row) -> dict[str, float]:
    """Each contender's per-call time divided by the floor's (`paired_median`)."""
    return {name: paired_median(row, name, FLOOR) for name in row.timings}


def ratio_iqr(row: Row, name: str) -> tuple[float, float]:
    """The interquartile range of contender `name`'s round-by-round ratio to
    the floor (see `_spread.paired_ratios`)."""
    return quartiles(
        paired_ratios(row.timings[name].rounds_us, row.timings[FLOOR].rounds_us)
    )


def ratio_to_peers(row: Row) -> dict[str, float]:
    """pytreemod's per-call time divided by each peer's that ran
    (`paired_median`)."""
    return {
        name: paired_median(row, PYTREEMOD, name)
        for name in PEERS
        if name in row.timings
    }


def present_contenders(rows: Sequence[Row]) -> set[str]:
    """The contenders that ran in at least one row: those that get columns."""
    return {name for row in rows for name in row.timings}


def absent_notes(rows: Sequence[Row]) -> list[str]:
    """`"<peer>: <why> (<first case where seen>)"` for each distinct reason a
    peer was absent, except being left out with `--peers` (asked for)."""
    first: dict[str, str] = {}
    for row in rows:
        for name, reason in row.absent.items():
            if reason != LEFT_OUT:
                first.setdefault(f"{name}: {reason}", row.case)
    return [f"{reason} ({case})" for reason, case in first.items()]


def _us(value: float) -> str:
    return f"{value:,.1f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.3f}×"


def markdown_table(rows: Sequence[Row]) -> str:
    """The full report as Markdown (`--markdown FILE`, the README's table): one
    line per case and size, then why peers were absent.

    Columns: case, size, array leaves, per-call µs of each contender, each
    contender's ratio to the floor, the interquartile range of pytreemod's
    round-by-round ratio to the floor, pytreemod's ratio to each peer, and the
    largest slowest-over-fastest round factor. Contenders that ran in no row
    have no columns.
    """
    present = present_contenders(rows)
    contenders = [n for n in CONTENDERS if n in present]
    others = [n for n in contenders if n != FLOOR]
    peers = [n for n in PEERS if n in present]
    header = (
        ["case", "size", "leaves"]
        + [f"{name} µs" for name in contenders]
        + [f"{name} ÷ floor" for name in others]
        + ["pytreemod ÷ floor, IQR"]
        + [f"pytreemod ÷ {peer}" for peer in peers]
        + ["rounds max/min"]
    )
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    for row in rows:
        size = f"{row.size_label} {row.size}"
        if row.unavailable is not None:
            cells = [row.case, size, f"unavailable: {row.unavailable}"]
            cells += [""] * (len(header) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
            continue
        to_floor, to_peers = ratio_to_floor(row), ratio_to_peers(row)
        lo, hi = ratio_iqr(row, PYTREEMOD)
        cells = [row.case, size, str(row.leaves)]
        cells += [
            _us(row.timings[n].per_call_us) if n in row.timings else "absent"
            for n in contenders
        ]
        cells += [_ratio(to_floor[n]) if n in to_floor else "absent" for n in others]
        cells.append(f"{lo:.2f}–{hi:.2f}")
        cells += [_ratio(to_peers[n]) if n in to_peers else "absent" for n in peers]
        cells.append(f"{row.disagreement:.1f}×" + (" (noisy)" if row.noisy else ""))
        lines.append("| " + " | ".join(cells) + " |")
    notes = absent_notes(rows)
    if notes:
        lines.append("")
        lines.append("Absent peers (first case where seen):")
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """Where and with what the run happened: machine, versions, date."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": str(jax.devices("cpu")[0]),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "pytreemod": _version("pytreemod"),
        "optax": _version("optax"),
        "peers": peer_versions(),
    }


def to_json(rows: Sequence[Row], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every figure of the run, with the machine and versions, as JSON data.

    Args:
        rows: The run's rows.
        settings: How it was run (rounds, round length, quick or not).
    """
    results = []
    for row in rows:
        entry: dict[str, Any] = {
            "case": row.case,
            "size_label": row.size_label,
            "size": row.size,
            "leaves": row.leaves,
            "status": "unavailable" if row.unavailable is not None else "ok",
            "unavailable": row.unavailable,
            "absent": dict(row.absent),
        }
        if row.unavailable is None:
            timings = row.timings.items()
            entry["per_call_us"] = {n: t.per_call_us for n, t in timings}
            entry["iqr_us"] = {n: list(t.iqr_us) for n, t in timings}
            entry["rounds_us"] = {n: list(t.rounds_us) for n, t in timings}
            entry["calls_per_round"] = {n: t.calls_per_round for n, t in timings}
            entry["ratio_to_floor"] = ratio_to_floor(row)
            entry["ratio_to_floor_iqr"] = {
                n: list(ratio_iqr(row, n)) for n in row.timings
            }
            entry["ratio_to_peers"] = ratio_to_peers(row)
            entry["rounds_max_over_min"] = row.disagreement
            entry["noisy"] = row.noisy
        results.append(entry)
    return {
        "schema": SCHEMA,
        "machine": machine(),
        "settings": dict(settings),
        "results": results,
    }
