"""`--plot`: every case's ratio to the floor, and per-call time against array
leaves for the cases run at several sizes, under a title naming the machine
and versions.

matplotlib is imported only here, and only when `--plot` is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._case import CONTENDERS, FLOOR, PYTREEMOD
from ._report import ratio_iqr, ratio_to_floor
from ._runner import Row

NO_MATPLOTLIB = """\
`--plot` needs matplotlib, which is not importable here ({error}).
Install it with
    pip install matplotlib
or install the benchmark extras with
    pip install -e '.[bench]'
or run without `--plot`."""


class PlotUnavailable(Exception):
    """Raised when `--plot` is asked for and matplotlib cannot be imported."""


def require_matplotlib() -> Any:
    """Imports matplotlib's `Figure`, or raises `PlotUnavailable` saying what to do.

    Called before the run starts, so that a missing matplotlib is known at once,
    not after minutes of timing.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotUnavailable(NO_MATPLOTLIB.format(error=e)) from e
    return Figure


#: A fixed colour per contender, the same in every panel.
COLOURS = {PYTREEMOD: "C0", FLOOR: "C7", "equinox": "C2", "nnx": "C3"}
#: How peers' distributions are named in the title.
_PEER_LABELS = {"equinox": "Equinox", "nnx": "Flax"}


def title(machine: Mapping[str, Any], settings: Mapping[str, Any], ran: Any) -> str:
    """The plot's title: what was run, on what machine, with which versions.

    Args:
        machine: The JSON record's `machine` entry.
        settings: The JSON record's `settings` entry.
        ran: The names of the contenders that ran: only their versions are given.
    """
    peers = [
        f"{_PEER_LABELS[name]} {version}"
        for name, version in machine["peers"].items()
        if version and name in ran
    ]
    return "\n".join(
        [
            f"pytreemod {machine['pytreemod']} against jax.jit on the same array "
            "leaves (the floor)",
            f"{machine['processor']}, {machine['cpu_count']} CPUs, "
            f"{machine['platform']}",
            f"Python {machine['python']}, JAX {machine['jax']} (jaxlib "
            f"{machine['jaxlib']}), optax {machine['optax']}"
            + "".join(f", {p}" for p in peers),
            f"median of {settings['rounds']} interleaved rounds, error bars: "
            f"interquartile range; {machine['date']}",
        ]
    )


def _summary(axes: Any, rows: Sequence[Row], names: Sequence[str]) -> None:
    """Each contender's ratio to the floor, a group of bars per case and size."""
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        xs, ys, low, high = [], [], [], []
        for i, row in enumerate(rows):
            if name in row.timings:
                value = ratio_to_floor(row)[name]
                lo, hi = ratio_iqr(row, name)
                xs.append(i + (k - (len(names) - 1) / 2) * width)
                ys.append(value)
                low.append(max(value - lo, 0.0))
                high.append(max(hi - value, 0.0))
        axes.bar(
            xs,
            ys,
            width,
            yerr=[low, high],
            color=COLOURS[name],
            label=name,
            error_kw={"elinewidth": 0.8, "capsize": 1.5},
        )
    axes.axhline(1.0, color="black", linewidth=0.8, label="floor (jax.jit)")
    axes.set_yscale("log")
    axes.set_xticks(
        range(len(rows)),
        [f"{row.case}\n{row.size_label} {row.size}" for row in rows],
        rotation=45,
        ha="right",
        fontsize="small",
    )
    axes.set_xlim(-0.6, len(rows) - 0.4)
    axes.set_ylabel("÷ floor (log)")
    axes.set_title("every case: per-call time divided by the floor's (below 1: faster)")
    axes.grid(True, axis="y", which="both", alpha=0.3)
    axes.legend(fontsize="small", ncols=len(names) + 1)


def _sizes(axes: Any, case: str, rows: Sequence[Row]) -> None:
    """One case over its sizes: per-call µs against array leaves, log-log."""
    from matplotlib.ticker import NullFormatter

    leaves = sorted({row.leaves for row in rows if row.leaves is not None})
    for name in CONTENDERS:
        points = sorted(
            (row.leaves, row.timings[name]) for row in rows if name in row.timings
        )
        if not points:
            continue
        xs = [x for x, _ in points]
        ys = [t.per_call_us for _, t in points]
        low = [t.per_call_us - t.iqr_us[0] for _, t in points]
        high = [t.iqr_us[1] - t.per_call_us for _, t in points]
        axes.errorbar(
            xs,
            ys,
            yerr=[low, high],
            marker="o",
            markersize=4,
            capsize=2,
            color=COLOURS[name],
            label=name,
        )
    axes.set_xscale("log")
    axes.set_xticks(leaves, [str(n) for n in leaves])
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_yscale("log")
    axes.set_title(case)
    axes.set_xlabel("array leaves")
    axes.set_ylabel("µs per call")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")


def plot(
    rows: Sequence[Row],
    path: str,
    machine: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> None:
    """Draws the run and saves it as `path` (a PNG).

    On top, every case and size that ran: each contender's ratio to the floor,
    with the interquartile range of its rounds. Below, a panel per case that
    ran at two sizes or more: per-call µs against array leaves, a line per
    contender, both axes logarithmic. (A case run at one size, as most are in
    `--quick`, is in the top panel only: a one-point panel says nothing.)

    Args:
        rows: The run's rows; unavailable ones are left out.
        path: Where to write the image.
        machine: The JSON record's `machine` entry, for the title.
        settings: The JSON record's `settings` entry, for the title.
    """
    Figure = require_matplotlib()

    ran = [row for row in rows if row.unavailable is None]
    cases: dict[str, list[Row]] = {}
    for row in ran:
        cases.setdefault(row.case, []).append(row)
    several = {case: rs for case, rs in cases.items() if len(rs) >= 2}
    present = {name for row in ran for name in row.timings}
    names = [n for n in CONTENDERS if n in present and n != FLOOR]

    columns = min(3, max(len(several), 1))
    lines = -(-len(several) // columns)
    figure = Figure(
        figsize=(max(12.0, 4.5 * columns), 5.2 + 3.6 * lines), layout="constrained"
    )
    figure.suptitle(title(machine, settings, present), fontsize="medium")
    if not ran:
        figure.text(0.5, 0.5, "no case ran", ha="center")
    else:
        grid = figure.add_gridspec(
            1 + lines, columns, height_ratios=[1.4] + [1] * lines
        )
        _summary(figure.add_subplot(grid[0, :]), ran, names)
        for i, (case, case_rows) in enumerate(several.items()):
            axes = figure.add_subplot(grid[1 + i // columns, i % columns])
            _sizes(axes, case, case_rows)
    figure.savefig(path, dpi=110)
