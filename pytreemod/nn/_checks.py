"""Eager input checks for the layers.

Layers check the shapes of their inputs in `__call__`. Under `jit` this runs
once, at trace time, so it costs nothing per call, and a mistake is reported
in terms of the layer instead of as a failed matrix multiplication deep
inside a trace.
"""

import os
import sys
import warnings
from typing import Any

import numpy as np

BATCHED_HINT = (
    " Layers act on one unbatched example, and `{name}` looks like it has an "
    "extra leading batch axis: map the layer over the batch with "
    "`jax.vmap(layer)(...)` or `pytreemod.filter_vmap(layer)(...)`."
)


def check_shape(
    layer: str, name: str, value: Any, expected: tuple[int, ...], *, hint: str = ""
) -> None:
    """Raise a `ValueError` naming `layer` unless `value` has shape `expected`.

    Args:
        layer: how to name the layer in the message, e.g. `"Linear(3, 4)"`.
        name: the argument's name, e.g. `"x"`.
        value: the argument (anything with a shape, or a Python scalar).
        expected: the shape it must have.
        hint: text appended to the message, e.g. how to fix it.
    """
    shape = tuple(np.shape(value))
    if shape == expected:
        return
    if not hint and len(shape) == len(expected) + 1 and shape[1:] == expected:
        hint = BATCHED_HINT.format(name=name)
    raise ValueError(
        f"{layer}: `{name}` must have shape {expected}; got shape {shape}.{hint}"
    )


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """`warnings.warn` attributed to the first frame outside pytreemod: a
    layer's constructor runs under `Module`'s metaclass (and perhaps
    `make_with_state`), so a fixed `stacklevel` would point into pytreemod
    instead of at the line that built the layer."""
    level = 2  # 1 is this function, 2 its caller
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
