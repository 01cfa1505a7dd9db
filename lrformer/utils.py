"""Small helpers used across the package."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Iterator

from .errors import ConfigError, MissingExtraError, UnknownNameError


def cache_dir() -> Path:
    """Downloaded checkpoints, Hub listings and the demo's dataset: ``$LRFORMER_CACHE`` as it is now,
    default ``~/.cache/lrformer``."""
    return Path(os.environ.get("LRFORMER_CACHE") or Path.home() / ".cache" / "lrformer")


CACHE_DIR = cache_dir()
"""The cache folder when the package was imported (:func:`cache_dir` reads the environment again)."""


def did_you_mean(key: str, valid: list[str] | tuple[str, ...], cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=cutoff)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_key_error(key: str, valid: tuple[str, ...] | list[str], where: str) -> UnknownNameError:
    """``unknown <where> 'key'. Did you mean ...? Valid: ...`` (a ``ValueError`` and a ``KeyError``)."""
    return UnknownNameError(f"unknown {where} {key!r}.{did_you_mean(key, valid)} Valid: {', '.join(valid)}.")


def read_mapping(path: str | Path, what: str, holds: str) -> dict:
    """The mapping a YAML file (JSON for a ``.json`` suffix) holds. A file that is not UTF-8 text,
    not valid YAML/JSON (the message says the line) or not a mapping is a :class:`ConfigError`
    naming ``what`` (e.g. ``"model file"``) and what it ``holds``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a UTF-8 text file: give a YAML or JSON file") from None
    if path.suffix.lower() == ".json":
        parse, malformed, kind = json.loads, ValueError, "JSON"
    else:
        import yaml

        parse, malformed, kind = yaml.safe_load, yaml.YAMLError, "YAML"
    try:
        data = parse(text)
    except malformed as exc:  # JSON errors carry lineno and msg, YAML errors problem_mark and problem
        mark = getattr(exc, "problem_mark", None)
        line = getattr(exc, "lineno", None) or (mark.line + 1 if mark else "?")
        problem = getattr(exc, "msg", None) or getattr(exc, "problem", None) or str(exc).strip()
        raise ConfigError(f"{what} {path} is not valid {kind} at line {line}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of {holds}, got {type(data).__name__}")
    return data


def require_extra(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingExtraError` naming the extra to install.

    ``require_extra("scipy.optimize", "train", "training LRFormer+")`` → the module, or
    ``training LRFormer+ needs scipy: pip install "lrformer[train]"``. ``package`` names what to
    install when it is not the module's top-level name (``torch.utils.tensorboard`` needs tensorboard).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = package or module.split(".")[0]
        raise MissingExtraError(f'{purpose} needs {package}: pip install "lrformer[{extra}]"') from exc


def peak_memory_mb(device) -> float:
    """Peak memory of this process on ``device``: CUDA max allocated, or the CPU peak resident set.

    CPU: ``getrusage``'s ``ru_maxrss`` (KiB on Linux, bytes on macOS); on Windows, where there is no
    ``resource`` module, psutil's peak working set when psutil is installed, else NaN.
    """
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil
        except ImportError:
            return float("nan")
        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


TEMP_MARK = ".tmp"
"""Temporary files of :func:`atomic_path` are named ``.<stem>.<random>.tmp<suffix>``."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    A crash or an exception leaves any existing ``path`` untouched and removes the temporary file
    (a ``kill -9`` leaves it: :func:`remove_stale_temporaries`). The data is flushed to disk
    (``fsync``) before the rename, so a full disk fails here instead of leaving a truncated file,
    and the file gets the permissions a plain ``open`` would give (``0o666`` less the umask). The
    temporary name keeps the suffix so that writers choosing a format by extension work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f"{TEMP_MARK}{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`); errors such as a full disk raise."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def remove_stale_temporaries(folder: str | Path, suffix: str, recursive: bool = False) -> list[Path]:
    """Delete the temporary files killed :func:`atomic_path` writers left in ``folder`` (and, with
    ``recursive``, its sub-folders): those ending in ``.tmp<suffix>`` (``suffix`` ``"*"``: any), e.g.
    ``.iter_8.k3j2.tmp.pth``; returns them. Only the holder of the folder may call it."""
    pattern = f".*{TEMP_MARK}{suffix}"
    form = re.compile(rf"^\..+\.[A-Za-z0-9_]+{re.escape(TEMP_MARK)}(\.[A-Za-z0-9]+)?$")  # .STEM.RANDOM.tmp.SUFFIX
    found = Path(folder).rglob(pattern) if recursive else Path(folder).glob(pattern)
    stale = sorted(p for p in found if p.is_file() and form.match(p.name))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask
