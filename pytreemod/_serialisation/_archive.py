"""Opening a checkpoint's zip archive with every read bounded.

`save` writes a plain uncompressed zip. This reader accepts exactly that
shape and nothing looser, and checks it before reading any member: the end
records sit at the very end of the file (so nothing is appended), the central
directory is of bounded size, and the local entries run back to back from
offset 0 to the central directory, each stored (not compressed, not
encrypted) with the sizes and CRC of its central-directory entry. After that
every member is a known byte range of the file, and reading one reads
exactly its size and checks its CRC-32. `zipfile` only parses the (bounded)
central directory; it never decompresses anything.
"""

import os
import struct
import zipfile
import zlib
from typing import IO, Any

from . import _npy
from ._errors import CheckpointError

MAX_MEMBERS = 1 << 17
MAX_CENTRAL_DIRECTORY_BYTES = MAX_MEMBERS * 128

_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_LOCAL = struct.Struct("<4s5H3L2H")

OTHER_FORMAT = (
    "{path} is a leaf-order file written by `tree_serialise_leaves` (or "
    "Equinox), not a path-keyed checkpoint; read it with "
    "`pytreemod.tree_deserialise_leaves(path, like)`."
)
_DAMAGED = (
    "{path} is not a readable checkpoint ({why}); the file is truncated or "
    "corrupted, or was not written by `pytreemod.save`. Nothing was loaded."
)
# What `zipfile` may raise on a damaged central directory.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    struct.error,
    ValueError,
    OverflowError,
    EOFError,
    KeyError,
    IndexError,
    NotImplementedError,
)


class Archive:
    """An open checkpoint file: one file descriptor, so that everything read
    through it comes from the same saved file even if `save` replaces the
    path meanwhile."""

    def __init__(self, path: Any):
        self.path = path
        # Unbuffered: each read asks the file system for exactly the bytes
        # wanted (a buffer would read ahead around every small header read).
        self._file: IO[bytes] = open(path, "rb", buffering=0)  # noqa: SIM115
        try:
            self.members = self._check(os.fstat(self._file.fileno()).st_size)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()

    def error(self, why: str) -> CheckpointError:
        return CheckpointError(_DAMAGED.format(path=self.path, why=why))

    def _read_at(self, offset: int, size: int, what: str) -> bytes:
        self._file.seek(offset)
        # An unbuffered read may return less than asked: read until done. The
        # caller has bounded `size` (by the file's size or a limit).
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            n = self._file.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                raise self.error(f"the file ends inside {what}")
            got += n
        view.release()
        return buffer  # type: ignore[return-value]  # a bytearray: no copy

    def _check(self, size: int) -> dict[str, tuple[int, int, int]]:
        start = self._file.read(8)
        if start.startswith(_npy.MAGIC):
            raise CheckpointError(OTHER_FORMAT.format(path=self.path))
        if not start.startswith(_npy.ZIP_MAGIC) or size < _EOCD.size:
            raise self.error("it does not start like a zip archive")
        eocd = _EOCD.unpack(self._read_at(size - _EOCD.size, _EOCD.size, "the end"))
        sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = eocd
        if sig != b"PK\x05\x06" or comment or disk or cd_disk or n_disk != n_total:
            raise self.error(
                "it does not end with a zip end record: it is truncated, has "
                "data appended, or is not a checkpoint"
            )
        end_of_cd = size - _EOCD.size
        if 0xFFFF in (n_total,) or 0xFFFFFFFF in (cd_size, cd_offset):
            end_of_cd, n_total, cd_size, cd_offset = self._zip64(end_of_cd)
        if n_total > MAX_MEMBERS or cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
            raise self.error(
                f"it declares {n_total} members in {cd_size} bytes, more than "
                f"the {MAX_MEMBERS} a checkpoint may hold"
            )
        if cd_offset + cd_size != end_of_cd:
            raise self.error("its central directory is not where the end says")
        try:
            self._file.seek(0)
            infos = zipfile.ZipFile(self._file).infolist()
        except _ZIP_ERRORS as e:
            raise self.error(f"{type(e).__name__}: {e}") from None
        if len(infos) != n_total:
            raise self.error("its central directory lists another member count")
        return self._check_members(infos, cd_offset)

    def _zip64(self, eocd_at: int) -> tuple[int, int, int, int]:
        at = eocd_at - _ZIP64_LOCATOR.size
        if at < 0:
            raise self.error("it lacks the zip64 end record its end refers to")
        sig, _, record_at, disks = _ZIP64_LOCATOR.unpack(
            self._read_at(at, _ZIP64_LOCATOR.size, "the zip64 locator")
        )
        if sig != b"PK\x06\x07" or disks != 1 or record_at + _ZIP64_EOCD.size != at:
            raise self.error("its zip64 end locator is damaged")
        record = _ZIP64_EOCD.unpack(
            self._read_at(record_at, _ZIP64_EOCD.size, "the zip64 end record")
        )
        sig, _, _, _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset = record
        if sig != b"PK\x06\x06" or disk or cd_disk or n_disk != n_total:
            raise self.error("its zip64 end record is damaged")
        return record_at, n_total, cd_size, cd_offset

    def _check_members(
        self, infos: list[zipfile.ZipInfo], cd_offset: int
    ) -> dict[str, tuple[int, int, int]]:
        members: dict[str, tuple[int, int, int]] = {}
        offset = 0
        for info in sorted(infos, key=lambda i: i.header_offset):
            name = info.filename
            if name in members:
                raise self.error(f"the member `{name}` appears twice")
            if info.compress_type != zipfile.ZIP_STORED:
                raise self.error(
                    f"the member `{name}` is compressed (method "
                    f"{info.compress_type}); `save` never compresses"
                )
            if info.flag_bits & 0x9:
                raise self.error(f"the member `{name}` is encrypted or streamed")
            if info.file_size != info.compress_size:
                raise self.error(f"the member `{name}` declares two sizes")
            if info.header_offset != offset:
                raise self.error(
                    f"the member `{name}` is not where the previous one ends"
                )
            local = _LOCAL.unpack(self._read_at(offset, _LOCAL.size, f"`{name}`"))
            sig, _, flags, method, _, _, crc, csize, usize, n_name, n_extra = local
            raw_name = self._read_at(offset + _LOCAL.size, n_name, f"`{name}`")
            sizes_ok = (csize, usize) == (info.compress_size, info.file_size) or (
                0xFFFFFFFF in (csize, usize)
            )
            if (
                sig != b"PK\x03\x04"
                or flags & 0x9
                or method != zipfile.ZIP_STORED
                or crc != info.CRC
                or not sizes_ok
                or raw_name.decode("utf-8", "replace") != info.orig_filename
            ):
                raise self.error(
                    f"the entry of `{name}` disagrees with the central directory"
                )
            data_at = offset + _LOCAL.size + n_name + n_extra
            offset = data_at + info.compress_size
            if offset > cd_offset:
                raise self.error(f"the member `{name}` runs past the end of the data")
            members[name] = (data_at, info.file_size, info.CRC)
        if offset != cd_offset:
            raise self.error("there are bytes between the members and the directory")
        return members

    def read(self, name: str, expected: int | None = None, limit: int = 0) -> bytes:
        """The bytes of member `name`, CRC-checked; its size must be
        `expected`, or at most `limit`, which is checked before reading."""
        if name not in self.members:
            raise self.error(f"the member `{name}` is missing")
        data_at, size, crc = self.members[name]
        if expected is not None and size != expected:
            raise self.error(
                f"the member `{name}` holds {size} bytes, expected {expected}"
            )
        if expected is None and size > limit:
            raise self.error(
                f"the member `{name}` holds {size} bytes, more than the {limit} allowed"
            )
        data = self._read_at(data_at, size, f"`{name}`")
        if zlib.crc32(data) != crc:
            raise self.error(f"the member `{name}` fails its CRC-32 check")
        return data
