"""Advisory locks on open files, the same calls on POSIX (``fcntl.flock``) and Windows (``msvcrt``).

A lock belongs to an open file and ends when the file is closed or its process dies (also by
``kill -9``), so a crashed job never leaves a folder locked. On Windows the lock covers one byte far
past the end of the file, so the holder's note at the start of a lock file stays readable, and
every lock is exclusive.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

_WINDOWS_LOCK_OFFSET = 1 << 30
"""Where the Windows lock byte sits (past any lock file's or manifest's content)."""


def lock(fd: int, blocking: bool = True, shared: bool = False) -> None:
    """Lock the open file ``fd`` (exclusive, or ``shared`` where the system has shared locks).

    Raises:
        BlockingIOError: with ``blocking=False``, when another open file holds a conflicting lock.
    """
    if fcntl is not None:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
        return
    position = os.lseek(fd, 0, os.SEEK_CUR)
    os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
    try:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if not blocking:
                    raise BlockingIOError(f"file {fd} is locked by another process") from None
                import time

                time.sleep(0.05)
    finally:
        os.lseek(fd, position, os.SEEK_SET)


def same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the open file ``fd`` (a lock file its holder removed, or another
    process replaced, does not: lock the new one instead)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def last_byte(fd: int) -> bytes:
    """The last byte of the open file ``fd`` (``b""`` when it is empty)."""
    size = os.fstat(fd).st_size
    if not size:
        return b""
    if hasattr(os, "pread"):
        return os.pread(fd, 1, size - 1)
    position = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        os.lseek(fd, size - 1, os.SEEK_SET)
        return os.read(fd, 1)
    finally:
        os.lseek(fd, position, os.SEEK_SET)


def remove_locked(fd: int, path: Path) -> None:
    """Remove the lock file ``path`` that the open file ``fd`` holds, and close ``fd``. POSIX removes
    it while it is still held (whoever opened it meanwhile sees it gone: :func:`same_file`); Windows
    cannot remove an open file, so it closes first, and the file stays if another process has it open."""
    if fcntl is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
        return
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)
