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
"""

import dataclasses
import os
import warnings
import zipfile
from typing import IO, Any, Literal, TypeVar, overload

import jax
import jax.numpy as jnp
import numpy as np

from .._module._is_array import is_array_like
from .._transform._shard import _resolve_shardings
from . import _header
from ._archive import MAX_MEMBERS, Archive
from ._atomic import replace_atomically
from ._errors import CheckpointError

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

    Args:
        path: where to write; the file is replaced if it exists.
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


def _read(archive: Archive) -> tuple[Any, dict[str, _header.Saved]]:
    data = archive.read(_header.NAME, limit=_header.MAX_BYTES)
    return _header.decode(data, archive.path)


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
    with Archive(path) as archive:
        return _read(archive)[0]


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
    slice, and no device ever holds the whole array.

    Args:
        path: the checkpoint file.
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
    with Archive(path) as archive:
        metadata, saved = _read(archive)
        tree = _load(archive, saved, like, strict, shardings)
    return (tree, metadata) if with_metadata else tree


def _load(
    archive: Archive,
    saved: dict[str, _header.Saved],
    like: Any,
    strict: bool,
    shardings: Any = None,
) -> Any:
    path = archive.path
    members = {_header.NAME} | {leaf.member for leaf in saved.values()}
    if members != set(archive.members):
        extra = sorted(set(archive.members) - members)
        lost = sorted(members - set(archive.members))
        raise archive.error(
            f"its members {extra} are not in the header"
            if extra
            else f"the header's members {lost} are missing"
        )
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
        key: _read_leaf(archive, saved[key], leaf, targets.get(key))
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
    archive: Archive, saved: _header.Saved, like_leaf: Any, sharding: Any = None
) -> Any:
    # `saved`'s dtype and shape equal `like_leaf`'s here, so this reads exactly
    # as many bytes as `like` needs.
    data = archive.read(saved.member, expected=saved.nbytes)
    if saved.crc32 is not None and archive.members[saved.member][2] != saved.crc32:
        raise archive.error(
            f"the member `{saved.member}` is not the one the header lists for "
            f"`{saved.path}` (another CRC-32): members were swapped or replaced"
        )
    value = np.frombuffer(data, dtype=saved.dtype).reshape(saved.shape)
    if isinstance(like_leaf, (jax.Array, jax.ShapeDtypeStruct)):
        if sharding is None:
            sharding = getattr(like_leaf, "sharding", None)
        if sharding is not None and len(sharding.device_set) > 1:
            # Each device gets only its slice: no device holds the whole array.
            return jax.make_array_from_callback(
                saved.shape, sharding, lambda index: value[index]
            )
        return jax.device_put(value, sharding)
    # NumPy and Python leaves stay on the host, whatever `shardings` says.
    if isinstance(like_leaf, np.ndarray):
        return value.copy()
    if isinstance(like_leaf, np.generic):
        return value[()]
    return type(like_leaf)(value.item())


def _describe(missing: list, unexpected: list, mismatched: list) -> str:
    lines = []
    if missing:
        lines.append("  missing from the file: " + ", ".join(missing))
    if unexpected:
        lines.append("  in the file but not in `like`: " + ", ".join(unexpected))
    for key, in_file, in_like in mismatched:
        lines.append(f"  {key}: {in_file} in the file, {in_like} in `like`")
    return "\n".join(lines)
