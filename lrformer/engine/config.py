"""Training configuration: defaults, YAML files (with ``_base_`` inheritance) and ``--set`` overrides.

A config is built in layers, each merged into the one before with :func:`merge` (mmengine's rule):
the defaults (:data:`DEFAULTS`), then every file of the ``_base_`` chain from the root down (the
files of a ``_base_`` list in order, a later one overriding an earlier one where mmengine would
reject keys shared between them), then the file itself, then each ``--set key=value`` in order. Mappings merge key by key, so
``--set optim.custom_keys.head.lr_mult=5`` changes one multiplier and keeps every other custom key;
a mapping holding ``_delete_: true`` replaces the mapping below it instead.

Every key a config may hold is in :data:`DEFAULTS`; an unknown key is an error naming the closest
valid one. Values default to the official ADE20K recipe for LRFormer-T.

Design notes: ``docs/design.md``, section 9 (training semantics).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from ..data.augment import RESIZE_KEYS, build_resize
from ..errors import ConfigError
from ..image.pipeline import InferenceConfig
from ..utils import did_you_mean
from .optim import check_custom_keys
from .schema import check_values

DEFAULTS: dict[str, Any] = {
    "model": {
        "name": "lrformer_t",  # variant, or a model YAML/JSON
        "num_classes": None,  # default: the dataset's class count
        "drop_path_rate": 0.1,
        "pretrained": None,  # a full checkpoint to start from (fine-tuning)
        "backbone_checkpoint": None,  # backbone weights: ImageNet (the recipe), or a segmentation checkpoint's
        "strict": True,  # false: load only the keys that match (a classifier of another class count is always reset)
        "overrides": {},  # other create_model arguments (embed_dims, depths, ...)
    },
    "data": {
        "dataset": "ade20k",  # ade20k | cityscapes | cocostuff | dataset YAML
        "root": "data",
        "train_split": "train",
        "val_split": "val",
        # the train-time rescale: RandomResize {scale, ratio_range} or RandomChoiceResize {scales, max_size}
        "resize": {"type": "RandomResize", "scale": [2048, 512], "ratio_range": [0.5, 2.0]},
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
        # in a parameter's name decides its lr_mult / decay_mult; {stage} and {block} in a key
        # stand for every stage (1-4) and every block (0-based) of the backbone
        "custom_keys": {"head": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}},
        "norm_decay_mult": None,  # decay multiplier of norm-layer parameters no custom key matches
        "eps": 1.0e-8,
        "clip_grad": 35.0,  # max-norm; null: no clipping
    },
    "schedule": {
        "max_iters": 160000,
        "warmup_iters": 1500,  # LinearLR over iterations [0, warmup_iters); 0: none
        "warmup_ratio": 1.0e-6,
        "power": 1.0,  # PolyLR over [warmup_iters, max_iters)
        "min_lr": 0.0,
    },
    "train": {
        "seed": 0,
        "device": "auto",
        "amp": None,  # null | bf16 | fp16
        "compile": False,
        "grad_checkpoint": False,  # activation checkpointing per block: less memory, one more forward per block
        "cudnn_benchmark": True,  # CUDA: cuDNN autotuning for the fixed crop size (mmseg's env_cfg default)
        "sync_bn": "decode_head",  # BatchNorms synchronised across processes: decode_head (official) | all | none
        "log_interval": 50,
        "val_interval": 16000,
        "checkpoint_interval": 16000,
        "keep_checkpoints": 3,
        "val_max_images": None,  # evaluate on the first N validation images only
    },
    "test": {},  # test-time settings for validation (InferenceConfig fields); default: the dataset's
}

DELETE_KEY = "_delete_"
"""A mapping holding ``_delete_: true`` replaces the mapping it is merged into (mmengine)."""

FREE_FORM = ("model.overrides", "optim.custom_keys", "test", "data.resize")
"""Sections whose keys are not listed in :data:`DEFAULTS` (checked where they are used)."""


def _flat_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(prefix + key)
        if isinstance(value, dict) and prefix + key not in FREE_FORM:
            keys += _flat_keys(value, f"{prefix}{key}.")
    return keys


TEST_KEYS = tuple(f.name for f in fields(InferenceConfig))
"""Keys of the ``test`` section: the test-time settings used for validation."""

VALID_KEYS = _flat_keys(DEFAULTS) + [f"data.resize.{key}" for key in RESIZE_KEYS] + [f"test.{k}" for k in TEST_KEYS]


class UnknownKeyError(ConfigError, KeyError):
    """A config key that does not exist (a ``KeyError`` too, for callers that catch that)."""

    def __str__(self) -> str:
        return str(self.args[0])


def unknown_key(key: str) -> UnknownKeyError:
    return UnknownKeyError(f"unknown config key {key!r}.{did_you_mean(key, VALID_KEYS, cutoff=0.5)}")


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into a copy of ``base``, as mmengine merges configs.

    A mapping in ``update`` is merged key by key into the mapping at the same place in ``base``
    (recursively), unless it holds ``_delete_: true``: then it replaces it, like any other value.
    A mapping of indices (``{"0": 640}``) sets elements of a list. ``_delete_`` markers do not
    appear in the result.
    """
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key == DELETE_KEY:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get(DELETE_KEY, False):
            out[key] = merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), list) and all(str(k).isdigit() for k in value):
            for index, item in value.items():  # --set data.crop_size.0=640: one element of a list
                if int(index) >= len(out[key]):
                    raise ConfigError(f"{key}.{index}: the list {out[key]} has no element {index}")
                out[key][int(index)] = _without_delete(item)
        else:
            out[key] = _without_delete(value)
    return out


def _without_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_delete(v) for k, v in value.items() if k != DELETE_KEY}
    return copy.deepcopy(value)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict[str, Any]:
    """The defaults, then the YAML file (and its ``_base_`` chain), then ``key=value`` overrides."""
    config = copy.deepcopy(DEFAULTS)
    for layer in _file_layers(Path(path)) if path is not None else []:
        config = merge(config, layer)
    for item in overrides:
        config = merge(config, _set_layer(item))
    return check(config)


def _set_layer(item: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}``."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}; e.g. --set optim.lr=1e-4")
    key, text = item.split("=", 1)
    layer: dict[str, Any] = {}
    node = layer
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = _parse_value(text)
    return layer


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def _parse_value(text: str) -> Any:
    """YAML value of a ``--set`` override."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise ConfigError(
            f"--set value {text!r} is not valid YAML ({problem}); write lists as [1, 2], mappings as "
            "{key: value}, and quote the whole --set argument in the shell"
        ) from None


def _file_layers(path: Path, chain: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The mappings of ``path``'s ``_base_`` files (a path or a list, relative to ``path``'s
    folder), root first, then ``path``'s own."""
    path = Path(os.path.abspath(path))
    referrer = f" (the _base_ of {chain[-1]})" if chain else ""
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise ConfigError(f"config {path}{referrer} is not a file: give the path of a YAML config")
    if not path.is_file():
        raise FileNotFoundError(
            f"config {path} does not exist{referrer}; give the path of a YAML config (see configs/)"
        )
    if path in chain:
        cycle = " -> ".join(p.name for p in chain[chain.index(path) :] + (path,))
        raise ConfigError(f"_base_ cycle: {cycle}; remove one of these _base_ entries")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}{referrer} is not a UTF-8 text file: give a YAML config") from None
    except RecursionError:
        raise ConfigError(f"config {path} is nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"config {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}; check the brackets, quotes and "
            "indentation there"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections (model:, data:, optim:, ...)")
    bases = data.pop("_base_", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"_base_ in {path} must be a file name or a list of file names, got {bases!r}")
    layers = []
    for base in bases:
        layers += _file_layers(path.parent / base, chain + (path,))
    return layers + [data]


def check(config: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown keys (naming the closest valid one) and mappings where a value belongs, fill
    in the keys a ``_delete_`` removed from a section of fixed keys; validate the free-form
    sections (resize transform, custom keys, test settings) and the warm-up length."""
    _check_section(config, DEFAULTS, "")
    check_values(config, DEFAULTS)
    try:
        build_resize(config["data"]["resize"])
    except ValueError as exc:
        raise ConfigError(f"data.resize: {exc}") from None
    check_custom_keys(config["optim"]["custom_keys"])
    for key in config["test"]:
        if key not in TEST_KEYS:
            raise unknown_key(f"test.{key}")
    try:
        InferenceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["test"].items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"test: {exc}") from None
    if config["schedule"]["warmup_iters"] == 1:
        raise ConfigError(
            "schedule.warmup_iters is 1: mmengine's LinearLR over one iteration never reaches the full rate; "
            "use 0 (no warm-up) or at least 2"
        )
    return config


def _check_section(section: dict[str, Any], defaults: dict[str, Any], prefix: str) -> None:
    for key in section:
        if key not in defaults:
            raise unknown_key(prefix + key)
    for key, default in defaults.items():
        path = prefix + key
        if key not in section:
            section[key] = copy.deepcopy(default)
        elif isinstance(default, dict):
            if not isinstance(section[key], dict):
                raise ConfigError(f"config key {path!r} must be a mapping, got {section[key]!r}")
            if path not in FREE_FORM:
                _check_section(section[key], default, path + ".")
        elif isinstance(section[key], dict):
            raise ConfigError(
                f"config key {path!r} takes a single value, not the mapping {section[key]!r} "
                f"(e.g. --set {path}={default!r})"
            )
