"""Checkpoint folders: what `save` writes when many processes save together.

    ckpt/
      header.json                  the commit: format version 3 (`_header.py`)
      data-0123456789ab/           the data of the save that header.json names
        process-0.zip              the shards process 0 wrote, one member each
        process-1.zip
      data-ba9876543210/           the previous save's data, kept for readers
                                   that opened the previous header.json

A save on N processes: process 0 creates `data-<random>/` and shares its
name; every process writes the shards it owns (`_layout.plan`) into its own
`process-<i>.zip` (a plain stored zip, as a single-file checkpoint) and
fsyncs it; process 0 waits for every process's word that it has written (or
failed: then nobody commits); it reads the central directories of all N
files (their CRC-32s, bounded), writes `header.json` with
`replace_atomically` (the commit: before it, readers see the previous
header and its data, untouched), removes older data folders, and tells the
others the outcome, which each waits for before returning. So a reader
sees a whole checkpoint or the previous one, and a process killed at any
point of a save leaves the previous one loadable.

Reading trusts nothing: `header.json` is read with a bounded size and
checked field by field (shards must tile each array), data files are opened
through `Archive` (structure checked before any read) and must hold exactly
the members the header gives them, and each shard's member must have the
CRC-32 the header lists.
"""

import collections
import contextlib
import os
import pathlib
import re
import secrets
import shutil
import zipfile
from typing import Any

import numpy as np

from . import _header, _layout
from ._archive import Archive
from ._atomic import _fsync_folder, replace_atomically
from ._errors import CheckpointError
from ._processes import Coordinator

_DATA_FOLDER = re.compile(r"data-[0-9a-f]{12}")
MAX_OPEN = 64

_NOT_A_FOLDER = """\
{path} is a single-file checkpoint, and a save from {count} processes writes a
folder (one data file per process); a file cannot be replaced by a folder
atomically. Save to a new path, e.g. `{path}.d`, or delete the file first
(its weights are lost unless saved elsewhere)."""


def data_file(process: int) -> str:
    return f"process-{process}.zip"


def _raw(data: np.ndarray) -> memoryview:
    data = data.astype(data.dtype.newbyteorder("="), copy=False)
    return np.ascontiguousarray(data).reshape(-1).view(np.uint8).data


def save(path: Any, entries: list[dict], arrays: list[Any], metadata: Any) -> None:
    """Write the folder checkpoint `path` together with the other processes.
    `entries` are the header entries of the leaves (without members)."""
    coordinator = Coordinator(str(path))
    target = pathlib.Path(os.path.realpath(path))
    if target.exists() and not target.is_dir():
        raise CheckpointError(_NOT_A_FOLDER.format(path=path, count=coordinator.count))
    planned = _layout.plan(arrays, coordinator.count)
    coordinator.arrive()
    name = ""
    if coordinator.index == 0:
        try:
            name = f"data-{secrets.token_hex(6)}"
            (target / name).mkdir(parents=True)
        except OSError as error:
            name = f"{type(error).__name__}: {error}"
    # The folder exists before its name reaches the other processes.
    name = coordinator.from_first("data", name)
    if _DATA_FOLDER.fullmatch(name) is None:
        raise CheckpointError(f"process 0 could not start the save of {path}: {name}")
    folder = target / name
    failure: BaseException | None = None
    try:
        _write(folder, arrays, planned, coordinator.index)
    except Exception as error:
        failure = error
    statuses = coordinator.gather(
        "written", "ok" if failure is None else _say(failure, coordinator.index)
    )
    outcome = "ok"
    if coordinator.index == 0:
        outcome = "; ".join(s for s in statuses if s != "ok") or "ok"
        if outcome == "ok":
            try:
                _commit(target, folder, entries, planned, metadata, coordinator.count)
            except BaseException as error:
                outcome = _say(error, 0)
                coordinator.from_first("committed", outcome)
                raise
    outcome = coordinator.from_first("committed", outcome)
    if failure is not None:
        raise failure
    if outcome != "ok":
        raise CheckpointError(
            f"the save of {path} failed, so it still holds the previous "
            f"checkpoint: {outcome}"
        )


def _say(error: BaseException, process: int) -> str:
    return f"process {process}: {type(error).__name__}: {error}"


def _write(
    folder: pathlib.Path,
    arrays: list[Any],
    planned: list[list[_layout.PlannedShard]],
    process: int,
) -> None:
    """Write (and fsync) the data file of `process`: the shards it owns."""
    with open(folder / data_file(process), "xb") as file:
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            for leaf, shards in zip(arrays, planned, strict=True):
                for shard in shards:
                    if shard.owner == process:
                        data = _layout.shard_data(leaf, shard)
                        archive.writestr(shard.member, _raw(data))
        file.flush()
        os.fsync(file.fileno())
    _fsync_folder(folder)


def _commit(
    target: pathlib.Path,
    folder: pathlib.Path,
    entries: list[dict],
    planned: list[list[_layout.PlannedShard]],
    metadata: Any,
    processes: int,
) -> None:
    crcs: dict[tuple[int, str], int] = {}
    for process in range(processes):
        expected = {
            s.member for shards in planned for s in shards if s.owner == process
        }
        if not expected:  # an empty zip: nothing to check but that it is there
            if not (folder / data_file(process)).is_file():
                raise CheckpointError(
                    f"the data file of process {process} is missing from {folder}: "
                    "do all processes see one shared file system at the path?"
                )
            continue
        try:
            archive = Archive(folder / data_file(process))
        except FileNotFoundError:
            raise CheckpointError(
                f"the data file of process {process} is missing from {folder}: "
                "do all processes see one shared file system at the path?"
            ) from None
        with archive:
            if set(archive.members) != expected:
                raise archive.error("it holds other shards than the plan gives it")
            for member in expected:
                crcs[process, member] = archive.members[member][2]
    leaves = []
    for entry, shards in zip(entries, planned, strict=True):
        listed = [
            {
                "start": list(s.start),
                "stop": list(s.stop),
                "process": s.owner,
                "member": s.member,
                "crc32": crcs[s.owner, s.member],
            }
            for s in shards
        ]
        leaves.append({**entry, "shards": listed})
    data = _header.encode(
        metadata,
        leaves,
        _header.FOLDER_VERSION,
        data=folder.name,
        processes=processes,
    )
    previous = _committed_data_folder(target)
    replace_atomically(target / _header.NAME, lambda file: file.write(data))
    keep = {folder.name, previous}
    for child in os.listdir(target):
        if _DATA_FOLDER.fullmatch(child) and child not in keep:
            shutil.rmtree(target / child, ignore_errors=True)


def _committed_data_folder(target: pathlib.Path) -> str | None:
    """The data folder that `target`'s current header names, if it reads."""
    with contextlib.suppress(OSError, CheckpointError):
        with Folder(target) as current:
            return current.data_folder
    return None


class Folder:
    """An open checkpoint folder: its header, read once, and its data files,
    opened when first needed and checked against the header."""

    def __init__(self, path: Any):
        self.path = path
        header_path = os.path.join(path, _header.NAME)
        try:
            file = open(header_path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise CheckpointError(
                f"{path} is a folder without `{_header.NAME}`: it holds no "
                "committed checkpoint (a first save that did not finish, or not "
                "a checkpoint folder). Nothing was loaded."
            ) from None
        with file:
            size = os.fstat(file.fileno()).st_size
            if size > _header.MAX_BYTES:
                raise CheckpointError(
                    f"{header_path} holds {size} bytes, more than the "
                    f"{_header.MAX_BYTES} a checkpoint header may; it is not one "
                    "`save` wrote. Nothing was loaded."
                )
            data = file.read(size)
        self.metadata, self.saved, header = _header.decode(
            data, header_path, (_header.FOLDER_VERSION,)
        )
        self.data_folder: str = header["data"]
        self._expected: dict[int, set[str]] = {}
        for leaf in self.saved.values():
            for shard in leaf.shards:
                assert shard.process is not None
                self._expected.setdefault(shard.process, set()).add(shard.member)
        # Open data files, least recently used first; at most `MAX_OPEN` stay
        # open, so that one process can read a save of thousands.
        self._archives: collections.OrderedDict[int, Archive] = (
            collections.OrderedDict()
        )

    def __enter__(self) -> "Folder":
        return self

    def __exit__(self, *exc: Any) -> None:
        for archive in self._archives.values():
            archive.__exit__()

    def archive_for(self, shard: _header.Shard) -> Archive:
        process = shard.process
        assert process is not None
        if process not in self._archives:
            where = os.path.join(self.path, self.data_folder, data_file(process))
            try:
                archive = Archive(where)
            except FileNotFoundError:
                raise CheckpointError(
                    f"{where}, which the header of {self.path} lists, is missing: "
                    "another save replaced this checkpoint twice while it was "
                    "read (load again), or the folder was copied incompletely."
                ) from None
            if set(archive.members) != self._expected[process]:
                archive.__exit__()
                raise archive.error(
                    "its members are not the ones the checkpoint's header lists"
                )
            self._archives[process] = archive
            if len(self._archives) > MAX_OPEN:
                self._archives.popitem(last=False)[1].__exit__()
        self._archives.move_to_end(process)
        return self._archives[process]
