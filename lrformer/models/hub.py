"""The Hugging Face Hub: ``hf-hub:`` names, the listing of a repository (cached), and downloads into
the Hub's shared cache, checked against the sha256 the Hub announced for each file.

The environment is read at each call, so ``HF_ENDPOINT``, ``HF_HUB_CACHE`` / ``HF_HOME`` and
``HF_HUB_OFFLINE`` set after ``huggingface_hub`` was imported still apply. Downloads are
``huggingface_hub``'s: written to a temporary file (``blobs/*.incomplete``) and moved into place
when complete, so an interrupted download leaves nothing under the file's name and the next call
downloads it again (the client retries a broken connection itself a few times). The client checks
only the size; the content of a file stored with Git LFS (every checkpoint) is checked here against
the sha256 the Hub announced for it (by which the cache names the file's blob) or a released-model
entry pins, every time it is used, so a damaged cached copy is named with the fix and never loaded.

Design notes: ``docs/design.md``, section 5 (released checkpoints and where they come from).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..utils import cache_dir, require_extra, write_bytes_atomic

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
DEFAULT_REVISION = "main"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
"""File suffixes of weights (a Hub file or a local one)."""


@dataclass(frozen=True)
class HubFile:
    """A file of a Hub repository: its path in the repository, size in bytes and, for files stored
    with Git LFS (checkpoints), the sha256 of its content."""

    path: str
    size: int | None = None
    sha256: str | None = None


def parse_hub_name(name: str) -> tuple[str, str, str | None]:
    """``hf-hub:OWNER/REPO/PATH[@REVISION]`` → ``(repo_id, filename, revision)``."""
    body = name[len(HUB_PREFIX) :]
    revision = None
    if "@" in body:
        body, revision = body.rsplit("@", 1)
    parts = body.split("/")
    if len(parts) < 3 or not all(parts) or (revision is not None and not revision):
        raise CheckpointError(
            f"{name}: a Hub name is hf-hub:OWNER/REPO/PATH[@REVISION], "
            "e.g. hf-hub:yuhuan-wu/LRFormer-Models/FILE.pth (PATH is the file inside the repository)"
        )
    return "/".join(parts[:2]), "/".join(parts[2:]), revision


def hub_name(repo_id: str, filename: str, revision: str | None = None) -> str:
    """The ``hf-hub:`` name of a file (the inverse of :func:`parse_hub_name`)."""
    return f"{HUB_PREFIX}{repo_id}/{filename}" + (f"@{revision}" if revision else "")


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """Whether Hub downloads are off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, read now)."""
    return _true(os.environ.get("HF_HUB_OFFLINE")) or _true(os.environ.get("TRANSFORMERS_OFFLINE"))


def _client_options() -> dict[str, Any]:
    """``endpoint`` and ``cache_dir`` for ``huggingface_hub`` calls, from the environment as it is now
    (``None``: the library's own default)."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    cache = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
    )
    return {"endpoint": endpoint, "cache_dir": cache}


def hub_cache_root() -> Path:
    """The Hub's cache folder as the library would choose it now."""
    cache = _client_options()["cache_dir"]
    if cache:
        return Path(cache)
    return Path(require_extra("huggingface_hub", "hub", "the Hub cache").constants.HF_HUB_CACHE)


# --- listing ---------------------------------------------------------------------------------------


def _listing_path(repo_id: str, revision: str) -> Path:
    return cache_dir() / "hub-listings" / repo_id.replace("/", "--") / f"{revision.replace('/', '--')}.json"


def cached_listing(repo_id: str, revision: str | None = None) -> list[HubFile] | None:
    """The listing of ``repo_id`` saved by :func:`list_files`, or ``None`` (none, or unreadable)."""
    path = _listing_path(repo_id, revision or DEFAULT_REVISION)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [HubFile(**entry) for entry in data["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_files(repo_id: str, revision: str | None = None, refresh: bool = False) -> list[HubFile]:
    """The files of a Hub repository, listed once and cached (``$LRFORMER_CACHE/hub-listings``).

    ``refresh`` lists the repository again. Offline, or when the Hub cannot be reached, the cached
    listing is used; without one, the files already in the Hub cache; without those, a
    :class:`CheckpointError` says how to get them.
    """
    revision = revision or DEFAULT_REVISION
    cached = cached_listing(repo_id, revision)
    if cached is not None and not refresh:
        return cached
    hub = require_extra("huggingface_hub", "hub", f"listing the Hub repository {repo_id}")
    failure: BaseException | None = None
    listing = None
    if not offline():
        try:
            api = hub.HfApi(endpoint=_client_options()["endpoint"])
            entries = api.list_repo_tree(repo_id, recursive=True, revision=revision)
            listing = [_hub_file(entry) for entry in entries if not _is_folder(entry)]
        except Exception as exc:  # no network, unknown repository / revision
            failure = exc
    if listing is not None:
        payload = {"repo_id": repo_id, "revision": revision, "listed_at": time.time(),
                   "files": [asdict(f) for f in listing]}  # fmt: skip
        try:
            write_bytes_atomic(_listing_path(repo_id, revision), json.dumps(payload, indent=1).encode())
        except OSError as exc:  # the listing is used all the same; it is asked for again next time
            logger.warning("cannot cache the listing of %s in %s (%s)", repo_id, cache_dir(), exc.strerror or exc)
        return listing
    return cached if cached is not None else _listing_from_cache(repo_id, revision, failure)


def _is_folder(entry: Any) -> bool:
    return type(entry).__name__ == "RepoFolder"


def _hub_file(entry: Any) -> HubFile:
    lfs = getattr(entry, "lfs", None)
    sha256 = (lfs.get("sha256") or lfs.get("oid")) if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
    return HubFile(entry.path, getattr(entry, "size", None), sha256)


def _listing_from_cache(repo_id: str, revision: str, failure: BaseException | None) -> list[HubFile]:
    """The files of ``repo_id`` at ``revision`` already in the Hub cache (a listing of last resort)."""
    folder = hub_cache_root() / f"models--{repo_id.replace('/', '--')}"
    ref = folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = folder / "snapshots" / commit
    files = sorted(
        HubFile(p.relative_to(snapshot).as_posix(), p.stat().st_size)
        for p in snapshot.rglob("*") if p.is_file()
    ) if snapshot.is_dir() else []  # fmt: skip
    if files:
        return files
    if failure is None:
        reason = "downloads are off (HF_HUB_OFFLINE=1) and nothing of it is cached"
        fix = "connect once without HF_HUB_OFFLINE so that its listing and files are cached"
    else:
        reason, fix = hub_failure(failure, repo_id, "", revision)
    raise CheckpointError(
        f"cannot list the Hub repository {repo_id}: {reason}; {fix}, or download the file yourself and pass its path"
    ) from failure


# --- downloads -------------------------------------------------------------------------------------


def download(repo_id: str, filename: str, revision: str | None = None, sha256: str | None = None) -> Path:
    """The local path of a Hub file: from the Hub cache, downloaded into it when missing (``HF_HUB_OFFLINE``:
    the cache only). Its content is checked against ``sha256`` (a pinned hash), else against the
    sha256 the Hub announced for it (the cache names an LFS file's blob by it)."""
    hub = require_extra("huggingface_hub", "hub", f"loading {hub_name(repo_id, filename, revision)}")
    options = {k: v for k, v in _client_options().items() if v is not None}
    if offline():
        options["local_files_only"] = True
    try:
        path = Path(hub.hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, **options))
    except Exception as exc:  # offline cache miss, unknown repo / file / revision, network errors
        reason, fix = hub_failure(exc, repo_id, filename, revision)
        raise CheckpointError(f"cannot get {hub_name(repo_id, filename, revision)}: {reason}; {fix}") from exc
    blob = os.path.basename(os.path.realpath(path))
    expected = sha256 or (blob if re.fullmatch(r"[0-9a-f]{64}", blob) else None)  # an LFS blob is named by its sha256
    if expected:
        verify_sha256(path, expected, hub_name(repo_id, filename, revision))
    return path


def hub_download(name: str) -> Path:
    """The local path of the file an ``hf-hub:`` name gives (see :func:`download`)."""
    return download(*parse_hub_name(name))


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file's content, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str, source: str) -> None:
    """Raise :class:`CheckpointError` naming the damaged download and the fix when ``path``'s sha256 is
    not ``expected``. A Hub cache entry is a link to its blob: the blob is the file to delete."""
    actual = sha256_of(path)
    if actual != expected.lower():
        stored = Path(os.path.realpath(path))
        raise CheckpointError(
            f"the downloaded {source} is damaged (sha256 {actual[:12]}..., expected {expected[:12]}...): "
            f"delete it (rm '{stored}') and run again to download it afresh"
        )


HUB_ERRORS = ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "GatedRepoError", "RepositoryNotFoundError",
              "RevisionNotFoundError", "EntryNotFoundError")  # fmt: skip
"""The ``huggingface_hub`` exceptions told apart, most specific first (a gated repository is a
``RepositoryNotFoundError``, a cache miss an ``EntryNotFoundError`` in some versions)."""


def _hub_errors() -> dict[str, type[BaseException]]:
    """The ``huggingface_hub`` exception classes by name: from ``huggingface_hub.errors`` (0.24+),
    else ``huggingface_hub.utils`` (0.20+); a class neither exports is left out."""
    found: dict[str, type[BaseException]] = {}
    for module_name in ("huggingface_hub.utils", "huggingface_hub.errors"):  # the newer module wins
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in HUB_ERRORS:
            if isinstance(getattr(module, name, None), type):
                found[name] = getattr(module, name)
    return found


def hub_failure(exc: BaseException, repo_id: str, filename: str, revision: str | None) -> tuple[str, str]:
    """Why a Hub call failed and what to do, from the exception's type."""
    kinds = _hub_errors()
    kind = next((name for name in HUB_ERRORS if name in kinds and isinstance(exc, kinds[name])), None)
    if kind in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        reason = "it is not in the local Hub cache and downloads are off (HF_HUB_OFFLINE=1 or no network)"
        return reason, "connect once without HF_HUB_OFFLINE to fill the cache, or pass a local file"
    if kind is not None:
        reason = {"GatedRepoError": f"{repo_id} needs you to log in and accept its terms",
                  "RepositoryNotFoundError": f"no repository {repo_id} (or it is private)",
                  "RevisionNotFoundError": f"{repo_id} has no revision {revision!r}",
                  "EntryNotFoundError": f"{repo_id} has no file {filename!r}"}[kind]  # fmt: skip
        return reason, f"check the name against https://huggingface.co/{repo_id}/tree/{revision or 'main'}"
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return reason, "check the network, or download the file yourself and pass its local path"


def is_cached(repo_id: str, filename: str, revision: str | None = None) -> bool:
    """Whether the Hub cache holds the file (no network)."""
    hub = require_extra("huggingface_hub", "hub", "the Hub cache")
    found = hub.try_to_load_from_cache(repo_id, filename, cache_dir=_client_options()["cache_dir"], revision=revision)
    return isinstance(found, str) and os.path.isfile(found)
