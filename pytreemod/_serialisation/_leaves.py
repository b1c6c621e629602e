"""Leaf-order serialisation in Equinox's on-disk layout.

The layout: the leaves of the pytree in flatten order; each array or
array-like scalar (Python bool/int/float/complex, NumPy scalar) written back
to back in NumPy's `.npy` format; nothing for other leaves, which come back
from `like`. A file written by Equinox's `tree_serialise_leaves` loads here
and the other way round.
"""

import math
import os
import pathlib
from collections.abc import Callable
from typing import IO, Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from .._module._is_array import is_array_like
from . import _npy
from ._errors import LeafError

_T = TypeVar("_T")
PathOrFile = str | os.PathLike | IO[bytes]


def default_serialise_filter_spec(f: IO[bytes], x: Any) -> None:
    """Write one leaf to `f`: arrays and array-like scalars as `.npy`, nothing
    for other leaves.

    Pass a function of the same shape as `filter_spec` to
    `tree_serialise_leaves` to change how leaves are written.

    Example:
        >>> import io
        >>> import numpy as np
        >>> f = io.BytesIO()
        >>> default_serialise_filter_spec(f, 1.5)
        >>> default_serialise_filter_spec(f, "not saved")
        >>> _ = f.seek(0)
        >>> float(np.load(f))
        1.5
    """
    if isinstance(x, (jax.Array, np.ndarray)):
        np.save(f, np.asarray(x), allow_pickle=False)
    elif is_array_like(x):
        np.save(f, np.asarray(x), allow_pickle=False)


def default_deserialise_filter_spec(f: IO[bytes], x: Any) -> Any:
    """Read the leaf that stands where `x` stands in `like`: an array for a JAX
    array or `jax.ShapeDtypeStruct`, a NumPy array for a NumPy array, a value
    of the same type for an array-like scalar, and `x` itself otherwise.

    Reading is bounded and evaluates nothing: the `.npy` header is parsed
    without `eval` or pickles, and its dtype and shape are compared with `x`
    before any data is read, so a crafted file cannot make it allocate more
    than `x` needs.

    Raises:
        ValueError: (a `pytreemod.CheckpointError`, also a `RuntimeError` as
            in Equinox) if the record is malformed or does not fit `x`.

    Example:
        >>> import io
        >>> import numpy as np
        >>> f = io.BytesIO()
        >>> np.save(f, np.float64(2.5))
        >>> _ = f.seek(0)
        >>> default_deserialise_filter_spec(f, 0.0)
        2.5
    """
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
        header = _read_header(f)
        if header.shape != tuple(x.shape):
            raise _Changed("shape", tuple(x.shape), header.shape)
        dtype = _loaded_dtype(header.dtype, x)
        if dtype != x.dtype:
            raise _Changed("dtype", np.dtype(x.dtype), dtype)
        value = _restore_dtype(_read_data(f, header), x.dtype)
        if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
            native = value.dtype.newbyteorder("=")  # JAX has no big-endian arrays
            return jnp.asarray(value.astype(native, copy=False))
        if isinstance(x, np.generic):
            return value[()]
        return value
    if is_array_like(x):
        header = _read_header(f)
        expected = np.asarray(x).dtype
        if header.dtype.kind != expected.kind:
            raise LeafError(
                f"`like` holds a {type(x).__name__} here but the file holds "
                f"{header.dtype} data"
            )
        if math.prod(header.shape) != 1:
            raise _Changed("shape", (), header.shape)
        return type(x)(_read_data(f, header).item())
    return x


def _read_header(f: IO[bytes]) -> _npy.NpyHeader:
    try:
        return _npy.read_header(f)
    except _npy.NpyError as e:
        raise LeafError(str(e)) from None


def _read_data(f: IO[bytes], header: _npy.NpyHeader) -> np.ndarray:
    try:
        return _npy.read_data(f, header)
    except _npy.NpyError as e:
        raise LeafError(str(e)) from None


def _loaded_dtype(on_disk: np.dtype, x: Any) -> np.dtype:
    """The dtype the leaf will have once loaded for `x` (what Equinox's
    reading gives), known before reading the data."""
    if on_disk.kind == "V" and on_disk.itemsize == np.dtype(x.dtype).itemsize:
        return np.dtype(x.dtype)
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
        try:
            native = on_disk.newbyteorder("=")  # swapped to native on loading
            return np.dtype(jax.dtypes.canonicalize_dtype(native))
        except (TypeError, ValueError):
            return on_disk
    return on_disk


class _Changed(LeafError):
    """The record's shape or dtype differs from `like`'s leaf; raised before
    its data is read. `tree_deserialise_leaves` adds the key path."""

    def __init__(self, what: str, in_like: Any, on_disk: Any):
        self.what, self.in_like, self.on_disk = what, in_like, on_disk
        super().__init__(
            f"The leaf has changed {what} from {in_like} in `like` to {on_disk} "
            "on disk."
        )


def _restore_dtype(value: np.ndarray, dtype: Any) -> np.ndarray:
    # NumPy has no bfloat16 or float8 dtypes of its own, so `.npy` stores them
    # as raw void bytes ('V2', 'V1'): view them as the dtype of `like`.
    if value.dtype.kind == "V" and value.dtype.itemsize == np.dtype(dtype).itemsize:
        return value.view(dtype)
    return value


def _with_suffix(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    return path if path.suffix else path.with_suffix(".eqx")


def tree_serialise_leaves(
    path_or_file: PathOrFile,
    pytree: Any,
    filter_spec: Any = default_serialise_filter_spec,
    is_leaf: Callable[[Any], bool] | None = None,
) -> None:
    """Save the array leaves of `pytree`, in flatten order, to a file.

    Equinox's layout and signature: each array or array-like leaf is written
    in `.npy` format, back to back; other leaves are not written (they come
    from `like` when loading). A path without a suffix gets `.eqx`. For files
    that survive refactors, see `pytreemod.save`.

    Args:
        path_or_file: a path, or a binary file object open for writing.
        pytree: the pytree to save, e.g. a model.
        filter_spec: a function `(file, leaf) -> None` that writes a leaf, or a
            pytree prefix of `pytree` of such functions.
        is_leaf: as in `jax.tree_util.tree_flatten`.

    Example:
        >>> import io
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> f = io.BytesIO()
        >>> pytreemod.tree_serialise_leaves(f, {"w": jnp.ones(2), "name": "x"})
        >>> _ = f.seek(0)
        >>> like = {"w": jnp.zeros(2), "name": "x"}
        >>> pytreemod.tree_deserialise_leaves(f, like)["w"]
        Array([1., 1.], dtype=float32)
    """

    def write(file: IO[bytes]) -> None:
        for spec, subtree in _prefix_pairs(filter_spec, pytree):
            for leaf in jax.tree_util.tree_leaves(subtree, is_leaf=is_leaf):
                spec(file, leaf)

    if isinstance(path_or_file, (str, os.PathLike)):
        with open(_with_suffix(path_or_file), "wb") as file:
            write(file)
    else:
        write(path_or_file)


def tree_deserialise_leaves(
    path_or_file: PathOrFile,
    like: _T,
    filter_spec: Any = default_deserialise_filter_spec,
    is_leaf: Callable[[Any], bool] | None = None,
) -> _T:
    """Load a file written by `tree_serialise_leaves` (here or by Equinox).

    Args:
        path_or_file: a path (`.eqx` is added when it has no suffix), or a
            binary file object open for reading.
        like: a pytree of the same structure as the saved one, e.g. a freshly
            built model or a `filter_eval_shape` skeleton of one; it gives the
            structure, the non-array leaves and the expected shapes/dtypes.
        filter_spec: a function `(file, like_leaf) -> leaf`, or a pytree prefix
            of `like` of such functions.
        is_leaf: as in `jax.tree_util.tree_flatten`.

    Returns:
        A pytree like `like` with the loaded leaves.

    Raises:
        ValueError: if a loaded leaf's type, shape or dtype differs from `like`
            (the message names its key path), or the file ends early.

    Example:
        >>> import io
        >>> import jax.numpy as jnp
        >>> import pytreemod
        >>> f = io.BytesIO()
        >>> pytreemod.tree_serialise_leaves(f, [jnp.arange(3)])
        >>> _ = f.seek(0)
        >>> pytreemod.tree_deserialise_leaves(f, [jnp.zeros(3, jnp.int32)])
        [Array([0, 1, 2], dtype=int32)]
    """

    def read(file: IO[bytes]) -> Any:
        rebuilt = []
        for spec, subtree in _prefix_pairs(filter_spec, like):
            pairs, treedef = jax.tree_util.tree_flatten_with_path(subtree, is_leaf)
            leaves = []
            for path, old in pairs:
                try:
                    new = spec(file, old)
                except _Changed as e:
                    raise LeafError(
                        _changed(path, e.what, e.in_like, e.on_disk)
                    ) from None
                except Exception as e:
                    raise LeafError(
                        f"Error at leaf with path {tuple(path)}: {_where(path)}: {e}"
                    ) from e
                _check_same(path, new, old)
                leaves.append(new)
            rebuilt.append(treedef.unflatten(leaves))
        return jax.tree_util.tree_structure(filter_spec).unflatten(rebuilt)

    if isinstance(path_or_file, (str, os.PathLike)):
        with open(_with_suffix(path_or_file), "rb") as file:
            tree = read(file)
            _check_at_end(file)
        return tree
    return read(path_or_file)


_TRAILING = (
    "{path} has {count} more bytes after the last leaf of `like`: it was "
    "written from a pytree with more leaves than `like` (or has data appended), "
    "so loading it would give a different model. Build `like` exactly as the "
    "saved model was built."
)


def _check_at_end(file: IO[bytes]) -> None:
    here = file.tell()
    end = file.seek(0, 2)
    if end != here:
        file.seek(here)
        start = file.read(4)
        message = _TRAILING.format(path=file.name, count=end - here)
        if start == _npy.ZIP_MAGIC and here == 0:
            message = f"{file.name}: {_npy.OTHER_FORMAT}."
        raise LeafError(message)


def _where(path: Any) -> str:
    return f"`{jax.tree_util.keystr(path)}`" if path else "the root"


_CHANGED_HINT = (
    " The file was written from a pytree whose leaf here had another {what}; "
    "build `like` with the same sizes and dtypes as the saved model."
)


def _changed(path: Any, what: str, in_like: Any, on_disk: Any) -> str:
    return (
        f"Deserialised leaf at path {tuple(path)} has changed {what} from "
        f"{in_like} in `like` to {on_disk} on disk ({_where(path)})."
        + _CHANGED_HINT.format(what=what)
    )


def _prefix_pairs(filter_spec: Any, tree: Any) -> list[tuple[Callable, Any]]:
    """Pair each function of the prefix tree `filter_spec` with the subtree of
    `tree` it covers, in flatten order."""
    specs, spec_def = jax.tree_util.tree_flatten(filter_spec)
    return list(zip(specs, spec_def.flatten_up_to(tree), strict=True))


def _check_same(path: Any, new: Any, old: Any) -> None:
    old_is_array = isinstance(old, (jax.Array, jax.ShapeDtypeStruct, np.ndarray))
    if old_is_array != isinstance(new, (jax.Array, np.ndarray)) or (
        not old_is_array and type(new) is not type(old)
    ):
        what = ("type", type(old).__name__, type(new).__name__)
        raise LeafError(_changed(path, *what))
    if old_is_array and new.shape != old.shape:
        raise LeafError(_changed(path, "shape", old.shape, new.shape))
    if old_is_array and new.dtype != old.dtype:
        raise LeafError(_changed(path, "dtype", old.dtype, new.dtype))
