"""The pytreemod benchmark suite: run it with `python -m benchmarks`.

See README.md beside this file for what each case measures and why.
"""

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the suite as `python -m benchmarks` would (see `_cli.main`).

    JAX, pytreemod and the cases are imported on the first call, not when
    this package is, so that `python -m benchmarks` can say it is importing
    them before the seconds that takes.
    """
    from ._cli import main as run

    return run(argv)
