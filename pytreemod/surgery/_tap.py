"""`Tap`: the transparent wrapper that `capture` and `intervene` put around
each selected submodule for the duration of one call.

A Tap calls its submodule with the arguments it is given, then applies its
effects to the output, in order: patches (a function, or a value that must
have the output's shape and dtype), then recordings (into a `Recorder`). A
stateful submodule (called with a `State`, returning `(output, state)`) has
its output patched and recorded, never its state.

Taps do not nest: tapping an already tapped model (a `capture` around an
`intervene`) first takes the old Taps off, then puts one Tap at each path
with the effects of both, so that selections always read the model's own
paths (`.encoder.proj`, never `.encoder.proj.inner`).
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import jax.tree_util as jtu

from .._module._field import field
from .._module._pformat import tree_pformat
from .._state._state import State
from .._transform._recording import Recorder
from ..nn._sequential import _takes_state
from ..nn._stacked import Stacked
from ..nn._stateful import StatefulLayer
from ..select._walk import key_name, walk
from ._edit import Keys, rebuild, selected_nodes

__all__ = ["Patch", "Record", "Tap", "tap"]

_WRONG_PATCH = """\
The patch for `{path}` does not fit its output: the output is
    {expected}
but the patch is
    {got}
A value patch must have the output's structure, shapes and dtypes. {hint}Or
patch with a function of the output, e.g. `lambda y: jnp.zeros_like(y)`."""

_PATCH_HINT = """Inside an
`nn.Stacked`, a value carries the layer axis first (as `capture` gives it);
a submodule that its parent maps with `jax.vmap` (as `MultiheadAttention`
does with its projections) is patched per example, so a value cannot stand
for all examples there: patch the parent instead. """


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
    """Record the output into `recorder` (compared by identity)."""

    recorder: Recorder


@dataclasses.dataclass(frozen=True, eq=False)
class Patch:
    """Replace the output by `fn(output)`, or, with `fn=None`, by the Tap's
    value number `index` (held in `Tap.values`, so that a scan over the layers
    of an `nn.Stacked` gives each layer its own slice)."""

    fn: Callable[[Any], Any] | None
    index: int = -1


class Tap(StatefulLayer):
    """A selected submodule, called as it is, with its output patched and
    recorded; see the module docstring. Made by `capture` and `intervene`,
    only for the call they wrap.
    """

    inner: Any
    values: tuple[Any, ...]
    keys: Keys = field(static=True)
    effects: tuple[Patch | Record, ...] = field(static=True)

    def is_stateful(self) -> bool:
        return _takes_state(self.inner)

    def __getattr__(self, name: str) -> Any:
        # Attributes a parent reads from its child (`self.proj.weight`) come
        # from the wrapped submodule; only calls of the submodule itself are
        # patched and recorded. Dunders and the Tap's own fields (unset while
        # it is built) are never forwarded, so lookups cannot loop.
        if name.startswith("__") or name in _OWN:
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def path(self) -> str:
        return jtu.keystr(self.keys)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner(*args, **kwargs)
        stateful = (
            any(isinstance(a, State) for a in (*args, *kwargs.values()))
            and isinstance(out, tuple)
            and len(out) == 2
            and isinstance(out[1], State)
        )
        y = out[0] if stateful else out
        for effect in sorted(self.effects, key=lambda e: isinstance(e, Record)):
            if isinstance(effect, Patch):
                new = self.values[effect.index] if effect.fn is None else effect.fn(y)
                y = self._fit(y, new, value=effect.fn is None)
            else:
                effect.recorder.record(self.path, y)
        return (y, out[1]) if stateful else y

    def _fit(self, y: Any, new: Any, *, value: bool) -> Any:
        def describe(tree: Any) -> str:
            return tree_pformat(jtu.tree_map(jnp.asarray, tree))

        def fingerprint(tree: Any) -> Any:
            leaves, treedef = jtu.tree_flatten(tree)
            return treedef, [(jnp.shape(x), jnp.result_type(x)) for x in leaves]

        if fingerprint(y) != fingerprint(new):
            expected, got = describe(y), describe(new)
            raise ValueError(
                _WRONG_PATCH.format(
                    path=self.path,
                    expected=expected,
                    got=got,
                    hint=_PATCH_HINT if value else "",
                )
            )
        return new


_NO_LAYER_AXIS = """\
The patch for `{path}` is a value for a submodule inside `nn.Stacked` layers
({where}): its arrays must carry the layer axes first, as `capture` gives
them, i.e. start with {sizes}; got
    {got}
To patch every layer with the same value, broadcast it first:
    jnp.broadcast_to(value, ({sizes_code}, *value.shape))"""


_OWN = frozenset({"inner", "values", "keys", "effects"})


def _check_layer_axes(keys: Keys, values: Sequence[Any], by_path: dict) -> None:
    """A value patch for a submodule inside `nn.Stacked` layers starts with
    the layer axes (outermost stack first), which the stacks' scans slice."""
    sizes = tuple(
        by_path[keys[:i]].num_layers
        for i in range(len(keys))
        if isinstance(by_path[keys[:i]], Stacked) and key_name(keys[i]) == "layers"
    )
    if not sizes:
        return
    for leaf in jtu.tree_leaves(values):
        if tuple(jnp.shape(leaf)[: len(sizes)]) != sizes:
            where = ", ".join(f"{n} layers" for n in sizes)
            raise ValueError(
                _NO_LAYER_AXIS.format(
                    path=jtu.keystr(keys),
                    where=where,
                    sizes=sizes,
                    got=tree_pformat(jtu.tree_map(jnp.asarray, tuple(values))),
                    sizes_code=", ".join(map(str, sizes)),
                )
            )


def untap(tree: Any) -> tuple[Any, dict[Keys, Tap]]:
    """`tree` without its Taps, and the Taps taken off, by their path in it."""
    taps = [node.path for node in walk(tree) if isinstance(node.value, Tap)]
    if not taps:
        return tree, {}
    found: dict[Keys, Tap] = {}

    def take_off(t: Tap) -> Any:
        found[t.keys] = t
        return t.inner

    clean = rebuild(
        tree, dict.fromkeys(taps, take_off), check_types=False, per_layer=False
    )
    return clean, found


def tap(
    tree: Any,
    selection: Any,
    effect: Callable[[str], tuple[Patch | Record, Sequence[Any]]],
    *,
    missing_ok: bool,
) -> Any:
    """`tree` with a Tap around each outermost selected subtree, whose effects
    are those of the Tap already there (if any) and `effect(path)`: one
    effect, and the values it needs (for a value patch)."""
    clean, old = untap(tree)
    _, nodes = selected_nodes(selection, clean, missing_ok=missing_ok)
    new = {node.path: effect(jtu.keystr(node.path)) for node in nodes}
    if not new and not old:
        return tree
    if any(values for _, values in new.values()):
        by_path = {node.path: node.value for node in walk(clean)}
        for keys, (_, values) in new.items():
            _check_layer_axes(keys, values, by_path)

    def wrap(keys: Keys) -> Callable[[Any], Tap]:
        def make(inner: Any) -> Tap:
            effects: tuple[Patch | Record, ...] = ()
            values: tuple[Any, ...] = ()
            if keys in old:
                effects, values = old[keys].effects, old[keys].values
            if keys in new:
                added, added_values = new[keys]
                if isinstance(added, Patch) and added.fn is None:
                    added = Patch(None, len(values))
                effects = (*effects, added)
                values = (*values, *added_values)
            return Tap(inner=inner, values=values, keys=keys, effects=effects)

        return make

    edits = {keys: wrap(keys) for keys in {*old, *new}}
    return rebuild(clean, edits, check_types=False, per_layer=False)
