"""The registry of benchmark cases, in the order they run and are reported.

Each case lives in its own module, named after it, as a `CASE` constant. To add
one: write the module, then list it here.
"""

from __future__ import annotations

from .._case import Case
from . import (
    construction,
    ensemble,
    flatten_unflatten,
    frozen_step,
    jit_forward,
    mixed_precision_step,
    sharded_step,
    stateful_step,
    tracing,
    train_loop,
    train_step,
)

CASES: tuple[Case, ...] = (
    flatten_unflatten.CASE,
    construction.CASE,
    jit_forward.CASE,
    train_step.CASE,
    frozen_step.CASE,
    sharded_step.CASE,
    train_loop.CASE,
    stateful_step.CASE,
    mixed_precision_step.CASE,
    ensemble.CASE,
    tracing.CASE,
)
#: Each case by its name.
BY_NAME: dict[str, Case] = {case.name: case for case in CASES}
