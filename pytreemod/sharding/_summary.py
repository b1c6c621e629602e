"""`summary`: what a model holds, as a table (and as data for tools).

It reads shapes, dtypes and shardings only: it never computes on an array,
so it runs on an abstract model from `filter_eval_shape` without allocating.
"""

import dataclasses
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from .._module._field import STATIC
from .._module._module import Module
from ._rules import RulesLike
from ._specs import is_array_leaf, logical_specs

__all__ = ["Summary", "summary"]

_COLUMNS = ("path", "type", "shape", "dtype", "params", "bytes", "axes", "sharding")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sharding(leaf: Any) -> str | None:
    if isinstance(leaf, np.ndarray | np.generic):
        return "host"
    if isinstance(leaf, jax.core.Tracer):
        return None
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        return None
    if isinstance(sharding, NamedSharding):
        return str(sharding.spec)
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        (device,) = sharding.device_set
        return f"{device.platform}:{device.id}"
    return type(sharding).__name__


def _axes(spec: Any) -> list[str | None] | None:
    if not isinstance(spec, PartitionSpec) or not any(n is not None for n in spec):
        return None
    return list(spec)


def _walk(node: Any, path: tuple, owner: str, out: "Summary", spec: Any) -> None:
    """Record `node`'s arrays, other leaves and static fields under `path`."""
    if is_array_leaf(node):
        shape = tuple(np.shape(node)) if not hasattr(node, "shape") else node.shape
        dtype = np.dtype(node.dtype)
        count = int(np.prod(shape, dtype=np.int64))
        out.arrays.append(
            {
                "path": jtu.keystr(path) or "<root>",
                "type": owner or type(node).__name__,
                "shape": list(shape),
                "dtype": dtype.name,
                "params": count,
                "bytes": count * dtype.itemsize,
                "axes": _axes(spec),
                "sharding": _sharding(node),
            }
        )
        return
    entries, treedef = jtu.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if len(entries) == 1 and entries[0][0] == ():  # a leaf that is not an array
        out.other.append(
            {
                "path": jtu.keystr(path) or "<root>",
                "type": type(node).__name__,
                "value": _short(node),
            }
        )
        return
    spec_children = treedef.flatten_up_to(spec)
    if isinstance(node, Module):
        owner = type(node).__name__
        static = {
            f.name: _short(node.__dict__[f.name])
            for f in dataclasses.fields(node)
            if f.metadata.get(STATIC, False) and f.repr and f.name in node.__dict__
        }
        if static:
            out.static.append(
                {"path": jtu.keystr(path) or "<root>", "type": owner, "fields": static}
            )
    for ((key,), child), child_spec in zip(entries, spec_children, strict=True):
        _walk(child, (*path, key), owner, out, child_spec)


@dataclasses.dataclass
class Summary:
    """What a pytree holds: `str(summary)` is a table, `to_dict()` the data.

    Made by `pytreemod.summary`; see there.

    Example:
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> s = pytreemod.summary({"w": jnp.ones((2, 3))})
        >>> s.to_dict()["total"]
        {'arrays': 1, 'params': 6, 'bytes': 24}
    """

    arrays: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    other: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    static: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def _totals(self, rows: list[dict[str, Any]]) -> dict[str, int]:
        return {
            "arrays": len(rows),
            "params": sum(r["params"] for r in rows),
            "bytes": sum(r["bytes"] for r in rows),
        }

    def _by_field(self) -> dict[str, dict[str, int]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in self.arrays:
            path = row["path"]
            # The top-level field: `.blocks` of `.blocks.layers[0].weight`.
            cut = min(
                (i for i in (path.find(".", 1), path.find("[", 1)) if i > 0),
                default=len(path),
            )
            groups.setdefault(path[:cut], []).append(row)
        return {name: self._totals(rows) for name, rows in groups.items()}

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain data (lists, dicts, strings, ints) for tools.

        Returns:
            `{"arrays": [...], "other": [...], "static": [...], "fields":
            {top-level field: totals}, "total": totals}`, where each array
            row has the keys `path`, `type`, `shape`, `dtype`, `params`,
            `bytes`, `axes` (logical names or `None`) and `sharding` (a
            `PartitionSpec` as text, a device, `"host"` or `None`), and
            totals are `{"arrays", "params", "bytes"}`.
        """
        return {
            "arrays": [dict(row) for row in self.arrays],
            "other": [dict(row) for row in self.other],
            "static": [dict(row) for row in self.static],
            "fields": self._by_field(),
            "total": self._totals(self.arrays),
        }

    def __str__(self) -> str:
        def cells(row: dict[str, Any]) -> list[str]:
            return [
                row["path"],
                row["type"],
                "(" + ", ".join(map(str, row["shape"])) + ")"
                if len(row["shape"]) != 1
                else f"({row['shape'][0]},)",
                row["dtype"],
                f"{row['params']:,}",
                _size(row["bytes"]),
                "-"
                if row["axes"] is None
                else "(" + ", ".join(map(str, row["axes"])) + ")",
                row["sharding"] or "-",
            ]

        body = [cells(row) for row in self.arrays]

        def total(name: str, t: dict[str, int]) -> list[str]:
            arrays = f"{t['arrays']} array" + ("" if t["arrays"] == 1 else "s")
            row = [f"{name} ({arrays})", "", "", "", f"{t['params']:,}"]
            return [*row, _size(t["bytes"]), "", ""]

        # A top-level field gets a total of its own when it holds several arrays.
        footer = [
            total(name, t) for name, t in self._by_field().items() if t["arrays"] > 1
        ]
        footer.append(total("total", self._totals(self.arrays)))
        table = [list(_COLUMNS), *body, *footer]
        widths = [max(len(r[i]) for r in table) for i in range(len(_COLUMNS))]
        right = {4, 5}

        def line(r: list[str]) -> str:
            return "  ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()

        rule = "  ".join("-" * w for w in widths)
        lines = [line(table[0]), rule, *map(line, body), rule, *map(line, footer)]
        if self.static or self.other:
            lines += ["", "static fields and other leaves:"]
            for row in self.static:
                fields = ", ".join(f"{k}={v}" for k, v in row["fields"].items())
                lines.append(f"  {row['path']}  {row['type']}  {fields}")
            for row in self.other:
                lines.append(f"  {row['path']}  {row['type']}  {row['value']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        t = self._totals(self.arrays)
        return (
            f"Summary({t['arrays']} arrays, {t['params']:,} parameters, "
            f"{_size(t['bytes'])})"
        )


def summary(tree: Any, rules: RulesLike | None = None) -> Summary:
    """A table of what `tree` holds: one row per array, totals, static fields.

    Each array row gives its key path, the Module class holding it (or the
    array's own type outside Modules), shape, dtype, parameter count
    (elements), bytes, logical axis names (`pytreemod.field(axes=...)` or
    `rules`, as in `pytreemod.sharding.logical_specs`) and sharding (the mesh
    `PartitionSpec`, the device, or `host` for NumPy arrays). Totals follow
    per top-level field and overall; static fields and non-array leaves are
    listed compactly below. It reads only shapes, dtypes and shardings, so an
    abstract model from `filter_eval_shape` works and allocates nothing.

    Args:
        tree: any pytree: a model, an abstract model, an optimiser state.
        rules: `(selection, axes)` pairs naming arrays by key path, type
            or selector (as in `logical_specs`).

    Returns:
        A `Summary`: `print` it for the table, `.to_dict()` for the data.

    Example:
        >>> import jax
        >>> import pytreemod
        >>> model = pytreemod.filter_eval_shape(
        ...     pytreemod.nn.Linear, 3, 2, key=jax.random.key(0))
        >>> print(pytreemod.summary(model))
        path              type    shape   dtype    params  bytes  axes  sharding
        ----------------  ------  ------  -------  ------  -----  ----  --------
        .weight           Linear  (2, 3)  float32       6   24 B  -     -
        .bias             Linear  (2,)    float32       2    8 B  -     -
        ----------------  ------  ------  -------  ------  -----  ----  --------
        total (2 arrays)                                8   32 B
        <BLANKLINE>
        static fields and other leaves:
          <root>  Linear  in_features=3, out_features=2, use_bias=True
    """
    specs = logical_specs(tree, rules)
    out = Summary()
    _walk(tree, (), "", out, specs)
    return out
