"""Who owns a training work dir: one run at a time, never over another run's checkpoints.

:func:`claim` is called by the main process before training starts. It

* locks the dir (:mod:`lrformer.locking` on ``WORK_DIR/.lock``, released when the run ends or its process
  dies, even by ``kill -9``): a second run in the same dir is refused, naming the first;
* removes the temporary files that writes killed half-way left behind;
* refuses a dir holding another run's checkpoints unless the run resumes it, or ``force`` says to
  delete them (and the run's logs) and start over.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import weakref
from pathlib import Path

from ..errors import WorkDirError
from ..locking import lock, remove_locked, same_file
from ..utils import remove_stale_temporaries
from .training_checkpoints import resumable

logger = logging.getLogger("lrformer.train")

LOCK_NAME = ".lock"
RUN_FILES = ("scalars.jsonl", "config.yaml")
"""Files a run writes besides its checkpoints (removed by ``force`` with them)."""


class WorkDirLock:
    """The exclusive lock a run holds on its work dir (released by :meth:`release` or when the
    object is collected or the process ends). ``what`` and ``option`` name the job and the option
    that chose the folder in the message to a second job (``lrformer predict`` locks its ``--out``);
    with ``remove`` the lock file is deleted on release (while still held: a process that opened it
    meanwhile sees it gone and locks a new one)."""

    def __init__(
        self, work_dir: Path, what: str = "training run", option: str = "--work-dir", name: str = LOCK_NAME,
        remove: bool = False,
    ) -> None:  # fmt: skip
        self.path, self.remove = work_dir / name, remove
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                lock(fd, blocking=False)
            except BlockingIOError:
                holder = holder_of(fd)
                os.close(fd)
                raise WorkDirError(
                    f"{work_dir} is in use by another {what} ({holder}); wait for it to end, or choose another {option}"
                ) from None
            if same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as we opened it
        os.ftruncate(fd, 0)
        os.write(
            fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
        )
        self._fd, self._finalizer = fd, weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        if self.remove and self._finalizer.detach():
            remove_locked(self._fd, self.path)
        self._finalizer()  # closing the descriptor releases the lock


def holder_of(fd: int) -> str:
    """The note a lock file's holder wrote in it: ``pid P on HOST, started TIME``."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 200).decode(errors="replace").strip() or "holder unknown"


def claim(work_dir: Path, resume: bool, force: bool) -> WorkDirLock:
    """Lock ``work_dir`` for this run, clean stale temporaries, and check or clear earlier checkpoints."""
    work_dir.mkdir(parents=True, exist_ok=True)
    lock = WorkDirLock(work_dir)
    stale = remove_stale_temporaries(work_dir, ".pth")
    if stale:
        logger.warning("removed %d temporary file(s) left by interrupted writes: %s", len(stale),
                       ", ".join(p.name for p in stale))  # fmt: skip
    earlier = [p for _, p in resumable(work_dir)]
    if earlier and not resume:
        if not force:
            lock.release()
            names = ", ".join(p.name for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
            raise WorkDirError(
                f"{work_dir} holds checkpoints of an earlier run ({names}): pass --resume to continue it, --force to "
                "delete them and start over, or choose another --work-dir"
            )
        for path in earlier + [work_dir / name for name in RUN_FILES]:
            path.unlink(missing_ok=True)
        shutil.rmtree(work_dir / "tensorboard", ignore_errors=True)
        logger.warning("--force: deleted %d checkpoint(s) of an earlier run in %s", len(earlier), work_dir)
    return lock
