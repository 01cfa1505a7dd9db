"""Loading released (and our own) checkpoints into LRFormer models, with key-by-key diagnostics
and fine-tuning to another class count (files, URLs and Hub names are read by :mod:`.weights`).

Accepted forms: a dict with ``state_dict`` or ``model``, or the state dict itself; keys
may carry a ``module.`` prefix; weights may be fp16. Segmentation checkpoints hold ``backbone.*``
and ``decode_head.*``; ImageNet checkpoints hold the backbone alone, without prefix. A feature
backbone that does not build its last stages (``out_indices``) ignores their keys.

Design notes: ``docs/design.md``, section 5 (the released checkpoint layout).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointMismatchError
from .registry import variant_layout, variant_names
from .weights import Checkpoint, read_checkpoint, unwrap_state_dict

logger = logging.getLogger(__name__)

CLASSIFIER_PREFIXES = ("head.",)
"""Keys of ImageNet classification heads, ignored when a backbone-only file is loaded."""

CLASS_DEPENDENT_PREFIXES = ("decode_head.conv_seg.", "decode_head.cls_embed.")
"""The only keys whose shape depends on the number of classes: LRHead's classifier and the
LRFormer+ class embedding (``num_classes + 1`` rows, the last one "no object")."""


def checkpoint_classes(state: Mapping[str, torch.Tensor]) -> int | None:
    """The number of classes a segmentation state dict was trained for (``None``: no classifier)."""
    if "decode_head.conv_seg.weight" in state:
        return int(state["decode_head.conv_seg.weight"].shape[0])
    if "decode_head.cls_embed.weight" in state:
        return int(state["decode_head.cls_embed.weight"].shape[0]) - 1
    return None


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: keys it could not place and keys it left untouched."""

    missing: dict[str, tuple] = field(default_factory=dict)
    unexpected: dict[str, tuple] = field(default_factory=dict)
    mismatched: dict[str, tuple[tuple, tuple]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    reset: dict[str, tuple[tuple, tuple]] = field(default_factory=dict)
    """Class-dependent keys of another class count, left at their initialisation (fine-tuning)."""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _adapt_to_model(
    state: dict[str, torch.Tensor], model: nn.Module, report: LoadReport
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rename the file's keys to the model's: backbone-only files onto segmentors (``backbone.``
    added), segmentor or ImageNet files onto bare backbones (``backbone.`` stripped).

    The file keys left out go to ``report.ignored`` under their names in the file: a segmentor
    file's decode head (bare backbone), an ImageNet classifier (``head.*``), and the keys under the
    :func:`pruned_prefixes` of the model (the stages a feature backbone does not build).

    Returns:
        the state to load, and the file's whole layout in the model's names (pruned stages
        included), from which :func:`guess_variant` names the file's variant.
    """
    model_is_segmentor = hasattr(model, "backbone")
    if any(k.startswith("backbone.") for k in state):
        if model_is_segmentor:
            names = {k: k for k in state}
        else:
            names = {k: k[len("backbone.") :] for k in state if k.startswith("backbone.")}
    else:
        names = {
            k: f"backbone.{k}" if model_is_segmentor else k for k in state if not k.startswith(CLASSIFIER_PREFIXES)
        }
        classifier = [k for k in state if k.startswith(CLASSIFIER_PREFIXES)]
        if classifier:
            logger.info("ignoring the classifier keys of a backbone-only checkpoint: %s", classifier)
        if model_is_segmentor:
            logger.info("backbone-only checkpoint: the decode head keeps its initialisation")
    prefixes = pruned_prefixes(model)
    pruned = {k for k, name in names.items() if prefixes and name.startswith(prefixes)}
    if pruned:
        logger.info("ignoring %d key(s) of the stages the model does not build (%s)", len(pruned), ", ".join(prefixes))
    report.ignored += [k for k in state if k not in names or k in pruned]
    layout = {name: state[k] for k, name in names.items()}
    return {name: state[k] for k, name in names.items() if k not in pruned}, layout


def pruned_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of the modules ``model`` does not build: every submodule's
    ``pruned_prefixes`` (e.g. a feature backbone's stages after its last ``out_indices``), under its name."""
    return tuple(
        f"{name}.{prefix}" if name else prefix
        for name, module in model.named_modules()
        for prefix in getattr(module, "pruned_prefixes", ())
    )


def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


def _format_keys(title: str, rows: list[str], limit: int = 40) -> list[str]:
    lines = [f"  {title}:"] + [f"    {r}" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"    ... and {len(rows) - limit} more")
    return lines


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None) or {}
    name = config.get("name") or type(model).__name__
    return f"{name}, features_only, out_indices={tuple(config['out_indices'])}" if config.get("features_only") else name


def mismatch_message(report: LoadReport, source: str, model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Human-readable, grouped description of a key/shape mismatch, with a guess of the file's variant."""
    lines = [f"checkpoint {source} does not match the model ({_model_name(model)}):"]
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
    lines.append(
        "Create the matching model; to fine-tune to another class count pass num_classes to create_model "
        "(only the classifier is re-initialised); strict=False loads only the keys that match."
    )
    return "\n".join(lines)


def guess_variant(state: Mapping[str, torch.Tensor]) -> str:
    """Which released variant a state dict looks like (by keys and shapes, ignoring the class count)."""
    shapes = {k: _shape(v) for k, v in state.items()}
    if not any(k.startswith("backbone.") for k in shapes):
        shapes = {f"backbone.{k}": s for k, s in shapes.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    best, best_agree = "", 0.0
    for name in variant_names():
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


def load_checkpoint(
    model: nn.Module,
    path_or_url: str | Path | Mapping[str, Any] | Checkpoint,
    strict: bool = True,
    reset_classifier: bool = False,
) -> LoadReport:
    """Load a checkpoint into ``model``, casting every tensor to the model's dtype.

    Args:
        model: an LRFormer segmentor or a bare backbone (a feature backbone ignores the keys of the
            stages it does not build; they are listed in ``LoadReport.ignored``).
        path_or_url: local path (PyTorch or ``.safetensors``), http(s) URL (downloaded once to
            ``~/.cache/lrformer``; ``URL#sha256=HEX`` checks it), ``hf-hub:OWNER/REPO/PATH[@REVISION]``,
            a released model's tag (``lrformer_t.ade20k``), or an already loaded checkpoint object.
        strict: raise :class:`CheckpointMismatchError` listing every missing, unexpected and
            mis-shaped key (and the variant the file looks like) instead of loading a partial match.
        reset_classifier: fine-tuning to another class count: when the class-dependent layers
            (:data:`CLASS_DEPENDENT_PREFIXES`) differ in shape, keep them at their initialisation
            and log their names; every other weight must still match (with ``strict``).

    Returns:
        a :class:`LoadReport`; with ``strict=False`` it says what was skipped.
    """
    source, state = _read_state(path_or_url)
    report = LoadReport()
    state, layout = _adapt_to_model(state, model, report)
    own = model.state_dict()
    _compare(state, own, report, reset_classifier, backbone_only=_is_backbone_only(model, state))
    if not report.ok and strict:
        raise _mismatch_error(report, source, model, layout)
    loadable = {
        k: v.to(own[k].dtype) if v.is_floating_point() else v
        for k, v in state.items()
        if k in own and k not in report.mismatched and k not in report.reset
    }
    model.load_state_dict(loadable, strict=False)
    if report.reset:
        rows = ", ".join(f"{k} {list(c)} -> {list(m)}" for k, (c, m) in sorted(report.reset.items()))
        logger.warning(
            "fine-tuning to %s classes (checkpoint %s has %s): re-initialised %s; every other weight is loaded",
            checkpoint_classes(own), source, checkpoint_classes(state), rows,
        )  # fmt: skip
    if not report.ok:
        logger.warning(mismatch_message(report, source, model, layout))
    return report


def _read_state(path_or_url: str | Path | Mapping[str, Any] | Checkpoint) -> tuple[str, dict[str, torch.Tensor]]:
    """``(source named in messages, flat state dict)`` of what :func:`load_checkpoint` was given."""
    if isinstance(path_or_url, Checkpoint):
        return path_or_url.source, path_or_url.state_dict
    if isinstance(path_or_url, Mapping):
        return "object", unwrap_state_dict(path_or_url)
    return str(path_or_url), read_checkpoint(path_or_url).state_dict


def _is_backbone_only(model: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` (in the model's names) holds a segmentor's backbone alone: its decode head
    keeps its initialisation and is not reported missing."""
    return hasattr(model, "backbone") and not any(k.startswith("decode_head.") for k in state)


def _compare(
    state: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    report: LoadReport,
    reset_classifier: bool,
    backbone_only: bool,
) -> None:
    """Fill ``report`` with the keys of ``state`` the model (``own``) lacks, has in another shape
    (``reset`` for class-dependent ones when ``reset_classifier``), or has and ``state`` lacks
    (the decode head's not counted when ``backbone_only``)."""
    for key, value in state.items():
        if key not in own:
            report.unexpected[key] = _shape(value)
        elif _shape(value) != _shape(own[key]):
            reset = reset_classifier and key.startswith(CLASS_DEPENDENT_PREFIXES)
            (report.reset if reset else report.mismatched)[key] = (_shape(value), _shape(own[key]))
    for key, value in own.items():
        if key not in state and not (backbone_only and not key.startswith("backbone.")):
            report.missing[key] = _shape(value)


def _mismatch_error(
    report: LoadReport, source: str, model: nn.Module, layout: Mapping[str, torch.Tensor]
) -> CheckpointMismatchError:
    """The error of a strict load that does not match: every key in its message, a one-line summary."""
    error = CheckpointMismatchError(mismatch_message(report, source, model, layout))
    count = len(report.missing) + len(report.unexpected) + len(report.mismatched)
    error.summary = (
        f"checkpoint {source} does not match the model ({_model_name(model)}): {count} key(s) differ. "
        f"{guess_variant(layout)} "
        "Use the model the file was trained with, or load only the matching keys with strict=False "
        "(training: --set model.strict=false) (--debug lists every key)."
    )
    return error
