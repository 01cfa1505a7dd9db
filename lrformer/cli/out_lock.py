"""Who may write to a ``lrformer predict --out`` folder: one job, or the shards of one split.

A whole job locks ``OUT/.lock``; share K of an N-way split (``--shard K/N``) locks
``OUT/.lock-shard-K-of-N``. Each lock file names its holder and is removed when the job ends (a
killed job's file stays, unlocked, and is removed by the next job that looks at it). A job first
takes its own lock, then looks at the others' (a shared probe, so shards starting together do not
trip over each other); it is refused when one is held that it could overlap:

* a whole job overlaps every shard, and every shard overlaps a whole job;
* shards of the same split (``K/N`` and ``J/N``) are disjoint and run side by side, while shards of
  different splits (``0/2`` and ``0/4``) share inputs and are refused.

Taking one's own lock before looking at the others means two overlapping jobs that start together
cannot both go on: the later of the two sees the earlier one's lock (at worst both stop). Windows
has no shared locks: there, shards starting at the same moment as a killed job's lock file is
probed may be refused (run them again).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..engine.workdir import WorkDirLock, holder_of
from ..errors import WorkDirError
from ..locking import lock, remove_locked, same_file

WHOLE = ".lock"
_SHARD = re.compile(r"\.lock-shard-(\d+)-of-(\d+)")


def lock_name(part: tuple[int, int] | None) -> str:
    """The lock file of the whole job (``part`` None) or of share ``K/N``."""
    return f".lock-shard-{part[0]}-of-{part[1]}" if part else WHOLE


def describe(part: tuple[int, int] | None) -> str:
    return f"lrformer predict job on shard {part[0]}/{part[1]}" if part else "lrformer predict job"


def lock_output(out: Path, part: tuple[int, int] | None = None) -> WorkDirLock:
    """Lock ``out`` for the whole job or share ``part``; a :class:`~lrformer.errors.WorkDirError`
    naming the holder when another job holds it or any share it could overlap."""
    own = WorkDirLock(out, describe(part), "--out", lock_name(part), remove=True)
    try:
        for name, other in _other_locks(out, part):
            holder = _holder_if_held(out / name)
            if holder is not None:
                raise WorkDirError(
                    f"{out} is in use by another {describe(other)} ({holder}), which could segment the same inputs as "
                    "this one; wait for it to end, or choose another --out"
                    + (" (shards of one job must all use the same N in --shard K/N)" if part and other else "")
                )
    except BaseException:
        own.release()
        raise
    return own


def _other_locks(out: Path, part: tuple[int, int] | None):
    """The lock files in ``out`` a job on ``part`` could overlap, each with the share it stands for."""
    if part:
        yield WHOLE, None
    for entry in sorted(os.listdir(out)):
        match = _SHARD.fullmatch(entry)
        if match:
            other = (int(match[1]), int(match[2]))
            if part is None or other[1] != part[1]:
                yield entry, other


def _holder_if_held(path: Path) -> str | None:
    """The holder's note when ``path`` is locked; else ``None`` (a killed job's file is removed)."""
    try:
        fd = os.open(path, os.O_RDONLY)  # another user's lock file may be read-only to us
    except FileNotFoundError:
        return None
    try:
        lock(fd, blocking=False, shared=True)
    except BlockingIOError:
        holder = holder_of(fd)
        os.close(fd)
        return holder
    if same_file(fd, path):
        remove_locked(fd, path)  # left by a killed job
    else:
        os.close(fd)
    return None
