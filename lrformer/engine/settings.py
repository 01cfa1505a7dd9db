"""The training configuration, declared once: every key with its default, what it takes and what
it does. Defaults are the official ADE20K recipe for LRFormer-T.

:class:`TrainingConfig` holds one typed section per YAML section (``model:``, ``data:``, ``optim:``,
``schedule:``, ``train:``) and the free-form ``test:`` mapping. Everything else about the keys is
derived from these classes: :data:`DEFAULTS` (the tree that configs are merged into),
:data:`VALID_KEYS` (for "did you mean"), :data:`RULES`, :data:`FREE_FORM`. Free-form mappings
(``model.overrides``, ``data.resize``, ``optim.custom_keys``, ``test``) are checked by their own
rule's ``check``, where their keys are defined.

Build one with :func:`lrformer.engine.config.load_config` (files and ``--set``) or
:meth:`TrainingConfig.from_dict`; both check every key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from ..data.augment import RESIZE_KEYS, build_resize
from ..devices import DEVICE
from ..errors import ConfigError, UnknownNameError
from ..image.pipeline import InferenceConfig
from ..models.zoo import is_tag, released_model
from .paramwise import check_custom_keys
from .schema import ANY, FLAG, STRING, Rule, Section, UnknownKeyError, keys_of, leaves, section, setting, valid_keys
from .sync_bn import SYNC_BN_SCOPES

POSITIVE = Rule("a number > 0", lambda v: v > 0)
NON_NEGATIVE = Rule("a number >= 0", lambda v: v >= 0)


def _weights(key: str) -> Rule:
    """Weights a config names: a released model's tag must be a known one ("did you mean" otherwise)."""

    def check(value: str | None) -> None:
        if value and is_tag(value):
            try:
                released_model(value)
            except UnknownNameError as exc:
                raise ConfigError(f"{key}: {exc}") from None

    return Rule("a checkpoint path, URL, hf-hub: name or released tag", check=check)


def _check_name(name: str) -> None:
    if is_tag(name):
        variant = name.split(".", 1)[0]
        raise ConfigError(f"model.name {name} is a released model's tag: set model.name {variant} and "
                          f"model.pretrained {name} to start from its weights")  # fmt: skip


MODEL_NAME = Rule("a non-empty string", bool, check=_check_name)


def _at_least(low: int, what: str) -> Rule:
    return Rule(what, lambda v: v >= low)


def _pair(test: Callable[[Any], bool], what: str) -> Rule:
    return Rule(what, lambda v: len(v) == 2 and all(test(x) for x in v))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_resize(resize: dict[str, Any]) -> None:
    try:
        build_resize(resize)
    except ValueError as exc:
        raise ConfigError(f"data.resize: {exc}") from None


def _check_warmup(iterations: int) -> None:
    if iterations == 1:
        raise ConfigError(
            "schedule.warmup_iters is 1: mmengine's LinearLR over one iteration never reaches the full rate; "
            "use 0 (no warm-up) or at least 2"
        )


def _check_test(settings: dict[str, Any]) -> None:
    for key in settings:
        if key not in TEST_KEYS:
            raise unknown_key(f"test.{key}")
    try:
        InferenceConfig.from_dict(settings)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith("test") else f"test: {message}") from None


TEST_KEYS = tuple(f.name for f in fields(InferenceConfig))
"""Keys of the ``test`` section: the test-time settings used for validation."""


@dataclass(eq=False)
class ModelSettings(Section, path="model"):
    """The network, its initial weights and how strictly they must match."""

    name: str = setting("lrformer_t", MODEL_NAME, "variant (lrformer_t, ..., lrformer_xl_plus) or a model YAML/JSON")
    num_classes: int | None = setting(None, _at_least(1, "a number of classes >= 1"), "null: the dataset's count")
    drop_path_rate: float = setting(0.1, Rule("a rate in [0, 1)", lambda v: 0 <= v < 1), "stochastic depth rate")
    pretrained: str | None = setting(
        None, _weights("model.pretrained"), "a full checkpoint to start from (fine-tuning), e.g. lrformer_t.ade20k"
    )
    backbone_checkpoint: str | None = setting(
        None, _weights("model.backbone_checkpoint"), "backbone weights: ImageNet (the recipe, e.g. lrformer_t.in1k), or a segmentation checkpoint's"
    )
    strict: bool = setting(
        True, FLAG, "false: load only the keys that match (a classifier of another class count is always reset)"
    )
    overrides: dict[str, Any] = setting({}, ANY, "other create_model arguments (embed_dims, depths, ...)")


@dataclass(eq=False)
class DataSettings(Section, path="data"):
    """The training and validation images, the train-time augmentation and the loader."""

    dataset: str = setting(
        "ade20k", Rule("ade20k, cityscapes, cocostuff or a dataset YAML", bool), "a built-in dataset or a YAML"
    )
    root: str = setting("data", STRING, "the dataset's folder")
    train_split: str = setting("train", STRING, "the split trained on")
    val_split: str = setting("val", STRING, "the split validated on")
    resize: dict[str, Any] = setting(
        {"type": "RandomResize", "scale": [2048, 512], "ratio_range": [0.5, 2.0]},
        Rule("a resize mapping", check=_check_resize, keys=RESIZE_KEYS),
        "the train-time rescale: RandomResize {scale, ratio_range} or RandomChoiceResize {scales, max_size}",
    )
    crop_size: list[int] = setting(
        [512, 512],
        _pair(lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 32, "[height, width], integers >= 32"),
        "the random crop, [height, width]",
    )
    cat_max_ratio: float = setting(
        0.75,
        Rule("a fraction in (0, 1] (1 disables the redraws)", lambda v: 0 < v <= 1),
        "a crop is redrawn (up to 10 times) while one class covers more than this fraction of it",
    )
    flip_prob: float = setting(0.5, Rule("a probability in [0, 1]", lambda v: 0 <= v <= 1), "horizontal flips")
    photometric: bool = setting(True, FLAG, "mmseg's PhotoMetricDistortion")
    batch_size: int = setting(4, _at_least(1, "a number of images per process >= 1"), "images per process (GPU)")
    workers: int = setting(4, _at_least(0, "a number of loader processes >= 0"), "loader processes per process")


@dataclass(eq=False)
class OptimSettings(Section, path="optim"):
    """AdamW and mmengine's parameter-group rules (``paramwise_cfg``)."""

    lr: float = setting(6.0e-5, POSITIVE, "the base learning rate")
    betas: list[float] = setting(
        [0.9, 0.999], _pair(lambda x: _is_number(x) and 0 <= x < 1, "[beta1, beta2] in [0, 1)"), "AdamW's betas"
    )
    weight_decay: float = setting(0.01, NON_NEGATIVE, "AdamW's decoupled weight decay")
    custom_keys: dict[str, Any] = setting(
        {"head": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}},
        Rule("a mapping of custom keys", check=check_custom_keys),
        "mmengine's paramwise custom_keys: the first key (longest first, then alphabetical) found in a parameter's "
        "name decides its lr_mult / decay_mult; {stage} and {block} in a key stand for every stage (1-4) and "
        "every block (0-based) of the backbone",
    )
    norm_decay_mult: float | None = setting(
        None, Rule("a multiplier >= 0", lambda v: v >= 0), "decay multiplier of norm-layer parameters no key matches"
    )
    eps: float = setting(1.0e-8, POSITIVE, "AdamW's eps")
    clip_grad: float | None = setting(
        35.0, Rule("a max-norm > 0 (null: no clipping)", lambda v: v > 0), "max-norm of the gradients; null: none"
    )


@dataclass(eq=False)
class ScheduleSettings(Section, path="schedule"):
    """mmengine's iteration-based ``LinearLR`` warm-up, then ``PolyLR``."""

    max_iters: int = setting(160000, _at_least(1, "a number of iterations >= 1"), "iterations of the run")
    warmup_iters: int = setting(
        1500,
        Rule("a number of iterations >= 0 (0: no warm-up)", lambda v: v >= 0, check=_check_warmup),
        "LinearLR over iterations [0, warmup_iters); 0: none",
    )
    warmup_ratio: float = setting(1.0e-6, Rule("a factor in (0, 1]", lambda v: 0 < v <= 1), "LinearLR's start")
    power: float = setting(1.0, NON_NEGATIVE, "PolyLR over [warmup_iters, max_iters)")
    min_lr: float = setting(0.0, NON_NEGATIVE, "PolyLR's eta_min: an absolute floor for every group")


@dataclass(eq=False)
class TrainSettings(Section, path="train"):
    """The run: seed, device, precision, synchronised BatchNorm, logging, validation, checkpoints."""

    seed: int = setting(0, _at_least(0, "an integer >= 0"), "the random seed (each process adds its rank)")
    device: str = setting(
        "auto", Rule("auto, cpu, cuda, cuda:N or mps", lambda v: bool(DEVICE.match(v))), "auto: cuda, mps, then cpu"
    )
    amp: str | None = setting(None, Rule("null, bf16 or fp16", lambda v: v in ("bf16", "fp16")), "mixed precision")
    compile: bool = setting(False, FLAG, "torch.compile the training step")
    grad_checkpoint: bool = setting(
        False, FLAG, "activation checkpointing per block: less memory, one more forward per block"
    )
    cudnn_benchmark: bool = setting(
        True, FLAG, "CUDA: cuDNN autotuning for the fixed crop size (mmseg's env_cfg default)"
    )
    sync_bn: str = setting(
        "decode_head",
        Rule("one of " + ", ".join(SYNC_BN_SCOPES), lambda v: v in SYNC_BN_SCOPES),
        "BatchNorms synchronised across processes: decode_head (official) | all | none",
    )
    log_interval: int = setting(50, _at_least(1, "a number of iterations >= 1"), "iterations between log lines")
    val_interval: int = setting(
        16000, _at_least(0, "a number of iterations >= 0 (0: no validation)"), "iterations between validations"
    )
    checkpoint_interval: int = setting(
        16000, _at_least(1, "a number of iterations >= 1"), "iterations between checkpoints"
    )
    keep_checkpoints: int = setting(
        3, _at_least(1, "a number of checkpoints >= 1"), "the newest iteration checkpoints kept (best_* apart)"
    )
    val_max_images: int | None = setting(
        None, _at_least(1, "a number of images >= 1 (null: all)"), "evaluate on the first N validation images only"
    )


@dataclass(eq=False)
class TrainingConfig(Section):
    """A whole training config: ``config.optim.lr``, or ``config["optim"]["lr"]`` as a mapping.

    :meth:`to_dict` gives the plain nested dict that checkpoints and the work dir's ``config.yaml``
    hold; :meth:`from_dict` reads one back and checks it.
    """

    model: ModelSettings = section(ModelSettings, "the network and its initial weights")
    data: DataSettings = section(DataSettings, "images, augmentation, loader")
    optim: OptimSettings = section(OptimSettings, "optimiser and parameter groups")
    schedule: ScheduleSettings = section(ScheduleSettings, "learning-rate schedule")
    train: TrainSettings = section(TrainSettings, "the run")
    test: dict[str, Any] = setting(
        {},
        Rule("a mapping of test settings", check=_check_test, keys=TEST_KEYS),
        "test-time settings of validation (InferenceConfig fields) over the model's and the dataset's",
    )


DEFAULTS: dict[str, Any] = TrainingConfig().to_dict()
"""The defaults as the plain nested dict that config files are merged into."""

VALID_KEYS: list[str] = valid_keys(TrainingConfig)
"""Every dotted key, for "did you mean"."""

RULES: dict[str, Rule] = {path: key.rule for path, key, _ in leaves(TrainingConfig, DEFAULTS) if key.kind is not dict}
"""Every fixed key and what it takes."""

FREE_FORM: tuple[str, ...] = tuple(path for path, key, _ in leaves(TrainingConfig, DEFAULTS) if key.kind is dict)
"""Mappings whose keys are not declared here (checked by their rule's ``check``)."""

SECTIONS = {key.name: key.section for key in keys_of(TrainingConfig) if key.section}
"""Section name → its class."""


def unknown_key(key: str) -> UnknownKeyError:
    """The error for a dotted key that does not exist, naming the closest valid one."""
    return UnknownKeyError.named(key, VALID_KEYS)
