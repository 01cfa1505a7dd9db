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
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, MissingFileError
from ..utils import atomic_path, cache_dir, require_extra
from .hub import CHECKPOINT_SUFFIXES, HUB_PREFIX, download, hub_download, parse_hub_name, verify_sha256  # noqa: F401 (parse_hub_name: API)
from .zoo import is_tag, released_model, released_source

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
    """Whether ``source`` is downloaded: a Hub name, a URL or a released model's tag (not a local file)."""
    text = str(source)
    return text.startswith(HUB_PREFIX) or "://" in text or is_tag(text)


def looks_like_checkpoint(source: str | Path) -> bool:
    """Whether ``source`` names weights (a Hub name, a URL, or a file with a checkpoint suffix)."""
    return is_remote(source) or Path(str(source)).suffix.lower() in CHECKPOINT_SUFFIXES


def url_download(url: str) -> Path:
    """Download ``url`` once into the cache directory and return the local path.

    ``URL#sha256=HEX`` gives the file's sha256: the download is checked before it is moved into the
    cache, and the cached file every time it is used. The download goes to a temporary file renamed
    when complete, so an interrupted one leaves nothing half-written in its place (the next call starts
    again); two processes downloading at once each write their own temporary file.
    """
    address, _, fragment = url.partition("#")
    sha256 = fragment[len("sha256=") :].strip().lower() if fragment.startswith("sha256=") else None
    if fragment and not sha256 or sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise CheckpointError(f"{url}: the part after # must be sha256= and 64 hex digits, e.g. URL#sha256=9f86d0...")
    digest = hashlib.sha256(address.encode()).hexdigest()[:12]
    target = cache_dir() / f"{digest}_{Path(address.split('?')[0]).name}"
    if not target.exists():
        _remove_abandoned(target)
        try:
            with atomic_path(target) as tmp:
                torch.hub.download_url_to_file(address, str(tmp), progress=True)
                if sha256:
                    verify_sha256(tmp, sha256, address)
        except CheckpointError:
            raise CheckpointError(f"the download of {address} does not match its sha256 {sha256[:12]}... (not kept); "
                                  "check the address and the sha256, then run again") from None  # fmt: skip
        except Exception as exc:  # URLError, HTTPError, timeouts, unknown schemes, a full disk
            reason = getattr(exc, "reason", None) or exc
            raise CheckpointError(
                f"cannot download {address}: {reason}; check the address and the network, or download the file "
                "yourself and pass its local path"
            ) from exc
    elif sha256:
        verify_sha256(target, sha256, address)
    return target


def _remove_abandoned(target: Path, age: float = 86400.0) -> None:
    """Delete what downloads of ``target`` killed more than ``age`` seconds ago left behind (their
    temporary files, hidden, named after it); younger ones may belong to a download still running."""
    stem = target.name.split("_", 1)[0]
    for path in target.parent.glob(f".{stem}_*"):
        try:
            if time.time() - path.stat().st_mtime > age:
                path.unlink()
        except OSError:
            pass


def _released_download(tag: str) -> Path:
    """The cached download of a released model's file; when it fails (the file renamed, replaced or
    removed since the repository was listed), the repository is listed again and the file chosen anew."""
    released = released_model(tag)
    name, sha256 = released_source(released)
    try:
        return download(*parse_hub_name(name), sha256=sha256)
    except CheckpointError:
        if released.path:
            raise
        fresh, _ = released_source(released, refresh=True)
        if fresh == name:
            raise
        return download(*parse_hub_name(fresh), sha256=sha256)


def local_path(source: str | Path) -> Path:
    """``source`` as a local file: a released-model tag, Hub name or URL is downloaded (cached), a path is checked."""
    text = str(source)
    path = Path(source)
    if is_tag(text):
        return _released_download(text)
    if text.startswith(HUB_PREFIX):
        return hub_download(text)
    if "://" in text:
        return url_download(text)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: give the checkpoint file inside it")
    if not path.is_file():
        raise MissingFileError(
            f"checkpoint {path} does not exist (give a local file, an http(s) URL, hf-hub:OWNER/REPO/PATH or a "
            "released model's tag, see `lrformer models`)"
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
        if is_remote(source) and "Unsupported global" not in str(exc):  # a damaged download: name it and the fix
            raise CheckpointError(
                f"cannot read {path}, the cached download of {source}: {load_failure(exc)}; delete it "
                f"(rm '{os.path.realpath(path)}') and run again to download it afresh"
            ) from exc
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
