"""Registry of the LRFormer variants and ``create_model``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..utils import did_you_mean
from .backbone import LRFormer
from .lr_head import LRHead
from .mask2former import Mask2FormerHead
from .segmentor import LRFormerSegmentor


def _variant(
    embed_dims: list[int], depths: list[int], head_channels: int | None, drop_path_rate: float
) -> dict[str, Any]:
    return dict(
        embed_dims=embed_dims,
        depths=depths,
        num_heads=[2, 4, 10, 16],
        mlp_ratios=[8, 8, 4, 4],
        q_pooled_sizes=[16, 16, 16, 16],
        head_channels=head_channels,
        head_num_heads=8,
        head_q_pooled_size=32,
        drop_path_rate=drop_path_rate,
    )


VARIANTS: dict[str, dict[str, Any]] = {
    "lrformer_t": _variant([48, 96, 240, 384], [2, 2, 6, 3], 256, 0.1),
    "lrformer_s": _variant([64, 128, 320, 512], [3, 3, 12, 3], 384, 0.2),
    "lrformer_b": _variant([80, 160, 400, 512], [4, 4, 15, 8], 512, 0.4),
    "lrformer_l": {**_variant([96, 192, 480, 640], [4, 6, 18, 8], 640, 0.6), "test_scale": (2560, 640)},
    "lrformer_xl": _variant([128, 256, 640, 768], [4, 8, 22, 8], None, 0.0),
}
"""Hyper-parameters of the released variants; drop-path rates of the official ADE20K recipes."""

PLUS_HEAD: dict[str, Any] = dict(
    feat_channels=256,
    num_queries=100,
    pixel_decoder_layers=6,
    pixel_decoder_heads=8,
    pixel_decoder_points=4,
    pixel_decoder_ffn=1024,
    pixel_decoder_gn_groups=32,
    transformer_decoder_layers=9,
    transformer_decoder_heads=8,
    transformer_decoder_ffn=2048,
    positional_encoding_num_feats=128,
)
"""The Mask2Former head of the LRFormer+ models (mmseg 1.x / mmdet 3.x ``Mask2FormerHead``)."""

for _name in ("lrformer_t", "lrformer_s", "lrformer_b", "lrformer_l", "lrformer_xl"):
    VARIANTS[f"{_name}_plus"] = {
        **{k: v for k, v in VARIANTS[_name].items() if k not in ("head_channels", "test_scale")},
        **PLUS_HEAD,
        "test_pipeline": "pad",
    }

OVERRIDE_KEYS = (
    "embed_dims", "depths", "num_heads", "mlp_ratios", "q_pooled_sizes",
    "head_channels", "head_num_heads", "head_q_pooled_size", "num_classes", "drop_path_rate",
)  # fmt: skip
"""Hyper-parameters ``create_model`` accepts as keyword overrides."""

PLUS_OVERRIDE_KEYS = tuple(PLUS_HEAD)
"""Extra overrides of the LRFormer+ models (the Mask2Former head's sizes)."""

FILE_KEYS = ("name", "pretrained") + OVERRIDE_KEYS + PLUS_OVERRIDE_KEYS
"""Keys a model YAML/JSON file may hold."""


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(VARIANTS)


def unknown_key_error(key: str, valid: tuple[str, ...] | list[str], where: str) -> ValueError:
    """``unknown <where> 'key'. Did you mean ...? Valid: ...``"""
    return ValueError(f"unknown {where} {key!r}.{did_you_mean(key, valid)} Valid: {', '.join(valid)}.")


def variant_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Resolved hyper-parameters of a variant with ``overrides`` applied (validated)."""
    if name not in VARIANTS:
        raise unknown_key_error(name, list_models(), "model")
    valid = OVERRIDE_KEYS + PLUS_OVERRIDE_KEYS if name.endswith("_plus") else OVERRIDE_KEYS
    for key in overrides:
        if key not in valid:
            raise unknown_key_error(key, valid, f"argument for {name}")
    for key, value in overrides.items():
        _check_override(key, value)
    config = {"name": name, "num_classes": 150, **VARIANTS[name]}
    config.update(overrides)
    return config


def _check_override(key: str, value: Any) -> None:
    """Raise :class:`~lrformer.errors.ConfigError` for an override value of the wrong type or range."""
    from ..errors import ConfigError

    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if key in ("embed_dims", "depths", "num_heads", "q_pooled_sizes", "mlp_ratios"):
        kind = positive_int if key != "mlp_ratios" else lambda v: isinstance(v, (int, float)) and v > 0
        if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(kind(v) for v in value):
            raise ConfigError(f"{key} must be 4 positive numbers (one per stage), got {value!r}")
    elif key == "drop_path_rate":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise ConfigError(f"drop_path_rate must be a rate in [0, 1), got {value!r}")
    elif not (positive_int(value) or (key == "head_channels" and value is None)):
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def build_model(config: dict[str, Any]) -> LRFormerSegmentor:
    """Build an (uninitialised-from-checkpoint) segmentor from a resolved config."""
    backbone = LRFormer(
        embed_dims=config["embed_dims"],
        depths=config["depths"],
        num_heads=config["num_heads"],
        mlp_ratios=config["mlp_ratios"],
        q_pooled_sizes=config["q_pooled_sizes"],
        drop_path_rate=config["drop_path_rate"],
    )
    decode_head = None
    if config["name"].endswith("_plus"):
        decode_head = Mask2FormerHead(
            in_channels=config["embed_dims"],
            num_classes=config["num_classes"],
            **{k: config[k] for k in PLUS_OVERRIDE_KEYS},
        )
    elif config.get("head_channels"):
        decode_head = LRHead(
            in_channels=config["embed_dims"][1:],
            channels=config["head_channels"],
            num_classes=config["num_classes"],
            num_heads=config["head_num_heads"],
            q_pooled_size=config["head_q_pooled_size"],
        )
    return LRFormerSegmentor(backbone, decode_head, config)


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
        from ..checkpoint import load_checkpoint

        load_checkpoint(model, pretrained, strict=True)
        model.config["pretrained"] = str(pretrained)
        model.eval()
    return model
