"""Layer 1: the Module core. Public names are re-exported from `pytreemod`."""
