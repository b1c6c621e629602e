"""`python -m benchmarks`: see `benchmarks/README.md`."""

import sys

if not {"-h", "--help"} & set(sys.argv[1:]):
    # Importing JAX, pytreemod and optax takes seconds: say so first.
    print("benchmarks: importing JAX, pytreemod, optax...", file=sys.stderr, flush=True)

from ._cli import main  # noqa: E402

sys.exit(main())
