"""Replacing a file atomically, the way the user's file system expects.

The new content goes to a temporary file in the target's folder, is flushed
and fsynced, and is renamed over the target; the folder is fsynced after.
Three things a plain `mkstemp` + `os.replace` gets wrong are handled here:

- the mode: the new file keeps the mode of the file it replaces, and a new
  file gets the umask's default (`mkstemp` would make it 0600);
- symlinks: the link is followed and its target replaced, so the link stays;
- leftovers: a save that is killed leaves its temporary file behind. Each
  save holds an exclusive `flock` on its temporary file until it is renamed,
  so the next save of the same path can tell a leftover (nobody holds its
  lock) from a save still running in another process, and removes it.
"""

import contextlib
import os
import pathlib
import re
import secrets
import stat
from collections.abc import Callable
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no flock, so leftovers are not cleaned
    fcntl = None  # type: ignore[assignment]


def replace_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]):
    """Call `write(file)` on a temporary file, then rename it over `path`."""
    target = pathlib.Path(os.path.realpath(path))
    _remove_leftovers(target)
    fd, tmp = _create_locked(target)
    try:
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(os.stat(target).st_mode)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
        # Write through a duplicate, so that closing the file object keeps the
        # lock (held by `fd`) until the rename is done.
        with os.fdopen(os.dup(fd), "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    _fsync_folder(target.parent)


def _leftover_pattern(target: pathlib.Path) -> re.Pattern:
    # Ours: `.NAME.<12 hex>.tmp`; earlier versions: `.NAME.<8 chars>.tmp`.
    return re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8,32}}\.tmp")


def _create_locked(target: pathlib.Path) -> tuple[int, pathlib.Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for open()
        except FileExistsError:
            continue
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A concurrent save may have taken the file for a leftover between
        # `open` and `flock`, and removed it: then start again.
        try:
            if os.path.samestat(os.stat(tmp), os.fstat(fd)):
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_leftovers(target: pathlib.Path) -> None:
    if fcntl is None:
        return
    pattern = _leftover_pattern(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        if pattern.fullmatch(name) is None:
            continue
        candidate = target.parent / name
        try:
            fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a save in progress holds it
            continue
        try:
            if os.path.samestat(os.stat(candidate), os.fstat(fd)):
                os.unlink(candidate)
        except OSError:
            pass
        finally:
            os.close(fd)


def _fsync_folder(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
