"""Reading released (and our own) checkpoints into LRFormer models, with key-by-key diagnostics.

Accepted forms: a dict with ``state_dict`` or ``model``, or the state dict itself; keys
may carry a ``module.`` prefix; weights may be fp16. Segmentation checkpoints hold ``backbone.*``
and ``decode_head.*``; ImageNet checkpoints hold the backbone alone, without prefix.

Design notes: ``docs/design.md``, section 5 (the released checkpoint layout).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..utils import CACHE_DIR, atomic_path
from .registry import list_models, variant_layout

logger = logging.getLogger(__name__)

CLASSIFIER_PREFIXES = ("head.",)
"""Keys of ImageNet classification heads, ignored when a backbone-only file is loaded."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """Raised by a strict load when keys or shapes differ; the message lists them all, ``summary``
    says it in one line."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: keys it could not place and keys it left untouched."""

    missing: dict[str, tuple] = field(default_factory=dict)
    unexpected: dict[str, tuple] = field(default_factory=dict)
    mismatched: dict[str, tuple[tuple, tuple]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _is_url(path: str | Path) -> bool:
    return "://" in str(path)


def _download(url: str) -> Path:
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


def read_state_dict(path_or_url: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file (``weights_only=True``) and return its flat state dict, unwrapped.

    Unwraps ``state_dict`` / ``model`` and strips a ``module.`` prefix.
    """
    path = _download(str(path_or_url)) if _is_url(path_or_url) else Path(path_or_url)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: give the checkpoint file inside it")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (give a local file path or an http(s) URL)")
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
    return unwrap_state_dict(obj, source=str(path))


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


def _adapt_to_model(state: dict[str, torch.Tensor], model: nn.Module, report: LoadReport) -> dict[str, torch.Tensor]:
    """Map backbone-only files onto segmentors, and segmentor or ImageNet files onto bare backbones.

    The keys left out (a segmentor file's decode head, an ImageNet classifier) go to ``report.ignored``.
    """
    has_backbone_prefix = any(k.startswith("backbone.") for k in state)
    model_is_segmentor = hasattr(model, "backbone")
    if has_backbone_prefix:
        if model_is_segmentor:
            return state
        report.ignored = [k for k in state if not k.startswith("backbone.")]
        return {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    report.ignored = [k for k in state if k.startswith(CLASSIFIER_PREFIXES)]
    if report.ignored:
        logger.info("ignoring the classifier keys of a backbone-only checkpoint: %s", report.ignored)
    state = {k: v for k, v in state.items() if k not in report.ignored}
    if not model_is_segmentor:
        return state
    logger.info("backbone-only checkpoint: the decode head keeps its initialisation")
    return {f"backbone.{k}": v for k, v in state.items()}


def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


def _format_keys(title: str, rows: list[str], limit: int = 40) -> list[str]:
    lines = [f"  {title}:"] + [f"    {r}" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"    ... and {len(rows) - limit} more")
    return lines


def mismatch_message(report: LoadReport, source: str, model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Human-readable, grouped description of a key/shape mismatch, with a guess of the file's variant."""
    name = getattr(model, "config", {}).get("name") or type(model).__name__
    lines = [f"checkpoint {source} does not match the model ({name}):"]
    if report.mismatched:
        rows = [f"{k}: checkpoint {list(c)} vs model {list(m)}" for k, (c, m) in sorted(report.mismatched.items())]
        lines += _format_keys(f"{len(rows)} key(s) with a different shape", rows)
    if report.missing:
        rows = [f"{k} {list(s)}" for k, s in sorted(report.missing.items())]
        lines += _format_keys(f"{len(rows)} key(s) missing from the checkpoint", rows)
    if report.unexpected:
        rows = [f"{k} {list(s)}" for k, s in sorted(report.unexpected.items())]
        lines += _format_keys(f"{len(rows)} unexpected key(s) in the checkpoint", rows)
    lines.append(guess_variant(state))
    lines.append("Create the matching model, or pass strict=False to load only the keys that match.")
    return "\n".join(lines)


def guess_variant(state: Mapping[str, torch.Tensor]) -> str:
    """Which released variant a state dict looks like (by keys and shapes, ignoring the class count)."""
    shapes = {k: _shape(v) for k, v in state.items()}
    if not any(k.startswith("backbone.") for k in shapes):
        shapes = {f"backbone.{k}": s for k, s in shapes.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    best, best_agree = "", 0.0
    for name in list_models():
        layout = variant_layout(name)
        if not any(k.startswith("decode_head.") for k in shapes):
            layout = {k: s for k, s in layout.items() if k.startswith("backbone.")}
        agree = sum(1 for k, s in shapes.items() if layout.get(k) == s or ("conv_seg" in k and k in layout))
        if agree == len(shapes) == len(layout):
            conv_seg = shapes.get("decode_head.conv_seg.weight")
            if conv_seg is None:
                return f"The checkpoint looks like the backbone of {name}."
            return f"The checkpoint looks like {name} with {conv_seg[0]} classes: create_model({name!r}, num_classes={conv_seg[0]})."
        score = agree / max(len(shapes), len(layout))
        if score > best_agree:
            best, best_agree = f"{name} ({agree} of {len(layout)} keys agree)", score
    if best_agree > 0.5:
        return f"The closest released variant is {best}; the file is damaged or from a modified model."
    return "The checkpoint does not look like any released LRFormer variant."


def load_checkpoint(model: nn.Module, path_or_url: str | Path | Mapping[str, Any], strict: bool = True) -> LoadReport:
    """Load a checkpoint into ``model``, casting every tensor to the model's dtype.

    Args:
        model: an LRFormer segmentor (or a bare backbone).
        path_or_url: local path, http(s) URL (downloaded once to ``~/.cache/lrformer``), or an
            already loaded checkpoint object.
        strict: raise :class:`CheckpointMismatchError` listing every missing, unexpected and
            mis-shaped key (and the variant the file looks like) instead of loading a partial match.

    Returns:
        a :class:`LoadReport`; with ``strict=False`` it says what was skipped.
    """
    if isinstance(path_or_url, Mapping):
        source, state = "object", unwrap_state_dict(path_or_url)
    else:
        source, state = str(path_or_url), read_state_dict(path_or_url)
    report = LoadReport()
    state = _adapt_to_model(state, model, report)
    own = model.state_dict()
    for key, value in state.items():
        if key not in own:
            report.unexpected[key] = _shape(value)
        elif _shape(value) != _shape(own[key]):
            report.mismatched[key] = (_shape(value), _shape(own[key]))
    backbone_only = hasattr(model, "backbone") and not any(k.startswith("decode_head.") for k in state)
    for key, value in own.items():
        if key not in state and not (backbone_only and not key.startswith("backbone.")):
            report.missing[key] = _shape(value)
    if not report.ok and strict:
        error = CheckpointMismatchError(mismatch_message(report, source, model, state))
        count = len(report.missing) + len(report.unexpected) + len(report.mismatched)
        name = getattr(model, "config", {}).get("name") or type(model).__name__
        error.summary = (
            f"checkpoint {source} does not match the model ({name}): {count} key(s) differ. {guess_variant(state)} "
            "Use the model (and number of classes) the file was trained with (--debug lists every key)."
        )
        raise error
    loadable = {
        k: v.to(own[k].dtype) if v.is_floating_point() else v
        for k, v in state.items()
        if k in own and k not in report.mismatched
    }
    model.load_state_dict(loadable, strict=False)
    if not report.ok:
        logger.warning(mismatch_message(report, source, model, state))
    return report
