"""Reading one NumPy `.npy` record from a file object, bounded and without
evaluating anything.

`np.load` parses the header with `ast.literal_eval`, accepts pickles when
asked, and allocates whatever the header declares. This reader accepts only
the headers NumPy writes for plain arrays (`{'descr': '<f4',
'fortran_order': False, 'shape': (3, 2), }`), parses them with regular
expressions, and reads the data only after the caller has compared the
declared dtype and shape with what it expects and after checking that the
file holds that many bytes. Every problem is an `NpyError` saying what is
wrong.
"""

import dataclasses
import math
import re
import warnings
from typing import IO

import numpy as np

MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
# NumPy's own default limit on the header (`max_header_size`).
MAX_HEADER_BYTES = 10_000
MAX_NDIM = 64
_CHUNK = 1 << 20  # reading from a stream that cannot tell its size

_DESCR = re.compile(r"[<>|=]?[biufcVSUmM]\d{1,9}(\[[a-zA-Z]{1,3}\])?")
_ITEM = re.compile(
    r"\s*'(descr|fortran_order|shape)'\s*:\s*"
    r"('[^'\\]{0,40}'|True|False|\(\s*\)|\(\s*\d{1,19}\s*,\s*\)"
    r"|\(\s*\d{1,19}(?:\s*,\s*\d{1,19}){1,63}\s*,?\s*\))\s*"
)

OTHER_FORMAT = (
    "this is a path-keyed checkpoint written by `pytreemod.save`, not a "
    "leaf-order file; read it with `pytreemod.load(path, like)`"
)


class NpyError(Exception):
    """What is wrong with a `.npy` record (turned into the caller's error)."""


@dataclasses.dataclass(frozen=True)
class NpyHeader:
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_exact(f: IO[bytes], n: int, what: str) -> bytes:
    data = f.read(n)
    if not isinstance(data, bytes) or len(data) != n:
        raise NpyError(f"the file ends inside {what}")
    return data


def read_header(f: IO[bytes]) -> NpyHeader:
    """Read and check the header of the next `.npy` record of `f`."""
    start = f.read(8)
    if not isinstance(start, bytes):
        raise NpyError("the file object must be opened in binary mode")
    if not start:
        raise NpyError(
            "the file ends where this leaf should start: it is truncated, or "
            "was written from a pytree with fewer leaves than `like`"
        )
    if start.startswith(ZIP_MAGIC):
        raise NpyError(OTHER_FORMAT)
    if len(start) < 8 or not start.startswith(MAGIC):
        raise NpyError(
            f"expected a NumPy `.npy` record here, found the bytes {start!r}: "
            "the file is corrupted, or is not a `tree_serialise_leaves` file"
        )
    major = start[6]
    if major == 1:
        size = int.from_bytes(read_exact(f, 2, "a `.npy` header"), "little")
    elif major in (2, 3):
        size = int.from_bytes(read_exact(f, 4, "a `.npy` header"), "little")
    else:
        raise NpyError(f"unknown `.npy` format version {major}.{start[7]}")
    if size > MAX_HEADER_BYTES:
        raise NpyError(
            f"the `.npy` header declares {size} bytes, more than the "
            f"{MAX_HEADER_BYTES} NumPy allows"
        )
    raw = read_exact(f, size, "a `.npy` header")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
    except UnicodeDecodeError:
        raise NpyError("the `.npy` header is not text") from None
    return _parse(text)


def _parse(text: str) -> NpyHeader:
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise NpyError(f"the `.npy` header {text.strip()[:80]!r} is not a dict")
    body, pos, items = body[1:-1], 0, {}
    while pos < len(body) and body[pos:].strip():
        match = _ITEM.match(body, pos)
        if match is None or match.group(1) in items:
            raise NpyError(
                f"the `.npy` header {text.strip()[:80]!r} is not one that "
                "NumPy writes for a plain array"
            )
        items[match.group(1)] = match.group(2)
        pos = match.end()
        if pos < len(body):
            if body[pos] != ",":
                raise NpyError(f"the `.npy` header {text.strip()[:80]!r} is malformed")
            pos += 1
    if set(items) != {"descr", "fortran_order", "shape"}:
        raise NpyError(
            f"the `.npy` header {text.strip()[:80]!r} lacks "
            "'descr', 'fortran_order' or 'shape'"
        )
    descr = items["descr"][1:-1] if items["descr"].startswith("'") else ""
    if items["fortran_order"] not in ("True", "False"):
        raise NpyError("the `.npy` header's 'fortran_order' is not True or False")
    if not items["shape"].startswith("("):
        raise NpyError("the `.npy` header's 'shape' is not a tuple")
    shape = tuple(int(d) for d in re.findall(r"\d+", items["shape"]))
    return NpyHeader(_dtype(descr), shape, items["fortran_order"] == "True")


def _dtype(descr: str) -> np.dtype:
    if _DESCR.fullmatch(descr) is None:
        raise NpyError(
            f"the `.npy` dtype {descr!r} is not a plain numeric, bytes or text "
            "dtype (objects and structured dtypes are never loaded)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dtype = np.dtype(descr)
    except (TypeError, ValueError, Warning):
        raise NpyError(f"the `.npy` dtype {descr!r} is not a valid dtype") from None
    if (
        dtype.hasobject
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.itemsize == 0
    ):
        raise NpyError(f"the `.npy` dtype {descr!r} is not a plain dtype")
    return dtype


def _remaining(f: IO[bytes]) -> int | None:
    """Bytes left in `f`, or `None` if `f` cannot tell."""
    try:
        if hasattr(f, "seekable") and not f.seekable():
            return None
        here = f.tell()
        end = f.seek(0, 2)
        f.seek(here)
    except (OSError, AttributeError, ValueError):
        return None
    return end - here


def read_data(f: IO[bytes], header: NpyHeader) -> np.ndarray:
    """Read the data of the record whose header was just read: a writable
    array, no larger than what the file really holds."""
    nbytes = header.nbytes
    left = _remaining(f)
    if left is not None and nbytes > left:
        raise NpyError(
            f"the `.npy` header declares {header.dtype.str}{list(header.shape)} "
            f"({nbytes} bytes) but only {left} bytes are left in the file: it "
            "is truncated or corrupted"
        )
    if left is not None and hasattr(f, "readinto"):
        buffer = bytearray(nbytes)  # bounded: the file holds this much
        view, got = memoryview(buffer), 0
        while got < nbytes:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
        view.release()
    else:  # a stream: grow with what really arrives
        buffer, got = bytearray(), 0
        while got < nbytes:
            chunk = f.read(min(_CHUNK, nbytes - got))
            if not chunk:
                break
            buffer += chunk
            got += len(chunk)
    if got < nbytes:
        raise NpyError(
            f"the file ends inside the data of a "
            f"{header.dtype.str}{list(header.shape)} array: it is truncated"
        )
    flat = np.frombuffer(buffer, dtype=header.dtype)
    if header.fortran_order:
        return flat.reshape(header.shape[::-1]).transpose()
    return flat.reshape(header.shape)
