"""Turns rows of timings into the Markdown table, the JSON record, and the
comparison with an earlier JSON record.

Times are never shown alone: every row gives each contender's per-call time,
its ratio to the floor (plain JAX doing the same work), and pytreemod's ratio
to each peer. Ratios to the floor are what to compare across machines.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from ._case import CONTENDERS, FLOOR, PEERS, PYTREEMOD
from ._peers import peer_versions
from ._runner import Row

#: Bump when the JSON layout changes in a way `--compare` must know about.
SCHEMA = 1
#: `--compare` flags a case this much slower than before (0.10: 10%).
SLOWER_BY = 0.10


def ratio_to_floor(row: Row) -> dict[str, float]:
    """Each contender's per-call time divided by the floor's."""
    floor = row.timings[FLOOR].per_call_us
    return {name: t.per_call_us / floor for name, t in row.timings.items()}


def ratio_to_peers(row: Row) -> dict[str, float]:
    """pytreemod's per-call time divided by each peer's that ran."""
    mine = row.timings[PYTREEMOD].per_call_us
    return {
        name: mine / row.timings[name].per_call_us
        for name in PEERS
        if name in row.timings
    }


def _us(value: float) -> str:
    return f"{value:,.1f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}×"


def markdown_table(rows: Sequence[Row]) -> str:
    """The report: one line per case and size, then why peers were absent.

    Columns: case, size, array leaves, per-call µs of each contender, each
    contender's ratio to the floor, pytreemod's ratio to each peer.
    """
    others = [name for name in CONTENDERS if name != FLOOR]
    header = (
        ["case", "size", "leaves"]
        + [f"{name} µs" for name in CONTENDERS]
        + [f"{name} ÷ floor" for name in others]
        + [f"pytreemod ÷ {peer}" for peer in PEERS]
    )
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    reasons: dict[str, str] = {}
    for row in rows:
        size = f"{row.size_label} {row.size}"
        if row.unavailable is not None:
            cells = [row.case, size, f"unavailable: {row.unavailable}"]
            cells += [""] * (len(header) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
            continue
        to_floor, to_peers = ratio_to_floor(row), ratio_to_peers(row)
        cells = [row.case, size, str(row.leaves)]
        cells += [
            _us(row.timings[n].per_call_us) if n in row.timings else "absent"
            for n in CONTENDERS
        ]
        cells += [_ratio(to_floor[n]) if n in to_floor else "absent" for n in others]
        cells += [_ratio(to_peers[n]) if n in to_peers else "absent" for n in PEERS]
        lines.append("| " + " | ".join(cells) + " |")
        for name, reason in row.absent.items():
            reasons.setdefault(f"{name}: {reason}", row.case)
    if reasons:
        lines.append("")
        lines.append("Absent peers (first case where seen):")
        lines += [f"- {reason} ({case})" for reason, case in reasons.items()]
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
            entry["per_call_us"] = {n: t.per_call_us for n, t in row.timings.items()}
            entry["rounds_us"] = {n: list(t.rounds_us) for n, t in row.timings.items()}
            entry["calls_per_round"] = {
                n: t.calls_per_round for n, t in row.timings.items()
            }
            entry["ratio_to_floor"] = ratio_to_floor(row)
            entry["ratio_to_peers"] = ratio_to_peers(row)
        results.append(entry)
    return {
        "schema": SCHEMA,
        "machine": machine(),
        "settings": dict(settings),
        "results": results,
    }


def compare(
    old: Mapping[str, Any], new: Mapping[str, Any], slower_by: float = SLOWER_BY
) -> list[dict[str, Any]]:
    """pytreemod's figures now against an earlier run, for each case and size
    that ran in both.

    Args:
        old: An earlier run's JSON data.
        new: This run's JSON data.
        slower_by: The fraction beyond which a figure counts as slower.

    Returns:
        One entry per case and size: old and new ratio to the floor and per-call
        time, and `slower_ratio` / `slower_time` flags.
    """
    before = {(r["case"], r["size"]): r for r in old["results"] if r["status"] == "ok"}
    out = []
    for r in new["results"]:
        o = before.get((r["case"], r["size"]))
        if r["status"] != "ok" or o is None or PYTREEMOD not in o["per_call_us"]:
            continue
        old_ratio = o["ratio_to_floor"][PYTREEMOD]
        new_ratio = r["ratio_to_floor"][PYTREEMOD]
        old_us, new_us = o["per_call_us"][PYTREEMOD], r["per_call_us"][PYTREEMOD]
        out.append(
            {
                "case": r["case"],
                "size_label": r["size_label"],
                "size": r["size"],
                "old_ratio_to_floor": old_ratio,
                "new_ratio_to_floor": new_ratio,
                "old_us": old_us,
                "new_us": new_us,
                "slower_ratio": new_ratio > old_ratio * (1 + slower_by),
                "slower_time": new_us > old_us * (1 + slower_by),
            }
        )
    return out


def _change(old: float, new: float) -> str:
    return f"{(new / old - 1) * 100:+.0f}%"


def markdown_comparison(
    entries: Sequence[Mapping[str, Any]], old_path: str, slower_by: float = SLOWER_BY
) -> str:
    """The comparison as Markdown: a table, and a line per flagged case."""
    lines = [
        f"Compared with {old_path} (pytreemod; flagged when more than "
        f"{slower_by:.0%} slower):",
        "",
        "| case | size | ratio to floor, before → now | µs, before → now | flag |",
        "|---|---|---:|---:|---|",
    ]
    flagged = 0
    for e in entries:
        flags = [
            label
            for label, on in (
                ("SLOWER by ratio to floor", e["slower_ratio"]),
                ("SLOWER by time", e["slower_time"]),
            )
            if on
        ]
        flagged += bool(flags)
        ratio = (
            f"{e['old_ratio_to_floor']:.2f} → {e['new_ratio_to_floor']:.2f} "
            f"({_change(e['old_ratio_to_floor'], e['new_ratio_to_floor'])})"
        )
        time = f"{_us(e['old_us'])} → {_us(e['new_us'])} "
        time += f"({_change(e['old_us'], e['new_us'])})"
        size = f"{e['size_label']} {e['size']}"
        cells = [e["case"], size, ratio, time, ", ".join(flags)]
        lines.append("| " + " | ".join(cells) + " |")
    if not entries:
        lines.append("| (no case ran in both) | | | | |")
    lines.append("")
    lines.append(f"{flagged} of {len(entries)} compared case(s) flagged slower.")
    return "\n".join(lines)
