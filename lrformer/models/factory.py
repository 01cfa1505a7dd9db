"""``create_model``: a variant by name (or a model file), optionally with a checkpoint loaded; the
segmentor, or with ``features_only=True`` the backbone alone as a feature extractor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..errors import ConfigError, MissingFileError
from ..utils import read_mapping, unknown_key_error
from .backbone import resolve_out_indices
from .registry import (
    BACKBONE_KEYS,
    FILE_KEYS,
    OVERRIDE_KEYS,
    PLUS_OVERRIDE_KEYS,
    VARIANTS,
    build_features,
    build_model,
    variant_config,
)
from .weight_loading import checkpoint_classes, load_checkpoint
from .weights import Checkpoint, is_remote, looks_like_checkpoint, read_checkpoint
from .zoo import ReleasedModel, check_classes, is_tag, released_model

logger = logging.getLogger(__name__)


def read_model_file(path: str | Path) -> dict[str, Any]:
    """Arguments of ``create_model`` stored in a YAML or JSON file (``name`` defaults to ``lrformer_t``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"model file {path} does not exist")
    data = read_mapping(path, "model file", "create_model arguments")
    for key in data:
        if key not in FILE_KEYS:
            raise unknown_key_error(key, FILE_KEYS, f"key in {path}:")
    data = dict(data)
    data.setdefault("name", "lrformer_t")
    pretrained = data.get("pretrained")
    if isinstance(pretrained, bool) or (pretrained is not None and not isinstance(pretrained, str)):
        if not isinstance(pretrained, bool):
            raise ConfigError(
                f"pretrained in {path} must be a file, URL, hf-hub: name, tag or true, got {pretrained!r}"
            )
    elif pretrained and not is_remote(pretrained) and not Path(pretrained).is_absolute():
        data["pretrained"] = str(path.parent / pretrained)
    return data


DESCRIPTION_FORMAT = 1


def model_description(
    model: nn.Module,
    classes: Sequence[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    test: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model description a checkpoint carries so that it can be used on its own: the
    ``create_model`` arguments (variant, class count, hyper-parameters), the class names, the
    palette (``(r, g, b)`` per class) and the test-time settings (``InferenceConfig`` fields)."""
    config = model.config
    keys = ("num_classes",) + OVERRIDE_KEYS + (PLUS_OVERRIDE_KEYS if config["name"].endswith("_plus") else ())
    arguments = {"name": config["name"], **{k: config[k] for k in dict.fromkeys(keys) if k in config}}
    arguments.pop("drop_path_rate", None)  # a training setting, not part of the model
    return {
        "format": DESCRIPTION_FORMAT,
        "model": arguments,
        "classes": list(classes) if classes is not None else None,
        "palette": [list(map(int, color)) for color in palette] if palette is not None else None,
        "test": dict(test) if test is not None else None,
    }


describe = model_description
"""The former name of :func:`model_description`."""


def create_model(
    name: str | Path,
    num_classes: int | None = None,
    pretrained: str | Path | bool | None = None,
    strict: bool = True,
    reset_classifier: bool | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Create an LRFormer model, optionally with weights.

    Example::

        >>> model = lrformer.create_model("lrformer_t", features_only=True, out_indices=(1, 2, 3))
        >>> [f.shape for f in model(torch.randn(1, 3, 100, 150))]  # (B, C, ⌈H/s⌉, ⌈W/s⌉), s = 8, 16, 32
        [torch.Size([1, 96, 13, 19]), torch.Size([1, 240, 7, 10]), torch.Size([1, 384, 4, 5])]
        >>> model.feature_info.channels(), model.feature_info.reduction()
        ([96, 240, 384], [8, 16, 32])

    Released models are named by tag (``lrformer.list_models(pretrained=True)``, ``lrformer models``)::

        >>> model = lrformer.create_model("lrformer_t.ade20k", pretrained=True)  # downloaded once, then cached
        >>> model.config["classes"][:3], model.config["test"]["scale"]
        (['wall', 'building', 'sky'], [2048, 512])

    Args:
        name: ``lrformer_t|s|b|l`` (segmentor with LRHead), ``lrformer_xl`` (backbone only),
            ``lrformer_{t,s,b,l,xl}_plus`` (LRFormer+, Mask2Former head), a released model's tag
            ``VARIANT.TAG`` (e.g. ``lrformer_t.ade20k``: its variant, class count, class names, palette
            and test settings), a path to a YAML/JSON file holding these same arguments, or a
            checkpoint written by this package (path, URL or ``hf-hub:`` name), which describes its own model.
        num_classes: classes of the decode head. Default: the checkpoint's (from its description,
            or the shape of its classifier) or the tag's dataset's, else 150 (ADE20K). A different
            count than the checkpoint's means fine-tuning: only the classifier is re-initialised (logged).
        pretrained: weights to load: ``True`` for the released file of the tag (a bare variant: its
            default tag, the first ``lrformer models`` lists), a local file (PyTorch or
            ``.safetensors``), an http(s) URL (``URL#sha256=HEX`` checks it), ``hf-hub:OWNER/REPO/PATH[@REVISION]``
            or a tag, see :func:`load_checkpoint`. ``None`` / ``False``: random weights.
        strict: every key and shape must match (apart from the classifier when fine-tuning);
            ``False`` loads the matching keys and logs the rest.
        reset_classifier: re-initialise a classifier of another class count instead of failing
            (default: when ``num_classes`` is given).
        features_only: return the backbone alone (:class:`LRFormer`) as a feature extractor for other
            frameworks (timm's ``features_only``): ``model(x)`` is the list of the ``out_indices``
            features, described by ``model.feature_info``. Segmentation checkpoints (their decode head
            is ignored), ImageNet backbone files (their ``head.*`` classifier is ignored) and this
            package's checkpoints load strictly into it. Without a head it takes no ``num_classes``,
            ``reset_classifier`` or head override (an error); those settings in a model file or a
            checkpoint's description are not used.
        out_indices: with ``features_only``: the 0-based stages (strides 4, 8, 16, 32) whose features
            are returned, in this order; negative ones count from the last (``-1``: stride 32).
            Default ``(0, 1, 2, 3)``. Stages after the last one are not built and their checkpoint
            keys are ignored.
        **overrides: any of :data:`OVERRIDE_KEYS` (and :data:`PLUS_OVERRIDE_KEYS` for "+" models),
            e.g. ``embed_dims=[16, 32, 80, 64]``.

    Returns:
        an :class:`LRFormerSegmentor` in eval mode when weights are loaded, train mode otherwise.
        A self-describing checkpoint also sets ``model.config["classes"]``, ``["palette"]`` and
        ``["test"]`` (unless the classifier was re-initialised). With ``features_only``: an
        :class:`LRFormer` whose ``config`` holds the variant, the backbone hyper-parameters,
        ``features_only`` and ``out_indices``.
    """
    if features_only:
        _check_features_arguments(num_classes, reset_classifier, overrides)
        out_indices = resolve_out_indices(out_indices)  # before any download
    elif out_indices is not None:
        raise ConfigError(
            f"out_indices={out_indices!r} selects the stages of a feature backbone: add features_only=True, "
            f"e.g. create_model({str(name)!r}, features_only=True, out_indices={out_indices!r})"
        )
    name, pretrained, overrides = _read_name(name, pretrained, overrides)
    released, name, pretrained = _released(name, pretrained)
    checkpoint = read_checkpoint(pretrained) if pretrained else None
    description = (checkpoint.description if checkpoint else None) or (released.description() if released else None)
    if released and checkpoint and not checkpoint.description:
        check_classes(released, checkpoint_classes(checkpoint.state_dict), str(pretrained))
    name, overrides = _described_variant(name, pretrained, description, overrides)
    if features_only:  # the described head (class count, head sizes) is not built
        model = _create_features(variant_config(name, **overrides), out_indices, checkpoint, pretrained, strict)
        if released:
            model.config["tag"] = released.tag
        return model
    if reset_classifier is None:
        reset_classifier = num_classes is not None
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    elif checkpoint and "num_classes" not in overrides and checkpoint_classes(checkpoint.state_dict):
        overrides["num_classes"] = checkpoint_classes(checkpoint.state_dict)
    config = variant_config(name, **overrides)
    model = _create_segmentor(config, checkpoint, description, pretrained, strict, reset_classifier)
    if released:
        model.config["tag"] = released.tag
    return model


def _released(
    name: str | Path | None, pretrained: str | Path | bool | None
) -> tuple[ReleasedModel | None, str | Path | None, str | Path | None]:
    """The released model that ``name`` (a tag) or ``pretrained`` (``True``, or a tag) names, with
    ``name`` as its variant and ``pretrained`` as the tag to download (``None``: no weights). Two tags
    (``create_model(TAG, pretrained=TAG2)``) must agree before anything is downloaded."""
    if pretrained is False:
        pretrained = None
    if pretrained is True:
        if not (is_tag(name) or str(name) in VARIANTS):
            raise ConfigError(
                f"pretrained=True loads a released model, named by its tag or variant (see `lrformer models`), not "
                f"{str(name)!r}: give the weights' file instead (pretrained=PATH, --weights PATH)"
            )
        released = released_model(str(name))
        return released, released.variant, released.tag
    named = released_model(str(name)) if is_tag(name) else None
    weights = released_model(str(pretrained)) if is_tag(pretrained) else None
    if named and weights:
        _check_same_release(named, weights)
    released = named or weights
    if released is None:
        return None, name, pretrained
    if str(name) in VARIANTS and name != released.variant:
        raise ConfigError(f"{pretrained} holds {released.variant} weights, not {name}'s: name the model "
                          f"{released.variant} (or {pretrained}), or give {name}'s own weights")  # fmt: skip
    return released, released.variant if named else name, pretrained


def _check_same_release(model: ReleasedModel, weights: ReleasedModel) -> None:
    """Refuse weights of another variant or dataset than the model's tag; an ImageNet backbone is
    allowed (its decode head stays random, said in a warning)."""
    if weights.variant != model.variant or weights.dataset not in (model.dataset, None):
        raise ConfigError(f"{weights.tag} does not fit {model.tag} (another variant or dataset): give the weights of "
                          f"{model.tag} (leave them out: its own file is loaded) or name the model {weights.tag}")  # fmt: skip
    if weights.dataset is None and model.dataset is not None:
        logger.warning("%s is an ImageNet backbone: the decode head of %s stays random", weights.tag, model.tag)


def _read_name(
    name: str | Path, pretrained: str | Path | None, overrides: dict[str, Any]
) -> tuple[str | None, str | Path | None, dict[str, Any]]:
    """``create_model``'s ``name`` as ``(variant, pretrained, overrides)``: a model file's arguments
    go under ``overrides``; a checkpoint given as ``name`` becomes ``pretrained``, its variant
    (``None``) to be read from its description."""
    if str(name) in VARIANTS or is_tag(name):
        return name, pretrained, overrides
    if Path(name).suffix.lower() in (".yaml", ".yml", ".json"):
        overrides = {**read_model_file(name), **overrides}
        name = overrides.pop("name")
        pretrained = pretrained or overrides.pop("pretrained", None)
        overrides.pop("pretrained", None)
    elif looks_like_checkpoint(name):
        if pretrained is True:
            raise ConfigError(f"pretrained=True loads a released model, named by its tag or variant (see `lrformer "
                              f"models`); {name} is weights already: create_model({str(name)!r}) loads them")  # fmt: skip
        if pretrained:
            raise ConfigError(f"create_model got two checkpoints, {name} and pretrained={pretrained}: give one")
        name, pretrained = None, name
    return name, pretrained, overrides


def _described_variant(
    name: str | Path | None,
    pretrained: str | Path | None,
    description: dict[str, Any] | None,
    overrides: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The variant and overrides with a model ``description``'s arguments (variant, class count,
    hyper-parameters; from a self-describing checkpoint or a released model's tag) under
    ``overrides``, when ``name`` is that variant or not given."""
    if description and name in (None, description["model"]["name"]):
        described = dict(description["model"])
        name = described.pop("name")
        overrides = {**described, **overrides}
    if name is None:
        raise ConfigError(
            f"{pretrained} holds weights but no model description (e.g. a released checkpoint): name the variant, "
            f"e.g. create_model('lrformer_t', pretrained='{pretrained}') or --model lrformer_t"
        )
    return str(name), overrides


def _create_features(
    config: dict[str, Any],
    out_indices: tuple[int, ...],
    checkpoint: Checkpoint | None,
    pretrained: str | Path | None,
    strict: bool,
) -> nn.Module:
    """The feature backbone of the resolved ``config``, with ``checkpoint``'s backbone loaded."""
    model = build_features(config, out_indices)
    if checkpoint:
        load_checkpoint(model, checkpoint, strict=strict)
        model.config["pretrained"] = str(pretrained)
        model.eval()
    return model


def _create_segmentor(
    config: dict[str, Any],
    checkpoint: Checkpoint | None,
    description: dict[str, Any] | None,
    pretrained: str | Path | None,
    strict: bool,
    reset_classifier: bool,
) -> nn.Module:
    """The segmentor of the resolved ``config``, with ``checkpoint`` loaded and, unless its classifier
    was re-initialised or is of another class count, the ``description``'s classes, palette and test
    settings in ``model.config``."""
    model = build_model(config)
    reset = False
    if checkpoint:
        report = load_checkpoint(model, checkpoint, strict=strict, reset_classifier=reset_classifier)
        model.config["pretrained"] = str(pretrained)
        reset = bool(report.reset)
        model.eval()
    described_classes = (description or {}).get("model", {}).get("num_classes", config["num_classes"])
    if description and not reset and described_classes == config["num_classes"]:
        model.config.update({k: description[k] for k in ("classes", "palette", "test") if description.get(k)})
    return model


def _check_features_arguments(
    num_classes: int | None, reset_classifier: bool | None, overrides: dict[str, Any]
) -> None:
    """Refuse the head arguments a ``features_only`` model cannot use (it has no decode head)."""
    refused = [k for k, v in (("num_classes", num_classes), ("reset_classifier", reset_classifier)) if v is not None]
    refused += [k for k in overrides if k not in BACKBONE_KEYS and k in FILE_KEYS]
    if refused:
        raise ConfigError(
            f"features_only=True builds the backbone alone, without decode head or classifier: drop {', '.join(refused)} "
            "(a checkpoint's decode head is ignored; put your own head on model(x))"
        )
