"""Small helpers used across the package."""

from __future__ import annotations

import contextlib
import difflib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def did_you_mean(key: str, valid: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=cutoff)
    return f" Did you mean {close[0]!r}?" if close else ""


def peak_memory_mb(device) -> float:
    """Peak memory of this process on ``device``: CUDA max allocated, or CPU peak RSS."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    A crash or an exception leaves any existing ``path`` untouched and removes the temporary file.
    The temporary name keeps the suffix so that writers choosing a format by extension work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
