"""Finding input files in folders and globs, following symbolic links once.

A folder reached a second time (a symbolic-link loop, or two links to one folder) is skipped, and
so is a broken link; each skip is reported as a note, so nothing is dropped without a word and
nothing is visited twice. Globs follow the shell's rules: ``*`` and ``?`` within a name, ``**`` for
any number of folders, names starting with ``.`` only matched by a pattern starting with ``.``.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Callable

GLOB_CHARS = ("*", "?", "[")


def walk_files(root: str | Path, keep: Callable[[Path], bool] = lambda p: True, max_depth: int | None = None):
    """The files under ``root`` that ``keep`` accepts, sorted, and notes on what was skipped.

    Symbolic links to folders are followed, each real folder once; hidden names (starting with
    ``.``, such as the temporaries of interrupted writes) are left out, as the shell does.

    Args:
        root: the folder to walk.
        keep: which files to return.
        max_depth: how many folder levels below ``root`` to enter (``None``: all).

    Returns:
        ``(files, notes)``: paths as reached from ``root`` (links not resolved), and one message
        per skipped link.
    """
    root = Path(root)
    files: list[Path] = []
    notes: list[str] = []
    seen: dict[str, Path] = {}
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            notes.append(f"{folder}: skipped, a link to {seen[real]} which is already included")
            continue
        seen[real] = folder
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            notes.append(f"{folder}: cannot be listed ({exc.strerror or exc})")
            continue
        for entry in entries:
            path = folder / entry.name
            if entry.name.startswith("."):  # hidden, as for the shell (and temporaries of interrupted writes)
                continue
            if _is_dir(entry):
                if max_depth is None or depth < max_depth:
                    stack.append((path, depth + 1))
            elif _is_file(entry):
                if keep(path):
                    files.append(path)
            elif entry.is_symlink():
                notes.append(f"{path}: skipped, a broken link")
    return sorted(files), notes


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file(follow_symlinks=True)
    except OSError:
        return False


def glob_files(pattern: str, keep: Callable[[Path], bool] = lambda p: True) -> tuple[list[Path], list[str]]:
    """Files matching the shell ``pattern`` (``**`` recursive), sorted, and notes on skipped links."""
    parts = Path(pattern).parts
    first = next((i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARS)), len(parts))
    base = Path(*parts[:first]) if first else Path(".")
    rest = parts[first:]
    if not rest:
        return ([base] if base.is_file() and keep(base) else []), []
    if not base.is_dir():
        return [], []
    depth = None if "**" in rest else len(rest) - 1
    files, notes = walk_files(base, keep, max_depth=depth)
    return [p for p in files if _matches(rest, p.relative_to(base).parts)], notes


def _matches(pattern: tuple[str, ...], names: tuple[str, ...]) -> bool:
    """Whether the path ``names`` matches the ``pattern`` components (``**``: zero or more folders)."""
    if not pattern:
        return not names
    if pattern[0] == "**":
        return any(_matches(pattern[1:], names[k:]) for k in range(len(names) + 1) if not _hidden(names[:k]))
    if not names or (names[0].startswith(".") and not pattern[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(names[0], pattern[0]) and _matches(pattern[1:], names[1:])


def _hidden(names: tuple[str, ...]) -> bool:
    return any(name.startswith(".") for name in names)
