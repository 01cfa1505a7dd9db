"""The record of a ``lrformer predict`` job in its ``--out`` folder: ``manifest.jsonl``.

Each line is one input's result, a JSON object::

    {"command": "predict", "input": "/abs/photos/a.jpg", "name": "a", "outputs": ["a.png", "a_overlay.jpg"],
     "status": "done", "error": null, "rank": 0}

``status`` is ``done`` (every output written) or ``failed`` (``error`` says why). While a job runs,
every process appends its lines (one ``write`` of whole lines with ``O_APPEND``, under an exclusive
``flock``), so processes never interleave and a kill leaves at most a last line cut short. When the
job ends, the main process rewrites the file atomically with one line per input, its final status,
in input order. A re-run reads it back: the latest line of an input wins; a line that is not valid
JSON or not a ``predict`` record is named in one note and ignored, and the outputs on disk decide.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ..utils import write_bytes_atomic

try:
    import fcntl
except ImportError:  # Windows: appends of whole lines are still single writes
    fcntl = None

MANIFEST = "manifest.jsonl"
COMMAND = "predict"
DONE, FAILED = "done", "failed"


def record(
    path: Path, name: str, outputs: list[str], error: str | None = None, rank: int = 0, unwritable: list[str] = ()
) -> dict:
    """The manifest line of one input: ``done`` with its ``outputs`` (and the pictures no format could
    hold, ``unwritable``), or ``failed`` with ``error``."""
    return {"command": COMMAND, "input": str(path), "name": name, "outputs": outputs, "unwritable": list(unwritable),
            "status": FAILED if error else DONE, "error": error, "rank": rank}  # fmt: skip


class Manifest:
    """``OUT/manifest.jsonl``: appended to by every process of a job, compacted by the main one."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / MANIFEST

    def read(self) -> tuple[dict[str, dict], str | None]:
        """The latest record of each input, and a one-line note about the lines that were ignored (or ``None``)."""
        records: dict[str, dict] = {}
        ignored: list[int] = []
        first = ""
        try:
            lines = self.path.read_bytes().decode("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return records, None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                valid = entry.get("command") == COMMAND and isinstance(entry.get("input"), str)
                valid = valid and entry.get("status") in (DONE, FAILED) and isinstance(entry.get("outputs"), list)
            except (ValueError, AttributeError):
                valid, entry = False, None
            if not valid:
                ignored.append(number)
                first = first or (line[:60] + ("..." if len(line) > 60 else ""))
                continue
            records[entry["input"]] = entry
        note = None
        if ignored:
            note = (f"{len(ignored)} line(s) of {self.path} are not lrformer predict records (line {ignored[0]}: "
                    f"{first!r}): ignored; the outputs on disk decide what is done")  # fmt: skip
        return records, note

    def append(self, entries: Iterable[dict]) -> None:
        """Append whole lines in one write, under an exclusive lock (several processes may append)."""
        data = "".join(json.dumps(entry) + "\n" for entry in entries).encode()
        if not data:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line a kill cut short: start a new one
                data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock

    def compact(self, order: list[str]) -> dict[str, dict]:
        """Rewrite the file atomically with the latest record of each input, in the order of ``order``
        (inputs with no record are left out); returns those records."""
        records, _ = self.read()
        final = {key: records[key] for key in order if key in records}
        write_bytes_atomic(self.path, "".join(json.dumps(entry) + "\n" for entry in final.values()).encode())
        return final
