"""`Recorder`: values that code deep inside a call hands back to the
`pytreemod.surgery.capture` that made the call, as outputs, never through a
global that could keep a tracer alive.

A capture opens one `Recorder` for the duration of one call of the captured
function. The wrappers it puts around the selected submodules `record` their
outputs into it; the capture returns what was recorded as part of its own
output. Two things keep tracers where they belong:

* Each value is checked against the trace the capture runs under (or, inside
  an `nn.Stacked`, the scan body's): a value of a transform that began
  inside the captured function (a `jax.jit`, a `scan`) is an error naming
  the path; a `jax.vmap` inside is unwrapped (see `_compat.lift_to`).
* `nn.Stacked` runs its layers in a `jax.lax.scan`. `through_scan` wraps its
  scan body so that what the layers record comes out of the scan as scan
  outputs (one value per layer, stacked), and is recorded again outside.

The recorders open now are kept in a `ContextVar` for `through_scan` only:
without an open recorder it returns the scan body unchanged, so a program
traced without a capture is the same program.
"""

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jax

from .._module._compat import current_trace, lift_to

__all__ = ["CaptureError", "Recorder", "through_scan"]

_CROSSED = """\
The submodule at `{path}` was captured inside a transform that began inside
the captured function ({kind}): its output there is a tracer of that
transform, which would leak out of it. Probably the captured function applies
`jax.jit`, `pytreemod.filter_jit`, `jax.lax.scan` or `jax.checkpoint` to the
model (or the model does so inside its own `__call__`). Either
  1. put the capture inside the transform instead of the transform inside
     the capture:
         step = pytreemod.filter_jit(surgery.capture(selection, loss))
  2. or capture the submodule that applies the transform (its output is
     outside it)."""

_CLOSED = """\
The capture that wrapped the submodule at `{path}` has ended: the tapped model
was kept and called after `capture(...)` returned. The tapped model exists
only during the captured call; call the original model, or capture again."""

_CURRENT: contextvars.ContextVar[tuple["Recorder", ...]] = contextvars.ContextVar(
    "pytreemod_recorders", default=()
)


class CaptureError(ValueError):
    """A captured value would leave the transform that made it, or a capture
    was used after it ended (public as `pytreemod.surgery.CaptureError`).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> from pytreemod import surgery
        >>> mlp = ptm.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
        >>> run = ptm.filter_jit(lambda m, x: m(x))
        >>> jitted_inside = surgery.capture(ptm.nn.Linear, run)
        >>> try:
        ...     jitted_inside(mlp, jnp.ones(2))
        ... except surgery.CaptureError as error:
        ...     print(str(error).splitlines()[0])
        The submodule at `.layers[0]` was captured inside a transform that began inside
    """


class Recorder:
    """The values recorded during one captured call, keyed by path. Each
    path maps to the list of its outputs, one per call of the submodule."""

    def __init__(self) -> None:
        self._frames: list[tuple[Any, dict[str, list[Any]]]] = [(current_trace(), {})]
        self._closed = False

    def record(self, path: str, value: Any) -> None:
        """Record one output of the submodule at `path`."""
        if self._closed:
            raise CaptureError(_CLOSED.format(path=path))
        trace, values = self._frames[-1]
        leaves, treedef = jax.tree_util.tree_flatten(value)
        lifted = []
        for leaf in leaves:
            ok, leaf = lift_to(leaf, trace)
            if not ok:
                kind = type(getattr(leaf, "_trace", leaf)).__name__
                raise CaptureError(_CROSSED.format(path=path, kind=kind))
            lifted.append(leaf)
        values.setdefault(path, []).append(treedef.unflatten(lifted))

    @contextlib.contextmanager
    def active(self) -> Iterator["Recorder"]:
        """Open for the duration of the `with` block; closed after it."""
        token = _CURRENT.set((*_CURRENT.get(), self))
        try:
            yield self
        finally:
            _CURRENT.reset(token)
            self._closed = True

    def values(self) -> dict[str, Any]:
        """Path -> output; a submodule called several times gives a tuple of
        its outputs, in call order."""
        _, values = self._frames[0]
        return {p: v[0] if len(v) == 1 else tuple(v) for p, v in values.items()}

    def _push(self) -> None:
        self._frames.append((current_trace(), {}))

    def _pop(self) -> dict[str, list[Any]]:
        return self._frames.pop()[1]

    def _merge(self, stacked: dict[str, list[Any]]) -> None:
        for path, outputs in stacked.items():
            for output in outputs:
                self.record(path, output)


def through_scan(
    body: Callable[[Any, Any], tuple[Any, Any]],
) -> tuple[Callable[[Any, Any], tuple[Any, Any]], Callable[[Any], Any]]:
    """`(body, finish)` for a `jax.lax.scan` over layers: the body returns,
    beside its own scan output, what the open recorders recorded during the
    step, and `finish(ys)` records those values (stacked along the layer axis)
    outside the scan and gives back the body's own `ys`. With no recorder
    open, `body` is returned unchanged and `finish` is the identity, so the
    traced program is the same as without.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> def body(h, w):
        ...     return h * w, None
        >>> step, finish = through_scan(body)
        >>> step is body  # nothing is being captured
        True
        >>> h, ys = jax.lax.scan(step, 1.0, jnp.arange(1.0, 4.0))
        >>> float(h), finish(ys)
        (6.0, None)
    """
    recorders = _CURRENT.get()
    if not recorders:
        return body, _identity

    def step(carry: Any, xs: Any) -> tuple[Any, Any]:
        for recorder in recorders:
            recorder._push()
        try:
            carry, ys = body(carry, xs)
        finally:
            recorded = [recorder._pop() for recorder in recorders]
        return carry, (ys, recorded)

    def finish(out: Any) -> Any:
        ys, recorded = out
        for recorder, stacked in zip(recorders, recorded, strict=True):
            recorder._merge(stacked)
        return ys

    return step, finish


def _identity(x: Any) -> Any:
    return x
