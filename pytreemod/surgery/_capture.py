"""`capture`: the outputs of selected submodules during a call, by path."""

from collections.abc import Callable
from typing import Any

from .._module._field import field
from .._module._module import Module
from .._transform._recording import Recorder
from ..select._selector import Selector, as_selector
from ._tap import Record, tap


def call_with(fn: Callable[..., Any] | None, model: Any, args: Any, kwargs: Any) -> Any:
    """`fn(model, *args, **kwargs)`, or `model(*args, **kwargs)` without `fn`."""
    if fn is None:
        return model(*args, **kwargs)
    return fn(model, *args, **kwargs)


def selection_of(selection: Any, signature: str) -> Selector:
    """`selection` as a selector; a function in its place is most likely the
    arguments given in the wrong order."""
    if callable(selection) and not isinstance(selection, (type, Selector)):
        raise TypeError(
            f"`{signature.split('(')[0]}` takes the selection first: "
            f"`{signature}`; got the function {selection!r} as the selection."
        )
    return as_selector(selection)


class Captured(Module):
    """A function that also returns the outputs of selected submodules; made
    by `capture`. Calling it as `captured(model, *args, **kwargs)` gives
    `(out, values)`."""

    fn: Callable[..., Any] | None
    selection: Selector = field(static=True)
    missing_ok: bool = field(static=True)

    def __call__(self, model: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        recorder = Recorder()
        tapped = tap(
            model,
            self.selection,
            lambda path: (Record(recorder), ()),
            missing_ok=self.missing_ok,
        )
        with recorder.active():
            out = call_with(self.fn, tapped, args, kwargs)
        return out, recorder.values()


def capture(
    selection: Any,
    fn: Callable[..., Any] | None = None,
    *,
    missing_ok: bool = False,
) -> Captured:
    r"""Wrap `fn` so that it also returns the outputs of the selected
    submodules of its first argument, keyed by path, without editing any
    `__call__` (PyTorch's forward hooks, as a function).

    `capture(selection, fn)(model, *args, **kwargs)` calls
    `fn(model, *args, **kwargs)` on a copy of `model` whose outermost selected
    submodules record their outputs, and returns `(out, values)`: `out` as
    `fn` returns it, and `values` a dict from key path (as
    `jax.tree_util.keystr` writes it, e.g. `".layers[0]"`) to that
    submodule's output. Without `fn`, the model itself is called:
    `capture(selection)(model, x)` gives `(model(x), values)`.

    - A submodule called several times gives a tuple of its outputs, in call
      order; one that was not called is left out.
    - A stateful submodule (called as `layer(x, state)`) gives its output,
      not its state.
    - Inside an `nn.Stacked`, a submodule gives one output per layer, stacked
      along a leading layer axis.
    - A submodule that its parent maps with `jax.vmap` (as
      `nn.MultiheadAttention` does with its projections) gives its output
      for all the mapped examples, the mapped axis first.
    - Apply transforms around the capture, not inside it:
      `filter_jit(capture(sel, loss))`, `filter_vmap(capture(sel))`, or
      `filter_grad(f, has_aux=True)` with `f` returning the captured values
      as its auxiliary output. The values are outputs of the function, so
      they never outlive the transform that made them; a submodule whose
      output would (the captured function jits or scans the model itself)
      is an error naming its path.
    - When the selection matches nothing (with `missing_ok=True`), the
      traced program is exactly that of `fn`.

    Args:
        selection: a `pytreemod.select` selector, a key-path pattern or a
            type: which submodules of the model to capture.
        fn: `fn(model, *args, **kwargs)`; by default the model is called.
        missing_ok: allow a selection that matches nothing (`values` is then
            empty).

    Returns:
        A `Captured`: call it as `captured(model, *args, **kwargs)` to get
        `(out, values)`. It is a Module, so it can be given to `filter_jit`
        and the other filtered transforms.

    Raises:
        ValueError: (when called) if the selection matches nothing, unless
            `missing_ok`, naming the nearest real paths.
        CaptureError: (when called) if a captured value would leak out of a
            transform applied inside the captured function, or the tapped
            model is used after the capture ended.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> from pytreemod import surgery
        >>> mlp = ptm.nn.MLP(2, 1, 4, 2, key=jax.random.key(0))
        >>> y, hidden = surgery.capture(r"\.layers\[0\]")(mlp, jnp.ones(2))
        >>> list(hidden), hidden[".layers[0]"].shape
        (['.layers[0]'], (4,))
        >>> bool(jnp.all(hidden[".layers[0]"] == mlp.layers[0](jnp.ones(2))))
        True
    """
    if fn is not None and not callable(fn):
        raise TypeError(
            "`capture(selection, fn)` takes a function `fn(model, ...)` as `fn`; "
            f"got {fn!r} (of type `{type(fn).__name__}`). Was the selection "
            "given second? Write `capture(selection, fn)`."
        )
    return Captured(
        fn=fn,
        selection=selection_of(selection, "capture(selection, fn)"),
        missing_ok=missing_ok,
    )
