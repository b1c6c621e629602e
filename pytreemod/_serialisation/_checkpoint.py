"""Path-keyed checkpoints: `save`, `load`, `load_metadata`.

A checkpoint is a zip archive (uncompressed) holding `header.json` (format
version, user metadata, and for every saved leaf its key path, kind, dtype,
shape and member name) and one raw-bytes member per leaf. Leaves are matched
by key path (`layers[2].weight`), not by position, so a checkpoint still loads
after fields are reordered or layers are added. Zip's per-member CRC-32 is
checked on every read, so a corrupted file is an error rather than silently
wrong weights. Writes go to a temporary file in the same folder that is
flushed, fsynced and then renamed over the target, so a crash mid-write
leaves the previous checkpoint intact.
"""

import dataclasses
import json
import os
import pathlib
import tempfile
import warnings
import zipfile
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from .._module._is_array import is_array_like

_T = TypeVar("_T")
_FORMAT = "pytreemod-checkpoint"
_VERSION = 1
_HEADER = "header.json"


class CheckpointError(ValueError):
    """A checkpoint could not be read, or does not match `like` under
    `strict=True`.

    Example:
        >>> import pytreemod
        >>> issubclass(pytreemod.CheckpointError, ValueError)
        True
    """


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
    entries = []
    for index, (key, leaf) in enumerate(leaves.items()):
        if isinstance(leaf, jax.ShapeDtypeStruct):
            raise CheckpointError(
                f"the leaf at `{key}` is a ShapeDtypeStruct, which has no values "
                "to save. Save a real model, not a `filter_eval_shape` skeleton."
            )
        entry = _entry(leaf)
        entries.append(
            {"path": key, "member": f"leaves/{index}", **dataclasses.asdict(entry)}
        )
    header = {
        "format": _FORMAT,
        "version": _VERSION,
        "metadata": metadata,
        "leaves": entries,
    }
    try:
        header_bytes = json.dumps(header).encode()
    except TypeError as e:
        raise TypeError(f"`metadata` must be JSON-serialisable: {e}") from None

    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
                archive.writestr(_HEADER, header_bytes)
                for entry, leaf in zip(entries, leaves.values(), strict=True):
                    data = np.ascontiguousarray(np.asarray(leaf))
                    archive.writestr(entry["member"], data.tobytes())
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: pathlib.Path) -> None:
    # Make the rename itself durable. Not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_header(archive: zipfile.ZipFile, path: Any) -> dict:
    header = json.loads(archive.read(_HEADER))
    if header.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not a pytreemod checkpoint.")
    if header.get("version") != _VERSION:
        raise CheckpointError(
            f"{path} is a version {header.get('version')} checkpoint; this "
            f"pytreemod reads version {_VERSION}."
        )
    return header


def _open(path: Any) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({e}); the file is truncated "
            "or corrupted, or was not written by `pytreemod.save`."
        ) from e


def load_metadata(path: str | os.PathLike) -> Any:
    """Return the `metadata` that `save` stored in a checkpoint.

    Example:
        >>> import tempfile, os
        >>> import pytreemod
        >>> path = os.path.join(tempfile.mkdtemp(), "m.ckpt")
        >>> pytreemod.save(path, [1.0], metadata={"epoch": 2})
        >>> pytreemod.load_metadata(path)
        {'epoch': 2}
    """
    with _open(path) as archive:
        return _guarded(path, lambda: _read_header(archive, path))["metadata"]


def _guarded(path: Any, read: Any) -> Any:
    try:
        return read()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
        raise CheckpointError(
            f"{path} is corrupted ({type(e).__name__}: {e}); nothing was loaded. "
            "Restore it from a backup or save it again."
        ) from e


def load(path: str | os.PathLike, like: _T, *, strict: bool = True) -> _T:
    """Load a checkpoint written by `save` into a pytree shaped like `like`.

    Leaves are matched by key path. `like` gives the structure, the non-array
    leaves and the expected dtypes and shapes; it may be a freshly built model
    or a `filter_eval_shape` skeleton. Arrays are placed with the sharding of
    `like`'s arrays when it has one.

    Args:
        path: the checkpoint file.
        like: a pytree of the expected structure.
        strict: if `True`, any path missing from the file, unexpected in it,
            or saved with another shape/dtype is an error listing all of them.
            If `False`, what matches is loaded, everything else keeps `like`'s
            value, and a `CheckpointMismatchWarning` lists the differences.

    Returns:
        A pytree like `like` holding the loaded values.

    Raises:
        CheckpointError: on a mismatch under `strict=True`, or if the file is
            truncated or corrupted (never a partial load).

    Example:
        >>> import tempfile, os
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> path = os.path.join(tempfile.mkdtemp(), "m.ckpt")
        >>> pytreemod.save(path, {"a": jnp.ones(2)})
        >>> pytreemod.load(path, {"a": jnp.zeros(3)})
        Traceback (most recent call last):
        ...
        pytreemod._serialisation._checkpoint.CheckpointError: ...
    """
    with _open(path) as archive:
        return _guarded(path, lambda: _load(archive, path, like, strict))


def _load(archive: zipfile.ZipFile, path: Any, like: Any, strict: bool) -> Any:
    header = _read_header(archive, path)
    saved = {e["path"]: e for e in header["leaves"]}
    wanted = _saved_leaves(like)
    missing = [p for p in wanted if p not in saved]
    unexpected = [p for p in saved if p not in wanted]
    mismatched = []
    for key in wanted.keys() & saved.keys():
        in_file = _Entry(
            saved[key]["kind"], saved[key]["dtype"], tuple(saved[key]["shape"])
        )
        in_like = _entry(wanted[key])
        if (in_file.dtype, in_file.shape) != (in_like.dtype, in_like.shape) or (
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
    loaded = {
        key: _read_leaf(archive, saved[key], leaf)
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


def _read_leaf(archive: zipfile.ZipFile, entry: dict, like_leaf: Any) -> Any:
    dtype = jnp.dtype(entry["dtype"])
    shape = tuple(entry["shape"])
    data = archive.read(entry["member"])  # checks the CRC-32
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise CheckpointError(
            f"the leaf `{entry['path']}` holds {len(data)} bytes, expected "
            f"{expected} for {entry['dtype']}{list(shape)}; the file is corrupted."
        )
    value = np.frombuffer(data, dtype=dtype).reshape(shape)
    if isinstance(like_leaf, (jax.Array, jax.ShapeDtypeStruct)):
        sharding = getattr(like_leaf, "sharding", None)
        return jax.device_put(value, sharding)
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
