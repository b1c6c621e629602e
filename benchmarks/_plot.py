"""`--plot`: per-call time against the number of array leaves, per contender.

matplotlib is imported only here, and only when `--plot` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._case import CONTENDERS
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


def plot(rows: Sequence[Row], path: str) -> None:
    """Draws one panel per case: per-call µs against array leaves, a line per
    contender, both axes logarithmic, and saves it as `path` (a PNG).

    Args:
        rows: The run's rows; unavailable ones are left out.
        path: Where to write the image.
    """
    Figure = require_matplotlib()
    from matplotlib.ticker import NullFormatter

    cases: dict[str, list[Row]] = {}
    for row in rows:
        if row.unavailable is None:
            cases.setdefault(row.case, []).append(row)
    columns = min(3, max(len(cases), 1))
    lines = max(1, -(-len(cases) // columns))
    figure = Figure(figsize=(4.5 * columns, 3.6 * lines), layout="constrained")
    for i, (case, case_rows) in enumerate(cases.items()):
        axes = figure.add_subplot(lines, columns, i + 1)
        leaves = sorted({row.leaves for row in case_rows})
        for name in CONTENDERS:
            points = sorted(
                (row.leaves, row.timings[name].per_call_us)
                for row in case_rows
                if name in row.timings
            )
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", label=name)
        axes.set_xscale("log")
        axes.set_xticks(leaves, [str(n) for n in leaves])
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_yscale("log")
        axes.set_title(case)
        axes.set_xlabel("array leaves")
        axes.set_ylabel("µs per call")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    if not cases:
        figure.text(0.5, 0.5, "no case ran", ha="center")
    figure.savefig(path, dpi=110)
