"""Rebuilding a pytree with some of its subtrees, given by key path, edited.

Every edit of `pytreemod.surgery` comes down to `rebuild(tree, edits)`: a map
from key paths (tuples of JAX keys, as `jax.tree_util` gives them) to
functions `old subtree -> new subtree`. The tree is rebuilt along those paths
only, bottom up (an edit sees its subtree with the edits below it already
made); every subtree off them is returned as the very same object.

Two checks, each naming the path:

* A Module field declared with a plain class (`proj: nn.Linear`) must hold an
  instance of it after the edit (`check_types`).
* Inside an `nn.Stacked`, the layers are one Module whose arrays carry a
  leading layer axis. With `per_layer`, an edit there is applied to each
  layer in turn (it sees an ordinary layer, as outside a stack), and the
  results are stacked again, which needs them to be identical in structure,
  static fields, shapes and dtypes. Without it (the recording wrappers of
  `capture`, which add no arrays of their own), the edit sees the stacked
  layer as it is.
"""

import dataclasses
import typing
import weakref
from collections.abc import Callable
from typing import Any

import jax.tree_util as jtu

from .._module._is_array import is_array
from .._module._module import Module
from .._module._tree_flatten_one_level import flatten_one_level_with_path
from ..nn._stacked import Stacked, _stack
from ..select._selector import Selector, as_selector, decide_all
from ..select._walk import Node, key_name

__all__ = ["Edits", "rebuild", "selected_nodes"]

Keys = tuple[Any, ...]
Edits = dict[Keys, Callable[[Any], Any]]

_WRONG_TYPE = """\
The replacement at `{path}` is a `{got}`, but `{owner}.{field}` is declared as
`{declared}`: code of `{owner}` may rely on it. Either
  1. replace it by an instance of `{declared}` (a subclass of it, or a wrapper
     that is one), or
  2. pass `check_types=False` if `{owner}` only calls it."""

_NOT_UNIFORM = """\
The replacement at `{path}` is inside the `nn.Stacked` at `{stack}`, whose
{num_layers} layers are one layer with stacked arrays; the replacement is made
for each layer and the results stacked again, so it must give every layer the
same structure, static fields, shapes and dtypes. {error}"""


def selected_nodes(
    selection: Any, tree: Any, *, missing_ok: bool
) -> tuple[Selector, list[Node]]:
    """The outermost selected subtrees of `tree` (as `Selector.nodes` gives
    them), as walk `Node`s with their key paths."""
    selector = as_selector(selection)
    decided = decide_all((selector,), tree, missing_ok, leafless_counts=True)[0]
    nodes = [
        node
        for node, selected in decided
        if selected and (node.parent < 0 or not decided[node.parent][1])
    ]
    return selector, nodes


def rebuild(
    tree: Any, edits: Edits, *, check_types: bool = True, per_layer: bool = True
) -> Any:
    """`tree` with the subtree at each path of `edits` replaced by
    `edits[path](subtree)`; see the module docstring."""
    if not edits:
        return tree
    below = {keys[:i] for keys in edits for i in range(len(keys))}

    def go(node: Any, keys: Keys, layers: tuple[tuple[Keys, int], ...]) -> Any:
        if keys in below:
            pairs, treedef = flatten_one_level_with_path(node)
            children = []
            changed = False
            for (key,), child in pairs:
                child_keys = (*keys, key)
                inner = layers
                if isinstance(node, Stacked) and key_name(key) == "layers":
                    inner = (*layers, (keys, node.num_layers))
                new = go(child, child_keys, inner)
                if new is not child:
                    changed = True
                    if check_types:
                        _check_declared(node, key, new, child_keys)
                children.append(new)
            if changed:
                node = treedef.unflatten(children)
        if keys in edits:
            edit = edits[keys]
            if per_layer and layers:
                edit = _each_layer(edit, keys, layers)
            node = edit(node)
        return node

    return go(tree, (), ())


def _each_layer(
    edit: Callable[[Any], Any], keys: Keys, layers: tuple[tuple[Keys, int], ...]
) -> Callable[[Any], Any]:
    """`edit` applied to each layer of the enclosing `Stacked`s (outermost
    first) and the results stacked again."""
    for stack_keys, num_layers in reversed(layers):
        edit = _per_layer(edit, keys, stack_keys, num_layers)
    return edit


def _per_layer(
    edit: Callable[[Any], Any], keys: Keys, stack_keys: Keys, num_layers: int
) -> Callable[[Any], Any]:
    def each(stacked: Any) -> Any:
        results = [edit(_layer(stacked, i)) for i in range(num_layers)]
        try:
            return _stack(results)
        except ValueError as error:
            raise ValueError(
                _NOT_UNIFORM.format(
                    path=jtu.keystr(keys),
                    stack=jtu.keystr(stack_keys) or "(the root)",
                    num_layers=num_layers,
                    error=error,
                )
            ) from None

    return each


def _layer(stacked: Any, i: int) -> Any:
    """Layer `i` of a stacked layer, as `Stacked.__getitem__` gives it."""
    return jtu.tree_map(lambda x: x[i] if is_array(x) else x, stacked)


def _check_declared(parent: Any, key: Any, new: Any, keys: Keys) -> None:
    """A Module field declared as a plain class must hold an instance of it."""
    if not (isinstance(parent, Module) and isinstance(key, jtu.GetAttrKey)):
        return
    declared = _declared_types(type(parent)).get(key.name)
    if declared is None or isinstance(new, declared):
        return
    raise TypeError(
        _WRONG_TYPE.format(
            path=jtu.keystr(keys),
            got=type(new).__qualname__,
            owner=type(parent).__qualname__,
            field=key.name,
            declared=declared.__qualname__,
        )
    )


# Class -> its fields declared as plain classes. Keyed by the class, whose
# annotations fix the answer; weak, so classes made in a loop can go.
_DECLARED: "weakref.WeakKeyDictionary[type, dict[str, type]]" = (
    weakref.WeakKeyDictionary()
)


def _declared_types(cls: type) -> dict[str, type]:
    """The fields of `cls` declared as a plain class (not `Any`, a union, a
    generic alias, a type variable or a string that does not resolve); keyed
    by class, which fixes its annotations."""
    try:
        return _DECLARED[cls]
    except KeyError:
        pass
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: check what does
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
    names = {f.name for f in dataclasses.fields(cls)}
    declared = {
        name: hint
        for name, hint in hints.items()
        if name in names and isinstance(hint, type) and hint is not object
    }
    _DECLARED[cls] = declared
    return declared
