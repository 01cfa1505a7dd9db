"""Where weights come from and how they are stored: local files, http(s) URLs, the Hugging Face
Hub (``hf-hub:OWNER/REPO/PATH[@REVISION]``), in PyTorch or safetensors format.

A checkpoint is read into a :class:`Checkpoint`: the flat state dict plus, for files written by
this package, the *model description* (the ``create_model`` arguments, class names, palette and
test settings), stored under the ``lrformer`` key of a PyTorch file or as JSON in the
``lrformer`` metadata entry of a safetensors file.

Design notes: ``docs/design.md``, section 5 (the released checkpoint layout).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, MissingFileError
from ..utils import CACHE_DIR, atomic_path, require_extra

HUB_PREFIX = "hf-hub:"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
DESCRIPTION_KEY = "lrformer"


@dataclass
class Checkpoint:
    """A checkpoint read from ``source``: ``state_dict`` (flat, ``module.`` stripped) and the model
    ``description`` (``None`` for files not written by this package, e.g. the released ones)."""

    state_dict: dict[str, torch.Tensor]
    description: dict[str, Any] | None
    source: str
    path: Path
    """The local file read (for a URL or Hub name, the cached download)."""


def is_remote(source: str | Path) -> bool:
    return str(source).startswith(HUB_PREFIX) or "://" in str(source)


def looks_like_checkpoint(source: str | Path) -> bool:
    """Whether ``source`` names weights (a Hub name, a URL, or a file with a checkpoint suffix)."""
    return is_remote(source) or Path(str(source)).suffix.lower() in CHECKPOINT_SUFFIXES


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


def hub_download(name: str) -> Path:
    """The local path of a Hub file: from the Hub cache (``HF_HUB_CACHE`` / ``HF_HOME``), downloaded
    into it when missing; ``HF_HUB_OFFLINE=1`` uses the cache only."""
    hub = require_extra("huggingface_hub", "hub", f"loading {name}")
    repo_id, filename, revision = parse_hub_name(name)
    try:
        return Path(hub.hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except Exception as exc:  # offline cache miss, unknown repo / file / revision, network errors
        reason, fix = _hub_failure(exc, repo_id, filename, revision)
        raise CheckpointError(f"cannot get {name}: {reason}; {fix}") from exc


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


def _hub_failure(exc: BaseException, repo_id: str, filename: str, revision: str | None) -> tuple[str, str]:
    """Why a Hub download failed and what to do, from the exception's type."""
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


def url_download(url: str) -> Path:
    """Download ``url`` once into the cache directory (atomically) and return the local path."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    target = CACHE_DIR / f"{digest}_{Path(url.split('?')[0]).name}"
    if not target.exists():
        try:
            with atomic_path(target) as tmp:
                torch.hub.download_url_to_file(url, str(tmp), progress=True)
        except Exception as exc:  # URLError, HTTPError, timeouts, unknown schemes, a full disk
            reason = getattr(exc, "reason", None) or exc
            raise CheckpointError(
                f"cannot download {url}: {reason}; check the address and the network, or download the file "
                "yourself and pass its local path"
            ) from exc
    return target


def local_path(source: str | Path) -> Path:
    """``source`` as a local file: a Hub name or URL is downloaded (cached), a path is checked."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return hub_download(text)
    if "://" in text:
        return url_download(text)
    path = Path(source)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: give the checkpoint file inside it")
    if not path.is_file():
        raise MissingFileError(
            f"checkpoint {path} does not exist (give a local file, an http(s) URL or hf-hub:OWNER/REPO/PATH)"
        )
    return path


def read_checkpoint(source: str | Path) -> Checkpoint:
    """Read weights (and the model description, if any) from a path, URL or Hub name."""
    path = local_path(source)
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path, str(source))
    try:
        with torch.serialization.safe_globals(_numpy_metadata_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors carry unhelpful messages
        error = CheckpointError(
            f"cannot read checkpoint {path} with torch.load(weights_only=True): {exc}\n"
            "A file saved with torch.save loads when it holds tensors, numbers, strings and containers "
            "(numpy scalars in its metadata are accepted too). If the file is from a source you trust and "
            "its metadata holds other objects, re-save only its weights: "
            "torch.save({'state_dict': torch.load(PATH, weights_only=False)['state_dict']}, NEW_PATH)"
        )
        error.summary = (
            f"cannot read checkpoint {path}: {load_failure(exc)} (--debug says how to re-save a trusted file)"
        )
        raise error from exc
    description = obj.get(DESCRIPTION_KEY) if isinstance(obj, Mapping) else None
    return Checkpoint(unwrap_state_dict(obj, source=str(path)), description, str(source), path)


def _read_safetensors(path: Path, source: str) -> Checkpoint:
    safetensors = require_extra("safetensors", "hub", "reading .safetensors files")
    try:
        with safetensors.safe_open(str(path), "pt", device="cpu") as file:  # one pass: tensors and metadata
            state = {key: file.get_tensor(key) for key in file.keys()}
            metadata = file.metadata() or {}
        description = json.loads(metadata[DESCRIPTION_KEY]) if DESCRIPTION_KEY in metadata else None
    except Exception as exc:
        raise CheckpointError(f"cannot read {path} as a safetensors file: it is damaged or not safetensors") from exc
    return Checkpoint(unwrap_state_dict(state, source=str(path)), description, source, path)


def save_weights(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    description: dict[str, Any] | None = None,
    fp16: bool = False,
    safetensors: bool | None = None,
) -> None:
    """Write weights alone (no optimiser or RNG state), atomically, keeping the model description.

    ``fp16`` stores floating tensors in half precision (as the released checkpoints); ``safetensors``
    (default: by the ``.safetensors`` suffix) writes the safetensors format instead of a PyTorch file.
    """
    path = Path(path)
    safetensors = path.suffix.lower() == ".safetensors" if safetensors is None else safetensors
    tensors = {
        k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().contiguous().clone()
        for k, v in state_dict.items()
    }
    with atomic_path(path) as tmp:
        if safetensors:
            writer = require_extra("safetensors.torch", "hub", "writing .safetensors files")
            metadata = {DESCRIPTION_KEY: json.dumps(description)} if description else None
            writer.save_file(tensors, str(tmp), metadata=metadata)
        else:
            torch.save({"state_dict": tensors, **({DESCRIPTION_KEY: description} if description else {})}, tmp)


def load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words."""
    if "Unsupported global" in str(exc):
        return "it holds pickled objects other than tensors and plain data, which are not loaded (unsafe)"
    return "it is damaged, or not a file written by torch.save"


def _numpy_metadata_globals() -> list:
    """numpy scalar/array reconstructors that mmengine checkpoints carry in ``meta`` (e.g. best scores)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    found = [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype]
    found += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return found


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint object (``state_dict``/``model`` wrappers, ``module.`` prefix)."""
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(
            f"{source}: no state dict found (expected tensors, or a dict with 'state_dict' or 'model')"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}
