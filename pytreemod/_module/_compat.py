"""Everything that depends on JAX internals or versions, in one place.

Each shim degrades gracefully: should a JAX release move an internal, the
shim falls back to a conservative answer instead of failing.
"""

from typing import Any

import jax


def is_traced_by(x: Any, trace: Any) -> bool:
    """Whether `x` is a tracer of `trace`. JAX has no public way to ask a
    tracer for its trace, so this reads the private `_trace`; should that go
    away, every tracer counts (`filter_jvp` then gives zero tangents instead
    of `None` for outputs that do not depend on the inputs)."""
    return isinstance(x, jax.core.Tracer) and getattr(x, "_trace", trace) is trace
