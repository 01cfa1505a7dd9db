"""The record of a ``lrformer predict`` job in its ``--out`` folder: ``manifest.jsonl``.

Each line is one input's result, a JSON object::

    {"command": "predict", "input": "/abs/photos/a.jpg", "name": "a", "outputs": ["a.png", "a_overlay.jpg"],
     "status": "done", "error": null, "rank": 0, "settings": "3f2a9c0d1b7e"}

``status`` is ``done`` (every output written) or ``failed`` (``error`` says why; what was written is
listed). ``settings`` fingerprints the options that shape the outputs (weights, test settings,
palette, ...); ``shard`` (``"K/N"``) is there when a ``--shard`` run wrote the line. While a job
runs, every process appends its lines (one ``write`` of whole lines with ``O_APPEND``, under an
exclusive lock), so processes never interleave and a kill leaves at most a last line cut short. When
the job ends, the main process rewrites the file atomically with one line per input, its final
status: the job's inputs in sorted-path order, then the inputs of earlier jobs it was not given
(one line per output name: the input that wrote a name's files last), after any lines of other
programs, which are kept as they are. A re-run reads it back: the latest
line of an input wins; a line that is not valid JSON or not a ``predict`` record is named in one
note and ignored, and the outputs on disk decide.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from ..locking import last_byte, lock
from ..utils import write_bytes_atomic

MANIFEST = "manifest.jsonl"
COMMAND = "predict"
DONE, FAILED = "done", "failed"
T = TypeVar("T")


def record(
    path: Path, name: str, outputs: list[str], error: str | None = None, rank: int = 0, settings: str | None = None,
    shard: tuple[int, int] | None = None,
) -> dict:  # fmt: skip
    """The manifest line of one input: ``done`` with its ``outputs``, or ``failed`` with ``error``
    (and the outputs that were written all the same)."""
    entry = {"command": COMMAND, "input": str(path), "name": name, "outputs": outputs,
             "status": FAILED if error else DONE, "error": error, "rank": rank, "settings": settings}  # fmt: skip
    if shard:
        entry["shard"] = f"{shard[0]}/{shard[1]}"
    return entry


class Manifest:
    """``OUT/manifest.jsonl``: appended to by every process of a job, compacted by the main one."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / MANIFEST

    def read(self, keep: Callable[[dict], T] = lambda entry: entry) -> tuple[dict[str, T], str | None]:
        """The latest record of each output name (whichever path its input was given by) as ``keep``
        makes it (at a million inputs, keep little), and a one-line note about the lines that were
        ignored (or ``None``)."""
        records: dict[str, T] = {}
        ignored: list[tuple[int, str]] = []
        for number, line, entry in self._lines():
            if entry is None:
                ignored.append((number, line))
            else:
                records[entry["name"]] = keep(entry)
        note = None
        if ignored:
            number, line = ignored[0]
            note = (f"{len(ignored)} line(s) of {self.path} are not lrformer predict records (line {number}: "
                    f"{line[:60] + ('...' if len(line) > 60 else '')!r}): ignored; the outputs on disk decide what is "
                    "done")  # fmt: skip
        return records, note

    def _lines(self) -> Iterator[tuple[int, str, dict | None]]:
        """Each non-empty line, numbered from 1, with its record (``None``: not a predict record)."""
        try:
            handle = open(self.path, encoding="utf-8", errors="replace", newline="\n")
        except FileNotFoundError:
            return
        with handle:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\n")
                if line.strip():
                    yield number, line, _predict_record(line)

    def append(self, entries: Iterable[dict]) -> None:
        """Append whole lines in one write, under an exclusive lock (several processes may append)."""
        data = "".join(json.dumps(entry) + "\n" for entry in entries).encode()
        if not data:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            lock(fd)
            if last_byte(fd) not in (b"", b"\n"):  # a line a kill cut short: start a new one
                data = b"\n" + data
            os.write(fd, data)  # no fsync: a killed process loses nothing, and the outputs decide after a crash
        finally:
            os.close(fd)  # releases the lock

    def compact(self, order: list[str]) -> dict[str, dict]:
        """Rewrite the file atomically with one line per output name, its latest record (the outputs
        of a name are one set of files, whichever input wrote them last): the names of ``order`` in
        that order, then the other names' (earlier jobs', other shards') in the order of their
        latest records; lines of other programs stay first, as they were; cut-short lines go. Returns the
        records of ``order``."""
        records: dict[str, dict] = {}
        foreign: list[str] = []
        for _, line, entry in self._lines():
            if entry is not None:
                records.pop(entry["name"], None)  # the latest record of a name goes last, as it was
                records[entry["name"]] = entry
            elif _is_json_object(line):
                foreign.append(line + "\n")
        final = {key: records.pop(key) for key in order if key in records}
        lines = foreign + [json.dumps(entry) + "\n" for entry in (*final.values(), *records.values())]
        write_bytes_atomic(self.path, "".join(lines).encode())
        return final


def _predict_record(line: str) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    valid = isinstance(entry, dict) and entry.get("command") == COMMAND
    valid = valid and isinstance(entry.get("input"), str) and isinstance(entry.get("name"), str)
    valid = valid and entry.get("status") in (DONE, FAILED) and isinstance(entry.get("outputs"), list)
    return entry if valid else None


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
