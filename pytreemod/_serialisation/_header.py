"""The checkpoint header (`header.json`): what it holds, and checking every
field of one read from a file before anything is trusted.

Version 2, written by `save`:

    {"format": "pytreemod-checkpoint", "version": 2, "metadata": ...,
     "leaves": [{"path": "layers[0].weight", "member": "leaves/0",
                 "kind": "jax", "dtype": "float32", "shape": [3, 3],
                 "crc32": 1234567890}, ...]}

The per-leaf `crc32` binds each member's bytes to its entry, so a member
swapped or replaced inside the archive is caught, not only a damaged one.
Version 1 (no `crc32`) is still read.
"""

import dataclasses
import json
import math
import re
import warnings
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._errors import CheckpointError

FORMAT = "pytreemod-checkpoint"
VERSION = 2
READS = (1, 2)
NAME = "header.json"
# The decoded JSON takes up to ~20x its size in memory, so this bounds what a
# crafted header can cost (~160 MB) while leaving room for ~60,000 leaves.
MAX_BYTES = 8 << 20
MAX_NDIM = 64
KINDS = frozenset({"jax", "numpy", "numpy_scalar", "bool", "int", "float", "complex"})
_DTYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclasses.dataclass(frozen=True)
class Saved:
    """One leaf of the file, as its header declares it (already checked)."""

    path: str
    member: str
    kind: str
    dtype: np.dtype
    shape: tuple[int, ...]
    crc32: int | None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"{self.dtype.name}{list(self.shape)}"


def dtype_from_name(name: Any) -> np.dtype | None:
    """The dtype called `name` if a checkpoint may hold it, else `None`:
    numbers and booleans, bfloat16 and the float8/int4 types included;
    never objects, strings, structured or void dtypes."""
    if not isinstance(name, str) or _DTYPE_NAME.fullmatch(name) is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dtype = jnp.dtype(name)
    except (TypeError, ValueError, Warning):
        return None
    if (
        dtype.name != name
        or dtype.kind not in "biufcV"
        or dtype.hasobject
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.itemsize == 0
        or name.startswith("void")
    ):
        return None
    return dtype


def encode(metadata: Any, leaves: list[dict]) -> bytes:
    header = {"format": FORMAT, "version": VERSION, "metadata": metadata}
    try:
        data = json.dumps({**header, "leaves": leaves}, allow_nan=True).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(f"`metadata` must be JSON-serialisable: {e}") from None
    if len(data) > MAX_BYTES:
        raise CheckpointError(
            f"the checkpoint header would take {len(data)} bytes, more than the "
            f"{MAX_BYTES} that `load` accepts (it bounds what a crafted file can "
            "cost). Store less `metadata`, or fewer, larger leaves (e.g. stack "
            "repeated layers)."
        )
    return data


def decode(data: bytes, path: Any) -> tuple[Any, dict[str, Saved]]:
    """Parse and check a header read from `path`: `(metadata, leaves by key
    path)`, or a `CheckpointError` saying which field is wrong."""

    def bad(why: str) -> CheckpointError:
        return CheckpointError(
            f"{path} has a damaged header: {why}. Nothing was loaded; restore the "
            "file from a backup or save it again."
        )

    try:
        header = json.loads(data)
    except RecursionError:
        raise bad("it is nested too deeply") from None
    except ValueError as e:  # includes JSON and UTF-8 decoding errors
        raise bad(f"it is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad(f"it is a JSON {type(header).__name__}, not an object")
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a pytreemod checkpoint: its header does not say "
            f'"format": "{FORMAT}".'
        )
    version = header.get("version")
    if type(version) is not int or version not in READS:
        raise CheckpointError(
            f"{path} is a version {version!r:.20} checkpoint; this pytreemod "
            f"reads versions {', '.join(map(str, READS))}."
        )
    entries = header.get("leaves")
    if not isinstance(entries, list) or "metadata" not in header:
        raise bad('it lacks the "leaves" list or the "metadata"')
    saved: dict[str, Saved] = {}
    members: set[str] = set()
    for i, entry in enumerate(entries):
        leaf = _check_entry(entry, version, lambda why, i=i: bad(f"leaf {i} {why}"))
        if leaf.path in saved:
            raise bad(f"the path `{leaf.path}` appears twice")
        if leaf.member in members or leaf.member == NAME:
            raise bad(f"the member `{leaf.member}` is used twice")
        saved[leaf.path] = leaf
        members.add(leaf.member)
    return header["metadata"], saved


def _check_entry(entry: Any, version: int, bad: Any) -> Saved:
    if not isinstance(entry, dict):
        raise bad(f"is {type(entry).__name__}, not an object")
    for field in ("path", "member", "kind", "dtype"):
        if not isinstance(entry.get(field), str):
            raise bad(f'has "{field}" = {entry.get(field)!r:.60}, not a string')
    if entry["kind"] not in KINDS:
        raise bad(f"has the unknown kind {entry['kind']!r:.60}")
    dtype = dtype_from_name(entry["dtype"])
    if dtype is None:
        raise bad(
            f"has the dtype {entry['dtype']!r:.60}, which is not one `save` writes"
        )
    shape = entry.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise bad(f'has "shape" = {shape!r:.60}, not a list of sizes')
    crc32 = entry.get("crc32")
    if version >= 2 and not (type(crc32) is int and 0 <= crc32 < 2**32):
        raise bad(f'has "crc32" = {crc32!r:.60}, not a CRC-32')
    return Saved(
        entry["path"], entry["member"], entry["kind"], dtype, tuple(shape), crc32
    )
