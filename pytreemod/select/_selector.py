r"""`Selector`: which parts of a pytree a policy applies to.

A selector is a small, hashable query, built once and applied to any pytree
(a model, its gradients, an optimiser state, a `State`). Atoms test one node
of the tree each: its key path (`path`), its type (`instance`), the name it
has in its parent (`field`), or its value (`where`); `&`, `|` and `~` combine
them. An atom that holds at a node holds for the whole subtree below it, so
selecting a submodule selects all its leaves, and
`instance(nn.Linear) & field("bias")` selects the biases of every `Linear`.

Everything is decided in Python when a selector is applied, which happens
when a step is built or traced, never per call of a compiled step.
"""

import abc
import dataclasses
import difflib
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.tree_util as jtu

from .._module._is_array import is_array
from .._transform._filters import partition
from ._walk import Node, key_name, walk

__all__ = [
    "Selector",
    "SelectorLike",
    "as_selector",
    "everything",
    "field",
    "instance",
    "path",
    "where",
]

_NOTHING = """\
{what} matches nothing in this `{tree}`. A typo is the usual cause; {hint}
To allow a selection that matches nothing here, pass `missing_ok=True`."""

_NOT_A_SELECTOR = """\
Expected a selection: a `pytreemod.select` selector, a key-path pattern (a
`str` or `re.Pattern`, e.g. r"\\.head\\..*"), or a type (or tuple of types)
whose instances to select; got {got!r} (of type `{type}`)."""


def is_array_leaf(x: Any) -> bool:
    """Arrays, tracers and `jax.ShapeDtypeStruct`s: what policies act on."""
    return is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


class Selector(abc.ABC):
    """A query that selects parts of a pytree; see `pytreemod.select`.

    Build selectors with `path`, `instance`, `field`, `where` and
    `everything`, and combine them with `&` (both), `|` (either) and `~`
    (not). A selector is applied to a tree by its methods: `mask`, `pairs`,
    `nodes`, `apply`, `set`, `partition`. Calling it, `selector(tree)`, is
    `selector.mask(tree)`, so it can be given directly where optax wants a
    mask function (`optax.masked(tx, selector)`).

    Every method raises `ValueError` if a part of the selection (any atom)
    matches nothing, naming it and the nearest real paths, unless
    `missing_ok=True`: a typo should not silently train, freeze or decay
    nothing.

    Example:
        >>> import jax, pytreemod as ptm
        >>> from pytreemod import select
        >>> mlp = ptm.nn.MLP(2, 1, 4, 2, key=jax.random.key(0))
        >>> biases = select.instance(ptm.nn.Linear) & select.field("bias")
        >>> [p for p, _ in biases.pairs(mlp)]
        ['.layers[0].bias', '.layers[1].bias', '.layers[2].bias']
        >>> (~biases & select.where(ptm.is_array)).mask(mlp).layers[0]
        Linear(weight=True, bias=False, ...)
    """

    # -- combining ---------------------------------------------------------

    def __and__(self, other: "SelectorLike") -> "Selector":
        return _And(self, as_selector(other))

    def __rand__(self, other: "SelectorLike") -> "Selector":
        return _And(as_selector(other), self)

    def __or__(self, other: "SelectorLike") -> "Selector":
        return _Or(self, as_selector(other))

    def __ror__(self, other: "SelectorLike") -> "Selector":
        return _Or(as_selector(other), self)

    def __invert__(self) -> "Selector":
        return _Not(self)

    # -- what a subclass says ----------------------------------------------

    @abc.abstractmethod
    def atoms(self) -> tuple["_Atom", ...]:
        """The atoms this selector is built from."""

    @abc.abstractmethod
    def decide(self, holds: frozenset["_Atom"]) -> bool:
        """Whether a node is selected, given the atoms that hold there."""

    # -- applying ------------------------------------------------------------

    def __call__(self, tree: Any) -> Any:
        return self.mask(tree)

    def mask(self, tree: Any, *, missing_ok: bool = False) -> Any:
        """A pytree of `tree`'s structure with `True` at every selected leaf
        and `False` at every other, for `pytreemod.filter`/`partition` and
        `optax.masked`.

        Example:
            >>> import jax.numpy as jnp
            >>> from pytreemod import select
            >>> select.field("b").mask({"a": jnp.ones(2), "b": [1, 2]})
            {'a': False, 'b': [True, True]}
        """
        leaves = [
            selected
            for node, selected in self._decide(tree, missing_ok)
            if node.is_leaf
        ]
        return jtu.tree_unflatten(jtu.tree_structure(tree), leaves)

    def pairs(self, tree: Any, *, missing_ok: bool = False) -> list[tuple[str, Any]]:
        """The selected leaves as `(key path, leaf)` pairs, in flattening
        order; key paths are written as `jax.tree_util.keystr` writes them.

        Example:
            >>> from pytreemod import select
            >>> select.path(r"\\['a'\\].*").pairs({"a": [1, 2], "b": 3})
            [("['a'][0]", 1), ("['a'][1]", 2)]
        """
        return [
            (node.path_str, node.value)
            for node, selected in self._decide(tree, missing_ok)
            if selected and node.is_leaf
        ]

    def nodes(self, tree: Any, *, missing_ok: bool = False) -> list[tuple[str, Any]]:
        """The outermost selected subtrees (a selected Module, not also each
        of its leaves) as `(key path, subtree)` pairs, parents first.

        Example:
            >>> import jax, pytreemod as ptm
            >>> from pytreemod import select
            >>> mlp = ptm.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
            >>> [p for p, _ in select.instance(ptm.nn.Linear).nodes(mlp)]
            ['.layers[0]', '.layers[1]']
        """
        # A selected node counts even without leaves (`nn.Identity()`).
        decided = decide_all((self,), tree, missing_ok, leafless_counts=True)[0]
        return [
            (node.path_str, node.value)
            for node, selected in decided
            if selected and (node.parent < 0 or not decided[node.parent][1])
        ]

    def apply(
        self, tree: Any, fn: Callable[[Any], Any], *, missing_ok: bool = False
    ) -> Any:
        """`tree` with every selected leaf `x` replaced by `fn(x)`. Every other
        leaf is the same object as before, and the tree structure is unchanged
        wherever `fn` returns a leaf.

        Example:
            >>> from pytreemod import select
            >>> select.field("b").apply({"a": 1, "b": 2}, lambda x: 10 * x)
            {'a': 1, 'b': 20}
        """
        leaves = [
            fn(node.value) if selected else node.value
            for node, selected in self._decide(tree, missing_ok)
            if node.is_leaf
        ]
        return jtu.tree_unflatten(jtu.tree_structure(tree), leaves)

    def set(self, tree: Any, value: Any, *, missing_ok: bool = False) -> Any:
        """`tree` with every selected leaf replaced by `value`.

        Example:
            >>> from pytreemod import select
            >>> select.field("b").set({"a": 1, "b": [2, 3]}, 0)
            {'a': 1, 'b': [0, 0]}
        """
        return self.apply(tree, lambda _: value, missing_ok=missing_ok)

    def partition(self, tree: Any, *, missing_ok: bool = False) -> tuple[Any, Any]:
        """`(selected, rest)`: two trees of `tree`'s structure, the selected
        leaves in the first and every other leaf in the second, `None` in
        their place in the other (as `pytreemod.partition` makes them;
        `pytreemod.combine(selected, rest)` is `tree` again).

        Example:
            >>> from pytreemod import select
            >>> select.field("b").partition({"a": 1, "b": 2})
            ({'a': None, 'b': 2}, {'a': 1, 'b': None})
        """
        return partition(tree, self.mask(tree, missing_ok=missing_ok))

    # -- evaluation ------------------------------------------------------------

    def _decide(self, tree: Any, missing_ok: bool) -> list[tuple[Node, bool]]:
        return decide_all((self,), tree, missing_ok)[0]


SelectorLike = Selector | str | re.Pattern[str] | type | tuple[type, ...]


def decide_all(
    selectors: tuple[Selector, ...],
    tree: Any,
    missing_ok: bool,
    *,
    leafless_counts: bool = False,
) -> list[list[tuple[Node, bool]]]:
    """For each selector, every node of `tree` (walk order) with whether it is
    selected; one walk of the tree for all of them. Raises if an atom matches
    nothing, or a selector selects no leaf, unless `missing_ok`. With
    `leafless_counts`, a selected node without leaves counts too (surgery
    selects submodules such as `nn.Identity()`, which have none)."""
    atoms = tuple(dict.fromkeys(a for s in selectors for a in s.atoms()))
    hit = dict.fromkeys(atoms, False)
    holds_at: list[frozenset[_Atom]] = []
    nodes: list[Node] = []
    for node in walk(tree):
        inherited = holds_at[node.parent] if node.parent >= 0 else frozenset()
        here = {atom for atom in atoms if atom.holds(node)}
        for atom in here:
            hit[atom] = True
        holds_at.append(inherited | here)
        nodes.append(node)
    if not missing_ok:
        for atom, found in hit.items():
            if not found:
                raise ValueError(
                    _NOTHING.format(
                        what=f"The selection `{atom!r}`",
                        tree=type(tree).__name__,
                        hint=atom.hint(nodes),
                    )
                )
    decided = [
        [
            (node, selector.decide(holds))
            for node, holds in zip(nodes, holds_at, strict=True)
        ]
        for selector in selectors
    ]
    if not missing_ok:
        for selector, flags in zip(selectors, decided, strict=True):
            if not any(
                selected and (leafless_counts or node.is_leaf)
                for node, selected in flags
            ):
                raise ValueError(
                    _NOTHING.format(
                        what=f"The selection `{selector!r}`",
                        tree=type(tree).__name__,
                        hint="each part of it matches something, but no "
                        f"{'node' if leafless_counts else 'leaf'} is selected "
                        "by all of it together.",
                    )
                )
    return decided


def as_selector(x: Any) -> Selector:
    """`x` as a `Selector`: selectors as they are, a `str` or `re.Pattern` as
    `path(x)`, a type or tuple of types as `instance(*x)`."""
    if isinstance(x, Selector):
        return x
    if isinstance(x, (str, re.Pattern)):
        return path(x)
    if isinstance(x, type) or (
        isinstance(x, tuple) and x and all(isinstance(t, type) for t in x)
    ):
        return instance(*(x if isinstance(x, tuple) else (x,)))
    raise TypeError(_NOT_A_SELECTOR.format(got=x, type=type(x).__name__))


# -- atoms -----------------------------------------------------------------


class _Atom(Selector):
    """A selector that tests one node on its own."""

    def atoms(self) -> tuple["_Atom", ...]:
        return (self,)

    def decide(self, holds: frozenset["_Atom"]) -> bool:
        return self in holds

    @abc.abstractmethod
    def holds(self, node: Node) -> bool:
        """Whether this atom holds at `node` itself."""

    def hint(self, nodes: list[Node]) -> str:
        """What to say when this atom matches nothing in `nodes`."""
        return "check the selection against the tree (`pytreemod.tree_pprint`)."


@dataclasses.dataclass(frozen=True, repr=False)
class _Path(_Atom):
    pattern: re.Pattern[str]

    def holds(self, node: Node) -> bool:
        return self.pattern.fullmatch(node.path_str) is not None

    def hint(self, nodes: list[Node]) -> str:
        paths = [node.path_str for node in nodes if node.path]
        near = difflib.get_close_matches(self.pattern.pattern, paths, n=5, cutoff=0)
        lines = "\n".join(f"    {p}" for p in near)
        return (
            "a pattern must match a whole key path, as `jax.tree_util.keystr` "
            f"writes it. The nearest paths in the tree are\n{lines}\n"
        )

    def __repr__(self) -> str:
        return f"path({self.pattern.pattern!r})"


@dataclasses.dataclass(frozen=True, repr=False)
class _Instance(_Atom):
    types: tuple[type, ...]

    def holds(self, node: Node) -> bool:
        return isinstance(node.value, self.types)

    def hint(self, nodes: list[Node]) -> str:
        kinds = sorted({type(n.value).__qualname__ for n in nodes if not n.is_leaf})
        return f"the tree holds nodes of types {', '.join(kinds) or '(none)'}.\n"

    def __repr__(self) -> str:
        return f"instance({', '.join(t.__qualname__ for t in self.types)})"


@dataclasses.dataclass(frozen=True, repr=False)
class _Field(_Atom):
    names: tuple[str | int, ...]

    def holds(self, node: Node) -> bool:
        return bool(node.path) and key_name(node.path[-1]) in self.names

    def hint(self, nodes: list[Node]) -> str:
        known = sorted({str(key_name(n.path[-1])) for n in nodes if n.path})
        near = difflib.get_close_matches(str(self.names[0]), known, n=5, cutoff=0)
        return f"the nearest names in the tree are {', '.join(near) or '(none)'}.\n"

    def __repr__(self) -> str:
        return f"field({', '.join(map(repr, self.names))})"


@dataclasses.dataclass(frozen=True, repr=False)
class _Where(_Atom):
    predicate: Callable[[Any], bool]

    def holds(self, node: Node) -> bool:
        return node.is_leaf and bool(self.predicate(node.value))

    def __repr__(self) -> str:
        name = getattr(self.predicate, "__qualname__", repr(self.predicate))
        return f"where({name})"


@dataclasses.dataclass(frozen=True, repr=False)
class _Everything(_Atom):
    def holds(self, node: Node) -> bool:
        return not node.path

    def __repr__(self) -> str:
        return "everything()"


# -- combinations ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class _And(Selector):
    left: Selector
    right: Selector

    def atoms(self) -> tuple[_Atom, ...]:
        return self.left.atoms() + self.right.atoms()

    def decide(self, holds: frozenset[_Atom]) -> bool:
        return self.left.decide(holds) and self.right.decide(holds)

    def __repr__(self) -> str:
        return f"({self.left!r} & {self.right!r})"


@dataclasses.dataclass(frozen=True, repr=False)
class _Or(Selector):
    left: Selector
    right: Selector

    def atoms(self) -> tuple[_Atom, ...]:
        return self.left.atoms() + self.right.atoms()

    def decide(self, holds: frozenset[_Atom]) -> bool:
        return self.left.decide(holds) or self.right.decide(holds)

    def __repr__(self) -> str:
        return f"({self.left!r} | {self.right!r})"


@dataclasses.dataclass(frozen=True, repr=False)
class _Not(Selector):
    inner: Selector

    def atoms(self) -> tuple[_Atom, ...]:
        return self.inner.atoms()

    def decide(self, holds: frozenset[_Atom]) -> bool:
        return not self.inner.decide(holds)

    def __repr__(self) -> str:
        return f"~{self.inner!r}"


# -- constructors --------------------------------------------------------------


def path(pattern: str | re.Pattern[str]) -> Selector:
    r"""Select the subtrees whose key path matches `pattern`.

    The one path syntax of pytreemod (selection, sharding rules, policies):
    a Python regular expression that must match the *whole* key path as
    `jax.tree_util.keystr` writes it: `.head`, `.layers[0].weight`,
    `['w']`, `[0].mu.head.bias` (an optax state). A match at a submodule
    selects everything below it, so `r"\.head"` selects the head's weight
    and bias; `r".*\.weight"` selects every field called `weight`.

    Raises:
        ValueError: if `pattern` is not a valid regular expression.
        TypeError: if it is not a `str` or `re.Pattern`.

    Example:
        >>> import jax, pytreemod as ptm
        >>> from pytreemod import select
        >>> mlp = ptm.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
        >>> [p for p, _ in select.path(r"\.layers\[1\]").pairs(mlp)]
        ['.layers[1].weight', '.layers[1].bias']
    """
    if isinstance(pattern, str):
        try:
            pattern = re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"The key-path pattern {pattern!r} is not a valid regular "
                f"expression ({error}). Patterns are Python regular expressions "
                r'matched against the whole key path, e.g. r".*\.weight"; '
                r"escape a literal `.`, `[` or `]` with `\`."
            ) from None
    elif not isinstance(pattern, re.Pattern):
        raise TypeError(
            "`select.path` takes a regular expression (a `str` or `re.Pattern`) "
            f"matched against whole key paths; got {pattern!r} (of type "
            f"`{type(pattern).__name__}`)."
        )
    return _Path(pattern)


def instance(*types: type) -> Selector:
    """Select the subtrees that are instances of any of `types` (submodules
    such as every `nn.Linear` or every norm layer; or leaves, such as every
    `jax.Array`), with everything below them.

    Raises:
        TypeError: if no type is given, or an argument is not a type.

    Example:
        >>> import jax, pytreemod as ptm
        >>> from pytreemod import select
        >>> mlp = ptm.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
        >>> len(select.instance(ptm.nn.Linear).pairs(mlp))
        4
    """
    if not types:
        raise TypeError(
            "`select.instance` needs at least one type, e.g. "
            "`select.instance(pytreemod.nn.Linear)`."
        )
    for t in types:
        if not isinstance(t, type):
            raise TypeError(
                f"`select.instance` takes types (classes); got {t!r} (of type "
                f"`{type(t).__name__}`). To select by a test on values, use "
                "`select.where(predicate)`."
            )
    return _Instance(tuple(types))


def field(*names: str | int) -> Selector:
    """Select the subtrees held under any of `names` in their parent: a Module
    field or attribute, a dict key, or a sequence index; with everything
    below them.

    Raises:
        TypeError: if no name is given, or a name is not a `str` or `int`.

    Example:
        >>> import jax, pytreemod as ptm
        >>> from pytreemod import select
        >>> mlp = ptm.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
        >>> [p for p, _ in select.field("bias").pairs(mlp)]
        ['.layers[0].bias', '.layers[1].bias']
    """
    if not names:
        raise TypeError(
            "`select.field` needs at least one name, e.g. `select.field('bias')`."
        )
    for name in names:
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise TypeError(
                f"`select.field` takes field names, dict keys or indices (`str` "
                f"or `int`); got {name!r} (of type `{type(name).__name__}`)."
            )
    return _Field(tuple(names))


def where(predicate: Callable[[Any], bool]) -> Selector:
    """Select the leaves for which `predicate(leaf)` is true (a Python
    `bool`; it runs once per leaf when the selector is applied, not per call
    of a compiled step).

    Raises:
        TypeError: if `predicate` is not callable.

    Example:
        >>> import jax, pytreemod as ptm
        >>> from pytreemod import select
        >>> mlp = ptm.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
        >>> matrices = select.where(lambda x: ptm.is_array(x) and x.ndim == 2)
        >>> [p for p, _ in matrices.pairs(mlp)]
        ['.layers[0].weight', '.layers[1].weight']
    """
    if not callable(predicate):
        raise TypeError(
            "`select.where` takes a function `leaf -> bool`; got "
            f"{predicate!r} (of type `{type(predicate).__name__}`)."
        )
    return _Where(predicate)


def everything() -> Selector:
    """Select the whole tree (e.g. the last rule of a list, or `~everything()`
    for nothing).

    Example:
        >>> from pytreemod import select
        >>> select.everything().mask({"a": 1, "b": 2})
        {'a': True, 'b': True}
    """
    return _Everything()
