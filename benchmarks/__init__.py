"""The pytreemod benchmark suite: run it with `python -m benchmarks`.

See README.md beside this file for what each case measures and why.
"""

from ._cli import main as main
