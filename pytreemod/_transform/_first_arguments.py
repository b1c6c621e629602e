"""`FirstArguments`: the flatten of a Module passed again as the first
argument of a `filter_jit` function, reused while it cannot have changed."""

import weakref
from typing import Any

import jax


class _Flat:
    """A first argument's leaves and treedef, kept while the argument lives."""

    __slots__ = ("ref", "leaves", "treedef")

    def __init__(self, ref: Any, leaves: list[Any], treedef: Any):
        self.ref = ref
        self.leaves = leaves
        self.treedef = treedef


class FirstArguments:
    """Flattened first arguments, for calls that pass the same model again.

    Flattening a deep Module is most of a call's overhead, and a Module is
    frozen: when its whole subtree is made of Modules, tuples and `None`
    (no list or dict that could be mutated in place), its leaves and treedef
    never change, so they are kept (keyed by `id`, checked by a weak
    reference, dropped when the Module dies). A Module is kept the second time
    it is seen, so a training loop, which passes a new model every step, only
    pays for noting ids.
    """

    _MAX = 16

    def __init__(self) -> None:
        self.flats: dict[int, _Flat] = {}
        self.seen: dict[int, Any] = {}

    def clear(self) -> None:
        self.flats.clear()
        self.seen.clear()

    def note(self, arg: Any) -> None:
        key = id(arg)
        ref = self.seen.get(key)
        if ref is None or ref() is not arg:
            if len(self.seen) >= self._MAX:
                self.seen.clear()
            self.seen[key] = weakref.ref(arg)
            return
        leaves, treedef = jax.tree_util.tree_flatten(arg)
        if not _frozen(treedef):
            return
        if len(self.flats) >= self._MAX:
            self.flats.clear()
        flats = self.flats

        def forget(_: Any, key: int = key) -> None:
            flat = flats.get(key)
            if flat is not None and flat.ref() is None:
                del flats[key]

        flats[key] = _Flat(weakref.ref(arg, forget), leaves, treedef)


def _frozen(treedef: Any) -> bool:
    """Whether a pytree of this structure is immutable: only Modules, tuples
    (named or not) and `None` as nodes."""
    data = treedef.node_data()
    if data is None:
        return True
    node_type = data[0]
    if not (
        node_type is type(None)
        or issubclass(node_type, tuple)
        or hasattr(node_type, "__pytreemod_info__")
    ):
        return False
    return all(_frozen(child) for child in treedef.children())
