"""Types and ranges of the training config's values, checked before anything runs.

Each rule says what a key takes; a value that breaks it is a :class:`~lrformer.errors.ConfigError`
naming the key, what it takes, what it got and an example, e.g.
``optim.lr must be a number > 0, got the string '0.001' (remove the quotes: optim.lr: 0.001)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ..devices import DEVICE
from ..errors import ConfigError
from .sync_bn import SYNC_BN_SCOPES


@dataclass(frozen=True)
class Rule:
    """What one config key takes: a ``kind`` (``int``, ``float``, ``bool``, ``str``, ``list``), a
    test of the value, the description used in the message, and whether ``null`` is allowed."""

    kind: type
    test: Callable[[Any], bool] = lambda value: True
    what: str = ""
    optional: bool = False


def _int(low: int, what: str = "", optional: bool = False) -> Rule:
    return Rule(int, lambda v: v >= low, what or f"an integer >= {low}", optional)


def _number(test: Callable[[float], bool], what: str, optional: bool = False) -> Rule:
    return Rule(float, test, what, optional)


def _pair(test: Callable[[Any], bool], what: str) -> Rule:
    return Rule(list, lambda v: len(v) == 2 and all(test(x) for x in v), what)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


STRING = Rule(str, lambda v: bool(v), "a non-empty string")

RULES: dict[str, Rule] = {
    "model.name": STRING,
    "model.num_classes": _int(1, "a number of classes >= 1", optional=True),
    "model.drop_path_rate": _number(lambda v: 0 <= v < 1, "a rate in [0, 1)"),
    "model.pretrained": Rule(str, what="a checkpoint path or URL", optional=True),
    "model.backbone_checkpoint": Rule(str, what="a checkpoint path or URL", optional=True),
    "model.strict": Rule(bool, what="true or false"),
    "data.dataset": Rule(str, lambda v: bool(v), "ade20k, cityscapes, cocostuff or a dataset YAML"),
    "data.root": STRING,
    "data.train_split": STRING,
    "data.val_split": STRING,
    "data.crop_size": _pair(lambda x: _is_int(x) and x >= 32, "[height, width], integers >= 32"),
    "data.cat_max_ratio": _number(lambda v: 0 < v <= 1, "a fraction in (0, 1] (1 disables the redraws)"),
    "data.flip_prob": _number(lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "data.photometric": Rule(bool, what="true or false"),
    "data.batch_size": _int(1, "a number of images per process >= 1"),
    "data.workers": _int(0, "a number of loader processes >= 0"),
    "optim.lr": _number(lambda v: v > 0, "a number > 0"),
    "optim.betas": _pair(lambda x: _is_number(x) and 0 <= x < 1, "[beta1, beta2] in [0, 1)"),
    "optim.weight_decay": _number(lambda v: v >= 0, "a number >= 0"),
    "optim.norm_decay_mult": _number(lambda v: v >= 0, "a multiplier >= 0", optional=True),
    "optim.eps": _number(lambda v: v > 0, "a number > 0"),
    "optim.clip_grad": _number(lambda v: v > 0, "a max-norm > 0 (null: no clipping)", optional=True),
    "schedule.max_iters": _int(1, "a number of iterations >= 1"),
    "schedule.warmup_iters": _int(0, "a number of iterations >= 0 (0: no warm-up)"),
    "schedule.warmup_ratio": _number(lambda v: 0 < v <= 1, "a factor in (0, 1]"),
    "schedule.power": _number(lambda v: v >= 0, "a number >= 0"),
    "schedule.min_lr": _number(lambda v: v >= 0, "a number >= 0"),
    "train.seed": _int(0),
    "train.device": Rule(str, lambda v: bool(DEVICE.match(v)), "auto, cpu, cuda, cuda:N or mps"),
    "train.amp": Rule(str, lambda v: v in ("bf16", "fp16"), "null, bf16 or fp16", optional=True),
    "train.compile": Rule(bool, what="true or false"),
    "train.grad_checkpoint": Rule(bool, what="true or false"),
    "train.cudnn_benchmark": Rule(bool, what="true or false"),
    "train.sync_bn": Rule(str, lambda v: v in SYNC_BN_SCOPES, "one of " + ", ".join(SYNC_BN_SCOPES)),
    "train.log_interval": _int(1, "a number of iterations >= 1"),
    "train.val_interval": _int(0, "a number of iterations >= 0 (0: no validation)"),
    "train.checkpoint_interval": _int(1, "a number of iterations >= 1"),
    "train.keep_checkpoints": _int(1, "a number of checkpoints >= 1"),
    "train.val_max_images": _int(1, "a number of images >= 1 (null: all)", optional=True),
}
"""Every fixed key of :data:`~lrformer.engine.config.DEFAULTS` and what it takes."""


def check_values(config: dict[str, Any], examples: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for the first value that breaks its :data:`RULES` entry;
    ``examples`` (the defaults) supply a valid value for the message."""
    for key, rule in RULES.items():
        section, name = key.split(".")
        value = config[section][name]
        if value is None and rule.optional:
            continue
        if not _has_kind(value, rule.kind) or not rule.test(value):
            example = examples[section][name]
            raise ConfigError(f"{key} must be {rule.what}, got {_shown(value)}{_hint(key, value, rule, example)}")


def _has_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return _is_number(value) and math.isfinite(value)
    if kind is int:
        return _is_int(value)
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def _shown(value: Any) -> str:
    return f"the string {value!r}" if isinstance(value, str) else repr(value)


def _hint(key: str, value: Any, rule: Rule, example: Any) -> str:
    """The fix: unquote a quoted number, or an example of a valid value."""
    if isinstance(value, str) and rule.kind in (int, float):
        try:
            number = float(value.strip("'\" "))
        except ValueError:
            pass
        else:
            shown = int(number) if rule.kind is int and number.is_integer() else number
            return f" (a quoted number: write it without quotes, {key}: {shown})"
    if example is None or example == value:
        return ""
    return f" (e.g. --set {key}={_yaml(example)})"


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)
