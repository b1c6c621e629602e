"""`python -m benchmarks`: runs the cases, prints the table, writes the files."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

import jax

from ._case import PEERS
from ._plot import PlotUnavailable, plot, require_matplotlib
from ._progress import Progress
from ._report import SCHEMA, compare, markdown_comparison, markdown_table, to_json
from ._runner import run_case
from .cases import BY_NAME, CASES

#: Interleaved rounds of a full run, and each contender's batch length (ms).
FULL_ROUNDS, FULL_ROUND_MS = 41, 10.0
#: The same for `--quick` (whole run under a minute on 2 cores).
QUICK_ROUNDS, QUICK_ROUND_MS = 7, 5.0

COMPARE_SCHEMA = """\
error: `--compare` needs a file written by `python -m benchmarks --json` with
"schema": {schema}; {path} is not one (another program's file, or an older
layout). Make a new baseline with `python -m benchmarks --json FILE`."""


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
            "Equinox and Flax NNX. Prints a Markdown table on stdout."
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
        "--compare",
        metavar="OLD.json",
        help="flag cases more than 10%% slower than in OLD.json",
    )
    p.add_argument(
        "--plot", metavar="FILE.png", help="plot µs per call against array leaves"
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
        if not isinstance(old, dict) or old.get("schema") != SCHEMA:
            print(
                COMPARE_SCHEMA.format(path=args.compare, schema=SCHEMA), file=sys.stderr
            )
            return 2
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    round_ms = args.round_ms or (QUICK_ROUND_MS if args.quick else FULL_ROUND_MS)
    cases = [BY_NAME[n] for n in args.only] if args.only else list(CASES)
    plan = [
        (case, size)
        for case in cases
        for size in (case.quick_sizes if args.quick else case.sizes)
    ]

    progress = Progress(len(plan) * (1 + rounds))
    with jax.default_device(jax.devices("cpu")[0]):
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
    print(markdown_table(rows))
    if old is not None:
        record["comparison"] = compare(old, record)
        print()
        print(markdown_comparison(record["comparison"], args.compare))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
    if args.plot:
        plot(rows, args.plot)
    return 0
