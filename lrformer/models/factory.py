"""``create_model``: a variant by name (or a model file), optionally with a checkpoint loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..utils import unknown_key_error
from .checkpoint import load_checkpoint
from .registry import FILE_KEYS, VARIANTS, build_model, variant_config


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Arguments of ``create_model`` stored in a YAML or JSON file (``name`` defaults to ``lrformer_t``)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a model file must hold a mapping of create_model arguments, got {type(data).__name__}"
        )
    for key in data:
        if key not in FILE_KEYS:
            raise unknown_key_error(key, FILE_KEYS, f"key in {path}:")
    data = dict(data)
    data.setdefault("name", "lrformer_t")
    pretrained = data.get("pretrained")
    if pretrained and "://" not in str(pretrained) and not Path(pretrained).is_absolute():
        data["pretrained"] = str(path.parent / pretrained)
    return data


def create_model(
    name: str | Path,
    num_classes: int | None = None,
    pretrained: str | Path | None = None,
    **overrides: Any,
) -> nn.Module:
    """Create an LRFormer model.

    Args:
        name: ``lrformer_t|s|b|l`` (segmentor with LRHead), ``lrformer_xl`` (backbone only),
            ``lrformer_{t,s,b,l,xl}_plus`` (LRFormer+, Mask2Former head), or a path to a YAML/JSON
            file holding these same arguments.
        num_classes: classes of the decode head (default 150, ADE20K).
        pretrained: local path or URL of a checkpoint to load (strictly), see :func:`load_checkpoint`.
        **overrides: any of :data:`OVERRIDE_KEYS` (and :data:`PLUS_OVERRIDE_KEYS` for "+" models),
            e.g. ``embed_dims=[16, 32, 80, 64]``.

    Returns:
        an :class:`LRFormerSegmentor` in eval mode when ``pretrained`` is given, train mode otherwise.
    """
    if str(name) not in VARIANTS and Path(name).suffix.lower() in (".yaml", ".yml", ".json"):
        if not Path(name).is_file():
            raise FileNotFoundError(f"model file {name} does not exist")
        overrides = {**read_model_file(name), **overrides}
        name = overrides.pop("name")
        pretrained = pretrained or overrides.pop("pretrained", None)
        overrides.pop("pretrained", None)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    model = build_model(variant_config(str(name), **overrides))
    if pretrained:
        load_checkpoint(model, pretrained, strict=True)
        model.config["pretrained"] = str(pretrained)
        model.eval()
    return model
