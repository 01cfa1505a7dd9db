"""The registry of LRFormer variants: their hyper-parameters and how a model is built from them.

Both :func:`~lrformer.models.factory.create_model` and the checkpoint loader (which recognises a
file's variant by its key layout) build models through :func:`build_model`.

Design notes: ``docs/design.md``, section 5 (the released checkpoint layout).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import torch

from ..errors import ConfigError
from ..utils import unknown_key_error
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
"""Hyper-parameters of the released variants; drop-path rates of the official ADE20K recipes of LRFormer-T/S/B/L
(LRFormer-XL, released as a backbone, has none; its XL+ recipe sets 0.4 in its config)."""

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

BACKBONE_KEYS = ("embed_dims", "depths", "num_heads", "mlp_ratios", "q_pooled_sizes", "drop_path_rate")
"""The overrides that shape the backbone: the only ones a ``features_only`` model takes."""


def variant_names() -> list[str]:
    """The variants :func:`create_model` builds (:func:`lrformer.list_models` also lists released tags)."""
    return sorted(VARIANTS)


def variant_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Resolved hyper-parameters of a variant with ``overrides`` applied (validated)."""
    if name not in VARIANTS:
        raise unknown_key_error(name, variant_names(), "model")
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


def build_backbone(config: dict[str, Any], out_indices: Sequence[int] | None = None) -> LRFormer:
    """The backbone of a resolved config, with the stages ``out_indices`` (default: all four)."""
    return LRFormer(**{k: config[k] for k in BACKBONE_KEYS}, out_indices=out_indices)


def build_features(config: dict[str, Any], out_indices: Sequence[int] | None = None) -> LRFormer:
    """A feature backbone (``create_model(features_only=True)``) of a resolved config.

    Only the stages up to the last of ``out_indices`` are built; ``model.config`` holds the variant
    name, the backbone hyper-parameters, ``features_only`` and the resolved ``out_indices`` (the
    decode head's settings in ``config`` are left out).
    """
    model = build_backbone(config, out_indices)
    model.config = {
        "name": config["name"],
        **{k: config[k] for k in BACKBONE_KEYS},
        "features_only": True,
        "out_indices": list(model.out_indices),
    }
    return model


def build_model(config: dict[str, Any]) -> LRFormerSegmentor:
    """Build an (uninitialised-from-checkpoint) segmentor from a resolved config."""
    backbone = build_backbone(config)
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


@lru_cache(maxsize=None)
def variant_layout(name: str) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of variant ``name`` (150 classes) and its shape, built on the meta device."""
    with torch.device("meta"):
        model = build_model(variant_config(name))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
