"""`intervene`: the outputs of selected submodules replaced during a call."""

from collections.abc import Callable, Mapping
from typing import Any

from .._module._field import field
from .._module._module import Module
from ..select._selector import Selector
from ._capture import call_with, selection_of
from ._tap import Patch, tap

_UNKNOWN_PATHS = """\
`intervene`'s patch is a dict keyed by path, but {which}:
    {paths}
Its keys must be exactly the selected paths (as `capture` returns them); the
selected paths are
    {selected}"""


class Intervened(Module):
    """A function run with the outputs of selected submodules patched; made
    by `intervene`. Call it as `intervened(model, *args, **kwargs)`."""

    fn: Callable[..., Any] | None
    patch: Any
    selection: Selector = field(static=True)
    missing_ok: bool = field(static=True)

    def __call__(self, model: Any, *args: Any, **kwargs: Any) -> Any:
        patch = self.patch
        seen: list[str] = []

        def effect(path: str) -> tuple[Patch, tuple[Any, ...]]:
            seen.append(path)
            one = patch
            if isinstance(patch, Mapping):
                if path not in patch:
                    return Patch(None), ()  # reported below with the others
                one = patch[path]
            if callable(one):
                return Patch(one), ()
            return Patch(None), (one,)

        tapped = tap(model, self.selection, effect, missing_ok=self.missing_ok)
        if isinstance(patch, Mapping):
            _check_paths(patch, seen)
        return call_with(self.fn, tapped, args, kwargs)


def _check_paths(patch: Mapping[str, Any], selected: list[str]) -> None:
    missing = [p for p in selected if p not in patch]
    unknown = [p for p in patch if p not in selected]
    if missing or unknown:
        paths, which = (
            (missing, "these selected paths have no entry")
            if missing
            else (unknown, "these keys are not selected paths")
        )
        raise ValueError(
            _UNKNOWN_PATHS.format(
                which=which,
                paths="\n    ".join(map(str, paths)),
                selected="\n    ".join(selected) or "(none)",
            )
        )


def intervene(
    selection: Any,
    patch: Any,
    fn: Callable[..., Any] | None = None,
    *,
    missing_ok: bool = False,
) -> Intervened:
    r"""Wrap `fn` so that the selected submodules of its first argument have
    their outputs replaced during the call: activation patching, ablation,
    steering.

    `intervene(selection, patch, fn)(model, *args, **kwargs)` calls
    `fn(model, *args, **kwargs)` (without `fn`, the model itself) on a copy
    of `model` in which each outermost selected submodule, after computing
    its output `y`, returns instead

    - `patch(y)`, if `patch` is a function (ablation: `jnp.zeros_like`;
      steering: `lambda y: y + direction`);
    - `patch`, if it is a value (an array, or a pytree of them): it must
      have the shape and dtype of `y`;
    - `patch[path]` (a value or a function), if `patch` is a dict keyed by
      the selected paths, such as the values `capture` returns from another
      run (activation patching).

    A stateful submodule has its output patched, not its state. Inside an
    `nn.Stacked` a function patch applies to each layer's output, and a value
    carries the layer axis first (as `capture` gives it). A patch of the
    wrong shape or dtype is an error naming the path. The identity patch
    (`lambda y: y`) leaves the traced program and its results bitwise
    unchanged. Transforms go around it, as for `capture`; and `capture`
    around an `intervene` records the patched outputs.

    Args:
        selection: a `pytreemod.select` selector, a key-path pattern or a
            type: which submodules to patch.
        patch: a function of the output, a value, or a dict from path to
            either.
        fn: `fn(model, *args, **kwargs)`; by default the model is called.
        missing_ok: allow a selection that matches nothing.

    Returns:
        An `Intervened` Module: call it as `intervened(model, *args,
        **kwargs)`.

    Raises:
        ValueError: (when called) if the selection matches nothing (unless
            `missing_ok`), a dict patch's keys are not the selected paths, or
            a patch does not fit its output; each names the path.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pytreemod as ptm
        >>> from pytreemod import surgery
        >>> mlp = ptm.nn.MLP(2, 1, 4, 2, key=jax.random.key(0))
        >>> x = jnp.ones(2)
        >>> ablated = surgery.intervene(r"\.layers\[1\]", jnp.zeros_like)
        >>> y = ablated(mlp, x)  # the second hidden layer outputs zeros
        >>> bool(jnp.allclose(y, mlp.layers[2](jnp.zeros(4))))
        True
    """
    if fn is not None and not callable(fn):
        raise TypeError(
            "`intervene(selection, patch, fn)` takes a function `fn(model, ...)` "
            f"as `fn`; got {fn!r} (of type `{type(fn).__name__}`)."
        )
    return Intervened(
        fn=fn,
        patch=patch,
        selection=selection_of(selection, "intervene(selection, patch, fn)"),
        missing_ok=missing_ok,
    )
