"""The errors of both file formats.

Everything that is wrong with a file (truncated, corrupted, crafted, of the
other format, or not matching `like`) is a `CheckpointError`, a `ValueError`.
The leaf-order (Equinox-layout) functions raise `LeafError`, which is also a
`RuntimeError` because Equinox raises `RuntimeError` there, so code written
for either library catches it.
"""


class CheckpointError(ValueError):
    """A checkpoint could not be read, or does not match `like` under
    `strict=True`.

    Raised by `load`, `load_metadata` and (as a subclass that is also a
    `RuntimeError`) by `tree_deserialise_leaves`, for every file that is
    truncated, corrupted, crafted or of the other format. The message says
    what is wrong with the file.

    Example:
        >>> import pytreemod
        >>> issubclass(pytreemod.CheckpointError, ValueError)
        True
    """


class LeafError(CheckpointError, RuntimeError):
    """A leaf-order file could not be read into `like`; the message starts
    with the leaf's key path, as Equinox's does."""
