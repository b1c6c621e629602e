"""`python -m benchmarks`: runs the cases, prints the table, writes the files.

stdout gets the aligned table (at most 120 columns), the comparison when
asked for, and where each file went; stderr gets the progress bar, from the
first second (imports, building, compiling) to the last round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

import jax

from ._case import PEERS
from ._compare import CHANGED_BY, compare, comparison_text, markdown_comparison
from ._peers import load_peer
from ._plot import PlotUnavailable, plot, require_matplotlib
from ._progress import Progress
from ._report import READABLE_SCHEMAS, markdown_table, to_json
from ._runner import run_case, steps_per_case
from ._terminal import terminal_table
from .cases import BY_NAME, CASES

#: Interleaved rounds of a full run, and each contender's batch length (ms).
FULL_ROUNDS, FULL_ROUND_MS = 41, 10.0
#: The same for `--quick` (whole run under a minute on 2 cores).
QUICK_ROUNDS, QUICK_ROUND_MS = 7, 5.0

COMPARE_SCHEMA = """\
error: `--compare` needs a file written by `python -m benchmarks --json` with
"schema" one of {schemas}; {path} is not one (another program's file, or an
older layout). Make a new baseline with `python -m benchmarks --json FILE`."""


def _case_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {unknown or [text]}; the cases are {', '.join(BY_NAME)}"
        )
    return names


def _peer_names(text: str) -> tuple[str, ...]:
    if text.strip() == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PEERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown peer(s) {unknown or [text]}; the peers are "
            f"{', '.join(PEERS)}, or 'none'"
        )
    return names


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive; got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Time pytreemod against plain JAX (the floor) and, when installed, "
            "Equinox and Flax NNX. Prints an aligned table on stdout; "
            "--markdown writes the full Markdown table."
        ),
    )
    p.add_argument(
        "--quick", action="store_true", help="fewer rounds and sizes (under 1 min)"
    )
    p.add_argument(
        "--only",
        type=_case_names,
        metavar="NAME[,NAME]",
        help=f"run only these cases: {', '.join(BY_NAME)}",
    )
    p.add_argument(
        "--peers",
        type=_peer_names,
        default=PEERS,
        metavar="NAME[,NAME]|none",
        help=f"peers to try when installed (default: {','.join(PEERS)})",
    )
    p.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    p.add_argument(
        "--markdown",
        metavar="FILE.md",
        help="write the full Markdown table (every ratio) to FILE.md",
    )
    p.add_argument(
        "--compare",
        metavar="OLD.json",
        help=(
            f"flag cases that changed by more than {CHANGED_BY * 100:.0f}%% since "
            "OLD.json, outside both runs' spreads of rounds"
        ),
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="plot the ratios to the floor, and µs per call against array leaves",
    )
    p.add_argument(
        "--rounds",
        type=_positive(int),
        help=f"interleaved rounds (default {FULL_ROUNDS}, --quick {QUICK_ROUNDS})",
    )
    p.add_argument(
        "--round-ms",
        type=_positive(float),
        help=(
            "how long each contender's batch lasts in a round (default "
            f"{FULL_ROUND_MS:g}, --quick {QUICK_ROUND_MS:g})"
        ),
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the suite as `python -m benchmarks` would, with `argv` as arguments.

    Returns:
        The exit status: 0 when it ran, 2 when an option cannot be honoured.

    Raises:
        ResultMismatch: A contender computes something else than the floor.
    """
    args = parser().parse_args(argv)
    try:
        if args.plot:
            require_matplotlib()
    except PlotUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    old = None
    if args.compare:
        try:
            with open(args.compare) as f:
                old = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            message = f"error: `--compare` cannot read {args.compare}: {e}"
            print(message, file=sys.stderr)
            return 2
        if not isinstance(old, dict) or old.get("schema") not in READABLE_SCHEMAS:
            message = COMPARE_SCHEMA.format(
                path=args.compare, schemas=", ".join(map(str, READABLE_SCHEMAS))
            )
            print(message, file=sys.stderr)
            return 2
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    round_ms = args.round_ms or (QUICK_ROUND_MS if args.quick else FULL_ROUND_MS)
    cases = [BY_NAME[n] for n in args.only] if args.only else list(CASES)
    plan = [
        (case, size)
        for case in cases
        for size in (case.quick_sizes if args.quick else case.sizes)
    ]

    progress = Progress(len(plan) * steps_per_case(rounds))
    progress.note("starting JAX's CPU backend")
    cpu = jax.devices("cpu")[0]
    for name in args.peers:
        # Imported here, where the bar says so, rather than in the first case.
        progress.note(f"importing peer {name}")
        load_peer(name)
    # JAX's default numerics, whatever the caller set: the suite measures what
    # users run (and optax's Adam needs standard dtype promotion).
    with (
        jax.default_device(cpu),
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
    ):
        rows = [
            run_case(case, size, rounds, round_ms / 1e3, progress, args.peers)
            for case, size in plan
        ]
    progress.close()

    settings = {
        "quick": args.quick,
        "rounds": rounds,
        "round_ms": round_ms,
        "cases": [case.name for case in cases],
        "peers": list(args.peers),
    }
    record = to_json(rows, settings)
    print(terminal_table(rows, rounds))
    markdown = markdown_table(rows)
    if old is not None:
        record["comparison"] = compare(old, record)
        print()
        print(comparison_text(record["comparison"], args.compare))
        markdown += "\n\n" + markdown_comparison(record["comparison"], args.compare)
    written = []
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        written.append(("figures (JSON)", args.json))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown + "\n")
        written.append(("Markdown table", args.markdown))
    if args.plot:
        plot(rows, args.plot, record["machine"], settings)
        written.append(("plot", args.plot))
    if written:
        print()
        for what, path in written:
            print(f"Wrote the {what} to {os.path.abspath(path)}")
    return 0
