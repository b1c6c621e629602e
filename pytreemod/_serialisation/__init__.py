"""Serialisation: Equinox-layout leaf files and path-keyed checkpoints. Public
names are re-exported from `pytreemod`."""
