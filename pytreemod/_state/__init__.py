"""Layer 3: `StateIndex`, `State` and `make_with_state`. Public names are
re-exported from `pytreemod.nn`."""
