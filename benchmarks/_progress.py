"""A small progress bar on stderr, so that a long run shows it is alive."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

_WIDTH = 30


class Progress:
    """Counts steps done out of a known total and draws a bar.

    On a terminal the bar is redrawn in place; anywhere else (a log file, a
    captured stream) each step is one plain line, so logs stay readable.

    Args:
        total: How many steps the whole run has.
        stream: Where to draw; stderr by default, so stdout keeps only the report.
    """

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = max(total, 1)
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()
        isatty = getattr(self.stream, "isatty", None)
        self.in_place = bool(isatty and isatty())

    def advance(self, label: str, steps: int = 1) -> None:
        """Marks `steps` more steps done, now working on `label`."""
        self.done = min(self.done + steps, self.total)
        self._draw(label)

    def note(self, label: str) -> None:
        """Says what is being worked on now, without a step done: for the slow
        parts between steps (imports, building, compiling)."""
        self._draw(label)

    def _draw(self, label: str) -> None:
        filled = _WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (_WIDTH - filled)
        elapsed = time.perf_counter() - self.start
        line = f"[{bar}] {self.done}/{self.total} {elapsed:5.1f}s {label}"
        if self.in_place:
            # A line longer than the terminal wraps, and `\r` then redraws
            # only its last part: cut it to fit.
            columns = shutil.get_terminal_size().columns
            self.stream.write("\r\033[K" + line[: max(columns - 1, 20)])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the bar's line, so that what follows starts on a fresh one."""
        if self.in_place:
            self.stream.write("\n")
            self.stream.flush()
