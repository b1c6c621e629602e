"""Path-keyed checkpoints: `save`, `load`, `load_metadata`.

A checkpoint is an uncompressed zip archive: one raw-bytes member per saved
leaf and `header.json` (see `_header.py`: format version, user metadata, and
for every leaf its key path, kind, dtype, shape, member and CRC-32). Leaves
are matched by key path (`layers[2].weight`), not by position, so a
checkpoint still loads after fields are reordered or layers are added.

Loading is safe on a file from anyone: `_archive.py` bounds and checks the
archive before any member is read, `_header.py` checks every header field,
and here each leaf's declared dtype and shape are compared with `like`
before its bytes are read, so memory stays at about the size of `like`.
Nothing is unpickled or evaluated. Writing goes through
`_atomic.replace_atomically`.

On many processes (JAX's multi-controller runtime) `save` writes a folder
instead (`_folder.py`): each process writes the shards it owns, process 0
commits. `load` reads either; a leaf is a grid of shards in both (one shard
in a file), and each process reads only the shards that overlap the parts of
each array its own devices hold (`_read_leaf`).
"""

import dataclasses
import itertools
import math
import os
import warnings
import zipfile
from typing import IO, Any, Literal, TypeVar, overload

import jax
import jax.numpy as jnp
import numpy as np

from .._module._is_array import is_array_like
from .._transform._shard import _resolve_shardings
from . import _folder, _header
from ._archive import MAX_MEMBERS, Archive
from ._atomic import replace_atomically
from ._errors import CheckpointError
from ._layout import Box, box_of

_T = TypeVar("_T")


class CheckpointMismatchWarning(UserWarning):
    """Raised as a warning by `load(..., strict=False)` when the checkpoint
    and `like` differ. Its attributes `missing`, `unexpected` and `mismatched`
    list the key paths (for `mismatched`: `(path, in_file, in_like)`).

    Example:
        >>> import pytreemod
        >>> w = pytreemod.CheckpointMismatchWarning(["a"], [], [])
        >>> w.missing
        ['a']
    """

    def __init__(self, missing: list, unexpected: list, mismatched: list):
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
        super().__init__(_describe(missing, unexpected, mismatched))


@dataclasses.dataclass(frozen=True)
class _Entry:
    kind: str  # "jax", "numpy", "numpy_scalar", or a Python type name
    dtype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


_PYTHON_TYPES = {t.__name__: t for t in (bool, int, float, complex)}


def _kind(leaf: Any) -> str:
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        return "jax"
    if isinstance(leaf, np.ndarray):
        return "numpy"
    if isinstance(leaf, np.generic):
        return "numpy_scalar"
    return type(leaf).__name__


def _entry(leaf: Any) -> _Entry:
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
        return _Entry(_kind(leaf), jnp.dtype(leaf.dtype).name, tuple(leaf.shape))
    return _Entry(_kind(leaf), np.asarray(leaf).dtype.name, ())


def _path_key(key_path: Any) -> str:
    """How a leaf is named in a checkpoint: `layers[2].weight`."""
    return jax.tree_util.keystr(key_path).removeprefix(".") or "<root>"


def _saved_leaves(tree: Any) -> dict[str, Any]:
    """The array-like leaves of `tree` by key path."""
    found: dict[str, Any] = {}
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not (is_array_like(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)):
            continue
        path = _path_key(key_path)
        if path in found:
            raise CheckpointError(
                f"two leaves have the same key path `{path}`; a path-keyed "
                "checkpoint needs distinct paths. Use `tree_serialise_leaves` "
                "for this pytree."
            )
        found[path] = leaf
    return found


def save(path: str | os.PathLike, pytree: Any, *, metadata: Any = None) -> None:
    """Save the array leaves of `pytree` under their key paths, atomically.

    Every array, NumPy scalar and Python number leaf is stored with its key
    path (`layers[2].weight`), dtype (bfloat16 and float8 included) and
    shape; other leaves (functions, strings, static fields) are not saved
    and come from `like` when loading. The file is written to a temporary
    name in the same folder, flushed, fsynced and renamed over `path`, so a
    crash never leaves a half-written checkpoint behind.

    On many processes (after `jax.distributed.initialize`) every process
    calls `save` with the same arguments, and `path` is a folder: each
    process writes only the shards it holds (each distinct shard once, by one
    of the processes holding it), process 0 waits for all of them and
    commits last. A reader sees the new checkpoint whole or the previous
    one; see the guide's "Many processes" page.

    Args:
        path: where to write; the file is replaced if it exists. If `path`
            is a checkpoint folder (or more than one process saves), a folder
            checkpoint is written there instead.
        pytree: any pytree, e.g. a model, or `(model, state)`.
        metadata: anything JSON can encode (step count, config, ...), read
            back with `load_metadata`.

    Example:
        >>> import tempfile, os
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> path = os.path.join(tempfile.mkdtemp(), "model.ckpt")
        >>> pytreemod.save(path, {"w": jnp.ones(2)}, metadata={"step": 3})
        >>> pytreemod.load(path, {"w": jnp.zeros(2)})["w"]
        Array([1., 1.], dtype=float32)
        >>> pytreemod.load_metadata(path)
        {'step': 3}
    """
    leaves = _saved_leaves(pytree)
    if len(leaves) >= MAX_MEMBERS:
        raise CheckpointError(
            f"the pytree has {len(leaves)} array leaves; a checkpoint holds at "
            f"most {MAX_MEMBERS - 1}. Stack repeated layers into fewer arrays."
        )
    entries, arrays = [], []
    for index, (key, leaf) in enumerate(leaves.items()):
        if isinstance(leaf, jax.ShapeDtypeStruct):
            raise CheckpointError(
                f"the leaf at `{key}` is a ShapeDtypeStruct, which has no values "
                "to save. Save a real model, not a `filter_eval_shape` skeleton."
            )
        entry = _entry(leaf)
        if _header.dtype_from_name(entry.dtype) is None:
            raise CheckpointError(
                f"the leaf at `{key}` has dtype {entry.dtype}; a checkpoint holds "
                "only numbers and booleans."
            )
        entries.append(
            {"path": key, "member": f"leaves/{index}", **dataclasses.asdict(entry)}
        )
        arrays.append(leaf)
    _header.encode(metadata, entries)  # fail early on bad metadata
    if jax.process_count() > 1 or os.path.isdir(path):
        for entry in entries:
            del entry["member"]
        _folder.save(path, entries, arrays, metadata)
        return

    def write(file: IO[bytes]) -> None:
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            for entry, leaf in zip(entries, arrays, strict=True):
                data = np.asarray(leaf)
                data = data.astype(data.dtype.newbyteorder("="), copy=False)
                raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
                archive.writestr(entry["member"], raw.data)
                entry["crc32"] = archive.getinfo(entry["member"]).CRC
            # Last, so that it can hold every member's CRC-32.
            archive.writestr(_header.NAME, _header.encode(metadata, entries))

    replace_atomically(path, write)


class _File:
    """An open single-file checkpoint, read like a folder: each leaf is one
    shard, stored in this file."""

    def __init__(self, path: Any):
        self.path = path
        self._archive = Archive(path)
        try:
            data = self._archive.read(_header.NAME, limit=_header.MAX_BYTES)
            self.metadata, self.saved, _ = _header.decode(data, path)
            members = {_header.NAME} | {
                shard.member for leaf in self.saved.values() for shard in leaf.shards
            }
            present = set(self._archive.members)
            if members != present:
                raise self._archive.error(
                    f"its members {sorted(present - members)} are not in the header"
                    if present - members
                    else f"the header's members {sorted(members - present)} are missing"
                )
        except BaseException:
            self._archive.__exit__()
            raise

    def __enter__(self) -> "_File":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._archive.__exit__()

    def archive_for(self, shard: _header.Shard) -> Archive:
        return self._archive


def _open(path: Any) -> "_File | _folder.Folder":
    """The checkpoint at `path`, a file or a folder, open for reading (a
    context manager that closes it)."""
    return _folder.Folder(path) if os.path.isdir(path) else _File(path)


def load_metadata(path: str | os.PathLike) -> Any:
    """Return the `metadata` that `save` stored in a checkpoint.

    Reads only the header (its size is bounded). To read weights and
    metadata of the same save, use `load(path, like, with_metadata=True)`:
    two separate calls may see two different saves if another process saves
    to `path` in between.

    Raises:
        CheckpointError: if the file is not a readable checkpoint.

    Example:
        >>> import tempfile, os
        >>> import pytreemod
        >>> path = os.path.join(tempfile.mkdtemp(), "m.ckpt")
        >>> pytreemod.save(path, [1.0], metadata={"epoch": 2})
        >>> pytreemod.load_metadata(path)
        {'epoch': 2}
    """
    with _open(path) as reader:
        return reader.metadata


@overload
def load(
    path: str | os.PathLike,
    like: _T,
    *,
    strict: bool = True,
    with_metadata: Literal[False] = False,
    shardings: Any = None,
) -> _T: ...


@overload
def load(
    path: str | os.PathLike,
    like: _T,
    *,
    strict: bool = True,
    with_metadata: bool,
    shardings: Any = None,
) -> Any: ...


def load(
    path: str | os.PathLike,
    like: _T,
    *,
    strict: bool = True,
    with_metadata: bool = False,
    shardings: Any = None,
) -> Any:
    """Load a checkpoint written by `save` into a pytree shaped like `like`.

    Leaves are matched by key path. `like` gives the structure, the non-array
    leaves and the expected dtypes and shapes; it may be a freshly built model
    or a `filter_eval_shape` skeleton. Arrays are placed with `shardings`
    where given, else with the sharding of `like`'s arrays when it has one
    (a sharded model, or a skeleton placed by `pytreemod.sharding.shard`).
    A sharded array is built shard by shard from the bytes read
    (`jax.make_array_from_callback`): each device receives only its own
    slice, and no device ever holds the whole array. On many processes every
    process calls `load` with the same arguments, and each reads from disk
    only the saved shards that overlap its own devices' slices; the mesh and
    the process count may differ from the save's.

    Args:
        path: the checkpoint: a file, or a folder written by many processes.
        like: a pytree of the expected structure.
        strict: if `True`, any path missing from the file, unexpected in it,
            or saved with another shape/dtype is an error listing all of them.
            If `False`, what matches is loaded, everything else keeps `like`'s
            value, and a `CheckpointMismatchWarning` lists the differences.
        with_metadata: if `True`, return `(pytree, metadata)`, both read
            through one open file, so they come from the same save even if
            another process replaces `path` meanwhile.
        shardings: where to put the loaded arrays: a `jax.sharding.Sharding`
            or `jax.Device` for all of them, or a pytree prefix of `like` of
            those (`None` for "as `like`"), e.g. the result of
            `pytreemod.sharding.named_shardings(like, mesh, axis_rules)`.

    Returns:
        A pytree like `like` holding the loaded values, or `(pytree,
        metadata)` with `with_metadata=True`.

    Raises:
        CheckpointError: on a mismatch under `strict=True`, or if the file is
            truncated, corrupted, crafted or of the other format (never a
            partial load). Safe on files from anyone: nothing is unpickled or
            evaluated, and no file makes it allocate much more than `like`.

    Example:
        >>> import tempfile, os
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> path = os.path.join(tempfile.mkdtemp(), "m.ckpt")
        >>> pytreemod.save(path, {"a": jnp.ones(2)})
        >>> tree, meta = pytreemod.load(path, {"a": jnp.zeros(2)}, with_metadata=True)
        >>> pytreemod.load(path, {"a": jnp.zeros(3)})
        Traceback (most recent call last):
        ...
        pytreemod._serialisation._errors.CheckpointError: ...
    """
    with _open(path) as reader:
        tree = _load(reader, like, strict, shardings)
    return (tree, reader.metadata) if with_metadata else tree


def _load(reader: Any, like: Any, strict: bool, shardings: Any = None) -> Any:
    path, saved = reader.path, reader.saved
    wanted = _saved_leaves(like)
    missing = [p for p in wanted if p not in saved]
    unexpected = [p for p in saved if p not in wanted]
    mismatched = []
    for key in wanted.keys() & saved.keys():
        in_file = saved[key]
        in_like = _entry(wanted[key])
        if (in_file.dtype.name, in_file.shape) != (in_like.dtype, in_like.shape) or (
            _is_python(in_file.kind) != _is_python(in_like.kind)
        ):
            mismatched.append((key, in_file.describe(), in_like.describe()))
    mismatched.sort()
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(
            f"{path} does not match `like`:\n"
            + _describe(missing, unexpected, mismatched)
            + "\nPass `strict=False` to load what matches and keep `like`'s "
            "values elsewhere."
        )
    skip = set(missing) | {m[0] for m in mismatched}
    targets = _targets(like, shardings)
    loaded = {
        key: _read_leaf(reader, saved[key], leaf, targets.get(key))
        for key, leaf in wanted.items()
        if key not in skip
    }
    if missing or unexpected or mismatched:
        warnings.warn(
            CheckpointMismatchWarning(missing, unexpected, mismatched), stacklevel=3
        )

    def replace(key_path: Any, leaf: Any) -> Any:
        return loaded.get(_path_key(key_path), leaf)

    return jax.tree_util.tree_map_with_path(replace, like)


def _is_python(kind: str) -> bool:
    return kind in _PYTHON_TYPES


def _targets(like: Any, shardings: Any) -> dict[str, Any]:
    """The sharding asked for each leaf of `like` by key path (or `None`)."""
    if shardings is None:
        return {}
    try:
        resolved = _resolve_shardings(shardings, like)
    except ValueError as error:
        raise ValueError(
            "`shardings` must be a `jax.sharding.Sharding`, a `jax.Device`, or a "
            "pytree prefix of `like` of those (or `None`). In the words of "
            f"`filter_shard`, which reads it:\n{error}"
        ) from None
    paths = [_path_key(p) for p, _ in jax.tree_util.tree_leaves_with_path(like)]
    return dict(zip(paths, resolved, strict=True))


def _read_leaf(
    reader: Any, saved: _header.Saved, like_leaf: Any, sharding: Any = None
) -> Any:
    # `saved`'s dtype and shape equal `like_leaf`'s here, so every box read
    # below is a part of an array the size of `like_leaf`.
    pieces = _Pieces(reader, saved)
    whole = ((0,) * len(saved.shape), saved.shape)
    if isinstance(like_leaf, (jax.Array, jax.ShapeDtypeStruct)):
        if sharding is None:
            sharding = getattr(like_leaf, "sharding", None)
        if sharding is not None and (
            len(sharding.device_set) > 1 or not sharding.is_fully_addressable
        ):
            # Each device gets only its slice, read from the shards that
            # overlap it: no device, and no process, reads the whole array.
            return jax.make_array_from_callback(
                saved.shape,
                sharding,
                lambda index: pieces.box(box_of(index, saved.shape)),
            )
        return jax.device_put(pieces.box(whole), sharding)
    # NumPy and Python leaves stay on the host, whatever `shardings` says.
    value = pieces.box(whole)
    if isinstance(like_leaf, np.ndarray):
        return value if value.flags.writeable else value.copy()
    if isinstance(like_leaf, np.generic):
        return value[()]
    return type(like_leaf)(value.item())


class _Pieces:
    """Boxes of one saved leaf, assembled from the saved shards that overlap
    them; each shard is read (whole, CRC-checked) at most once."""

    def __init__(self, reader: Any, saved: _header.Saved):
        self._reader = reader
        self._saved = saved
        self._shards = {(s.start, s.stop): s for s in saved.shards}
        # Along each dimension, the intervals the shards cut it into.
        self._cuts = [
            sorted({(s.start[d], s.stop[d]) for s in saved.shards})
            for d in range(len(saved.shape))
        ]
        self._read: dict[Box, np.ndarray] = {}
        self._boxes: dict[Box, np.ndarray] = {}

    def box(self, box: Box) -> np.ndarray:
        if box not in self._boxes:
            self._boxes[box] = self._assemble(box)
        return self._boxes[box]

    def _assemble(self, box: Box) -> np.ndarray:
        start, stop = box
        shape = tuple(b - a for a, b in zip(start, stop, strict=True))
        if box in self._shards:
            return self._shard(self._shards[box])
        out = np.empty(shape, self._saved.dtype)
        if math.prod(shape) == 0:
            return out
        overlapping = [
            [cut for cut in cuts if cut[0] < b and cut[1] > a]
            for cuts, a, b in zip(self._cuts, start, stop, strict=True)
        ]
        for cells in itertools.product(*overlapping):
            shard = self._shards[tuple(c[0] for c in cells), tuple(c[1] for c in cells)]
            data = self._shard(shard)
            # The overlap of the box and the shard, in each one's coordinates.
            into, take = [], []
            for a, b, (c, d) in zip(start, stop, cells, strict=True):
                low, high = max(a, c), min(b, d)
                into.append(slice(low - a, high - a))
                take.append(slice(low - c, high - c))
            out[tuple(into)] = data[tuple(take)]
        return out

    def _shard(self, shard: _header.Shard) -> np.ndarray:
        key = (shard.start, shard.stop)
        if key not in self._read:
            saved = self._saved
            archive = self._reader.archive_for(shard)
            nbytes = math.prod(shard.shape) * saved.dtype.itemsize
            data = archive.read(shard.member, expected=nbytes)
            if shard.crc32 is not None and archive.members[shard.member][2] != (
                shard.crc32
            ):
                raise archive.error(
                    f"the member `{shard.member}` is not the one the header lists "
                    f"for `{saved.path}` (another CRC-32): members were swapped or "
                    "replaced"
                )
            self._read[key] = np.frombuffer(data, saved.dtype).reshape(shard.shape)
        return self._read[key]


def _describe(missing: list, unexpected: list, mismatched: list) -> str:
    lines = []
    if missing:
        lines.append("  missing from the file: " + ", ".join(missing))
    if unexpected:
        lines.append("  in the file but not in `like`: " + ", ".join(unexpected))
    for key, in_file, in_like in mismatched:
        lines.append(f"  {key}: {in_file} in the file, {in_like} in `like`")
    return "\n".join(lines)
