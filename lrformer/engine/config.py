"""Training configuration: defaults, YAML files (with ``_base_`` inheritance) and ``--set`` overrides.

Every key a config may hold is in :data:`DEFAULTS`; an unknown key is an error naming the closest
valid one. Values default to the official ADE20K recipe for LRFormer-T (SPEC §11).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ..utils import did_you_mean

DEFAULTS: dict[str, Any] = {
    "model": {
        "name": "lrformer_t",  # variant, or a model YAML/JSON
        "num_classes": None,  # default: the dataset's class count
        "drop_path_rate": 0.1,
        "pretrained": None,  # a full checkpoint to start from (fine-tuning)
        "backbone_checkpoint": None,  # backbone weights: ImageNet (the recipe), or a segmentation checkpoint's
        "overrides": {},  # other create_model arguments (embed_dims, depths, ...)
    },
    "data": {
        "dataset": "ade20k",  # ade20k | cityscapes | cocostuff | dataset YAML
        "root": "data",
        "train_split": "train",
        "val_split": "val",
        "scale": [2048, 512],
        "ratio_range": [0.5, 2.0],
        "crop_size": [512, 512],
        "cat_max_ratio": 0.75,
        "flip_prob": 0.5,
        "photometric": True,
        "batch_size": 4,  # per process (GPU)
        "workers": 4,
    },
    "optim": {
        "lr": 6.0e-5,
        "betas": [0.9, 0.999],
        "weight_decay": 0.01,
        # mmengine paramwise custom_keys: the first key (longest first, then alphabetical) found
        # in a parameter's name decides its lr_mult / decay_mult
        "custom_keys": {"head": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}},
        "norm_decay_mult": None,  # decay multiplier of norm-layer parameters no custom key matches
        "eps": 1.0e-8,
        "clip_grad": 35.0,  # max-norm; null: no clipping
    },
    "schedule": {
        "max_iters": 160000,
        "warmup_iters": 1500,
        "warmup_ratio": 1.0e-6,
        "power": 1.0,
        "min_lr": 0.0,
    },
    "train": {
        "seed": 0,
        "device": "cuda",
        "amp": None,  # null | bf16 | fp16
        "compile": False,
        "log_interval": 50,
        "val_interval": 16000,
        "checkpoint_interval": 16000,
        "keep_checkpoints": 3,
        "val_max_images": None,  # evaluate on the first N validation images only
    },
    "test": {},  # test-time settings for validation (InferenceConfig fields); default: the dataset's
}


def _flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(prefix + key)
        if isinstance(value, dict) and key not in ("custom_keys", "overrides") and prefix + key != "test":
            keys += _flat_keys(value, f"{prefix}{key}.")
    return keys


VALID_KEYS = _flat_keys(DEFAULTS)


def unknown_key(key: str) -> KeyError:
    return KeyError(f"unknown config key {key!r}.{did_you_mean(key, VALID_KEYS, cutoff=0.5)}")


def merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``update`` merged into a copy of ``base``; keys must exist in ``base`` (free-form sections excepted)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = prefix + key
        if key not in out and prefix.rstrip(".") not in ("model.overrides", "optim.custom_keys", "test"):
            raise unknown_key(path)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and path not in ("optim.custom_keys",):
            out[key] = merge(out[key], value, path + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """The defaults, then the YAML file (and its ``_base_`` chain), then ``key=value`` overrides."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        config = merge(config, _read(Path(path)))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        update: dict[str, Any] = {}
        node = update
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(text)
        config = merge(config, update)
    return config


def _parse_value(text: str) -> Any:
    """YAML value of a ``--set`` override; ``1e-3`` (a string to YAML 1.1) is read as a number."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping")
    base = data.pop("_base_", None)
    if base is None:
        return data
    parent = _read(path.parent / base)
    return _deep_update(parent, data)


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "custom_keys":
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out
