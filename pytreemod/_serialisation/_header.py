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

Version 3 is the header of a checkpoint folder (`_folder.py`), written by
many processes: each leaf lists its shards instead of one member, each shard
a box of the array (`start`, `stop`) stored as `member` of the data file of
the process that wrote it:

    {"format": "pytreemod-checkpoint", "version": 3, "metadata": ...,
     "data": "data-0123456789ab", "processes": 2,
     "leaves": [{"path": "w", "kind": "jax", "dtype": "float32",
                 "shape": [8, 4], "shards": [
                     {"start": [0, 0], "stop": [4, 4], "process": 0,
                      "member": "leaves/0/0", "crc32": 1234567890}, ...]}]}

The shards of a leaf must tile it as a grid (what every JAX sharding gives):
checked here, so that a crafted header cannot leave a gap or make two
shards overlap.
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
FOLDER_VERSION = 3
NAME = "header.json"
MAX_PROCESSES = 1 << 20
_DATA = re.compile(r"data-[0-9a-f]{12}")
# The decoded JSON takes up to ~20x its size in memory, so this bounds what a
# crafted header can cost (~160 MB) while leaving room for ~60,000 leaves.
MAX_BYTES = 8 << 20
MAX_NDIM = 64
KINDS = frozenset({"jax", "numpy", "numpy_scalar", "bool", "int", "float", "complex"})
_DTYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclasses.dataclass(frozen=True)
class Shard:
    """A box of a leaf's array, stored as `member` of one file: the checkpoint
    file itself (`process` is `None`), or the data file of `process`."""

    start: tuple[int, ...]
    stop: tuple[int, ...]
    process: int | None
    member: str
    crc32: int | None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))


@dataclasses.dataclass(frozen=True)
class Saved:
    """One leaf of the file, as its header declares it (already checked)."""

    path: str
    kind: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shards: tuple[Shard, ...]

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


def encode(
    metadata: Any, leaves: list[dict], version: int = VERSION, **fields: Any
) -> bytes:
    header = {"format": FORMAT, "version": version, "metadata": metadata, **fields}
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


def decode(
    data: bytes, path: Any, reads: tuple[int, ...] = READS
) -> tuple[Any, dict[str, Saved], dict]:
    """Parse and check a header read from `path`: `(metadata, leaves by key
    path, the header's other fields)`, or a `CheckpointError` saying which
    field is wrong. `reads` are the versions the container may hold (a file
    holds 1 or 2, a folder 3)."""

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
    if type(version) is not int or version not in reads:
        if type(version) is int and version in READS + (FOLDER_VERSION,):
            kind = "folder" if version == FOLDER_VERSION else "single file"
            raise bad(f"version {version} is the header of a {kind}")
        raise CheckpointError(
            f"{path} is a version {version!r:.20} checkpoint; this pytreemod "
            f"reads versions {', '.join(map(str, READS + (FOLDER_VERSION,)))}."
        )
    entries = header.get("leaves")
    if not isinstance(entries, list) or "metadata" not in header:
        raise bad('it lacks the "leaves" list or the "metadata"')
    processes = None
    if version == FOLDER_VERSION:
        processes = header.get("processes")
        if not (type(processes) is int and 1 <= processes <= MAX_PROCESSES):
            raise bad(f'"processes" is {processes!r:.40}, not a process count')
        data_folder = header.get("data")
        if not (isinstance(data_folder, str) and _DATA.fullmatch(data_folder)):
            raise bad(f'"data" is {data_folder!r:.40}, not a data folder name')
    saved: dict[str, Saved] = {}
    members: set[tuple[int | None, str]] = set()
    for i, entry in enumerate(entries):
        leaf = _check_entry(
            entry, version, processes, lambda why, i=i: bad(f"leaf {i} {why}")
        )
        if leaf.path in saved:
            raise bad(f"the path `{leaf.path}` appears twice")
        for shard in leaf.shards:
            key = (shard.process, shard.member)
            if key in members or shard.member == NAME:
                raise bad(f"the member `{shard.member}` is used twice")
            members.add(key)
        saved[leaf.path] = leaf
    return header["metadata"], saved, header


def _check_entry(entry: Any, version: int, processes: int | None, bad: Any) -> Saved:
    if not isinstance(entry, dict):
        raise bad(f"is {type(entry).__name__}, not an object")
    fields = ("path", "kind", "dtype") + (("member",) if processes is None else ())
    for field in fields:
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
    shape = tuple(shape)
    if processes is None:
        crc32 = _check_crc(entry, version, bad)
        whole = Shard((0,) * len(shape), shape, None, entry["member"], crc32)
        return Saved(entry["path"], entry["kind"], dtype, shape, (whole,))
    shards = entry.get("shards")
    if not isinstance(shards, list) or not shards:
        raise bad('has no "shards" list')
    checked = tuple(_check_shard(s, shape, processes, bad) for s in shards)
    _check_grid(checked, shape, bad)
    return Saved(entry["path"], entry["kind"], dtype, shape, checked)


def _check_crc(entry: dict, version: int, bad: Any) -> int | None:
    crc32 = entry.get("crc32")
    if version >= 2 and not (type(crc32) is int and 0 <= crc32 < 2**32):
        raise bad(f'has "crc32" = {crc32!r:.60}, not a CRC-32')
    return crc32


def _check_shard(shard: Any, shape: tuple, processes: int, bad: Any) -> Shard:
    if not isinstance(shard, dict):
        raise bad(f"has a shard that is {type(shard).__name__}, not an object")
    start, stop = shard.get("start"), shard.get("stop")
    ok = all(
        isinstance(box, list)
        and len(box) == len(shape)
        and all(type(i) is int for i in box)
        for box in (start, stop)
    )
    if not ok or not all(
        0 <= a <= b <= n for a, b, n in zip(start, stop, shape, strict=True)
    ):
        raise bad(
            f"has a shard from {start!r:.60} to {stop!r:.60}, which is not a box "
            f"of its shape {list(shape)}"
        )
    process = shard.get("process")
    if not (type(process) is int and 0 <= process < processes):
        raise bad(f'has a shard with "process" = {process!r:.40}')
    member = shard.get("member")
    if not isinstance(member, str):
        raise bad(f'has a shard with "member" = {member!r:.60}, not a string')
    crc32 = _check_crc(shard, FOLDER_VERSION, bad)
    return Shard(tuple(start), tuple(stop), process, member, crc32)


def _check_grid(shards: tuple[Shard, ...], shape: tuple, bad: Any) -> None:
    """The shards must be the cells of a grid over the array: along each
    dimension their intervals cut `[0, size)` into consecutive pieces, and
    every combination of pieces is one shard, exactly once."""
    cells = 1
    for dim, size in enumerate(shape):
        pieces = sorted({(s.start[dim], s.stop[dim]) for s in shards})
        end = 0
        for a, b in pieces:
            if a != end or (b == a and size):
                raise bad(
                    f"has shards that overlap or leave a gap along dimension {dim}"
                )
            end = b
        if end != size:
            raise bad(f"has shards that do not cover dimension {dim}")
        cells *= len(pieces)
    if len({(s.start, s.stop) for s in shards}) != len(shards) or cells != len(shards):
        raise bad("has shards that do not tile its array exactly once")
