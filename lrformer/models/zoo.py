"""The released LRFormer models by name: one tag per released file (``VARIANT.TAG``, timm's form),
what it was trained on, the paper's figures, and how its file is found in the authors' Hub repository.

``create_model("lrformer_t.ade20k", pretrained=True)`` and ``--model lrformer_t.ade20k`` load a released
model; a variant name alone with ``pretrained=True`` takes its default tag (the first in :data:`RELEASED`).

**How a tag finds its file.** The file names in the authors' repository are theirs (the official
README tests ``lrformer-l-160k_ade20k_52.6.pth``), so they are not written here: the repository is
listed once (:func:`lrformer.models.hub.list_files`, cached) and the file is chosen by its name. A
name is read as lower-case words split at every character that is not a letter or a digit, ``+``
counting as the word ``plus``. A checkpoint file (``.pth``, ``.pt``, ``.bin``, ``.ckpt``,
``.safetensors``) belongs to a tag when:

1. it names the variant: the word ``lrformer`` followed by the size (``t``, ``s``, ``b``, ``l``, ``xl``),
   and the word ``plus`` exactly when the variant is an LRFormer+ one;
2. it names the tag's dataset and no other (a word starting with ``ade``, ``coco`` or ``stuff``,
   ``city``), or, for an ImageNet backbone, none;
3. it names ImageNet-22K pre-training (a word containing ``22k`` or ``21k``) exactly when the tag is
   an ImageNet-22K one, unless it names the tag's paper mIoU;
4. any mIoU it names (a number like ``52.6``) is the tag's paper mIoU.

One file must match (the same file in two formats counts once: ``.safetensors`` is taken). None or
several: a one-line error lists the candidates and how to name one file with ``hf-hub:`` instead. A tag may also pin an exact ``path`` (and ``sha256``), which then wins.
After the download the file is checked like any checkpoint: its key layout must be the tag's variant
and its classifier the tag's class count.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..palettes import DATASETS
from ..utils import unknown_key_error
from .hub import CHECKPOINT_SUFFIXES, HubFile, hub_name, list_files
from .registry import VARIANTS, variant_names

HUB_REPOSITORY = "yuhuan-wu/LRFormer-Models"
"""The authors' Hugging Face repository of released checkpoints."""


DATASET_CLASSES = {name: len(classes) for name, (classes, _) in DATASETS.items()}

_ALIGN_512 = {"mode": "whole", "pipeline": "align", "scale": [2048, 512], "size_divisor": 32}
_ALIGN_640 = {**_ALIGN_512, "scale": [2560, 640]}
_PAD_512 = {**_ALIGN_512, "pipeline": "pad"}
_PAD_640 = {**_PAD_512, "scale": [2560, 640]}
_SLIDE_1024 = {**_ALIGN_512, "mode": "slide", "scale": [2048, 1024], "crop": [1024, 1024], "stride": [768, 768]}


@dataclass(frozen=True)
class ReleasedModel:
    """One released checkpoint.

    Attributes:
        tag: ``VARIANT.TAG``, e.g. ``lrformer_t.ade20k``.
        dataset: the segmentation dataset it was trained on (its classes and palette), or ``None``
            for an ImageNet backbone.
        pretraining: ``in1k`` or ``in22k`` (the ImageNet backbone it started from).
        size: training crop side (512, 640, 1024) or ImageNet input side (224).
        test: the test-time settings of its published result (``InferenceConfig`` fields).
        flops, params, miou: the paper's figures (GMACs at the test size, millions, single-scale mIoU %).
        recipe: the training recipe shipped with the package, where there is one.
        path, sha256: an exact file in the repository and its hash, when known (else found by name).
    """

    tag: str
    dataset: str | None
    pretraining: str = "in1k"
    size: int = 512
    test: dict[str, Any] | None = None
    flops: float | None = None
    params: float | None = None
    miou: float | None = None
    recipe: str | None = None
    path: str | None = None
    sha256: str | None = None
    repository: str = field(default=HUB_REPOSITORY)

    @property
    def variant(self) -> str:
        return self.tag.split(".", 1)[0]

    @property
    def num_classes(self) -> int | None:
        return DATASET_CLASSES[self.dataset] if self.dataset else None

    def description(self) -> dict[str, Any]:
        """The model description a checkpoint of ours would carry: variant, classes, palette, test settings."""
        classes, palette = DATASETS[self.dataset] if self.dataset else (None, None)
        model = {"name": self.variant, **({"num_classes": self.num_classes} if self.dataset else {})}
        return {
            "format": 1,
            "model": model,
            "classes": list(classes) if classes else None,
            "palette": [list(color) for color in palette] if palette else None,
            "test": dict(self.test) if self.test else None,
        }


def _seg(tag: str, dataset: str, figures: tuple[float, float, float], test: dict, **extra: Any) -> ReleasedModel:
    flops, params, miou = figures
    return ReleasedModel(tag, dataset, test=test, flops=flops, params=params, miou=miou, **extra)


RELEASED: dict[str, ReleasedModel] = {m.tag: m for m in (
    _seg("lrformer_t.ade20k", "ade20k", (17, 13, 46.7), _ALIGN_512, recipe="lrformer_t_ade20k"),
    _seg("lrformer_t.cocostuff", "cocostuff", (17, 13, 43.9), _ALIGN_512, recipe="lrformer_t_cocostuff"),
    _seg("lrformer_t.cityscapes", "cityscapes", (122, 13, 80.7), _SLIDE_1024, size=1024,
         recipe="lrformer_t_cityscapes"),
    ReleasedModel("lrformer_t.in1k", None, size=224),
    _seg("lrformer_s.ade20k", "ade20k", (40, 32, 50.0), _ALIGN_512, recipe="lrformer_s_ade20k"),
    _seg("lrformer_s.cocostuff", "cocostuff", (40, 32, 46.4), _ALIGN_512),
    _seg("lrformer_s.cityscapes", "cityscapes", (295, 32, 81.9), _SLIDE_1024, size=1024),
    ReleasedModel("lrformer_s.in1k", None, size=224),
    _seg("lrformer_b.ade20k", "ade20k", (75, 69, 51.0), _ALIGN_512, recipe="lrformer_b_ade20k"),
    _seg("lrformer_b.cocostuff", "cocostuff", (75, 69, 47.2), _ALIGN_512),
    _seg("lrformer_b.cityscapes", "cityscapes", (555, 67, 83.0), _SLIDE_1024, size=1024),
    ReleasedModel("lrformer_b.in1k", None, size=224),
    _seg("lrformer_l.ade20k", "ade20k", (183, 113, 52.6), _ALIGN_640, size=640, recipe="lrformer_l_ade20k"),
    _seg("lrformer_l.ade20k_in22k", "ade20k", (183, 113, 54.2), _ALIGN_640, size=640, pretraining="in22k"),
    _seg("lrformer_l.cocostuff", "cocostuff", (122, 113, 47.9), _ALIGN_512),
    _seg("lrformer_l.cityscapes", "cityscapes", (908, 111, 83.2), _SLIDE_1024, size=1024),
    ReleasedModel("lrformer_l.in1k", None, size=224),
    ReleasedModel("lrformer_l.in22k", None, pretraining="in22k", size=224),
    ReleasedModel("lrformer_xl.in22k", None, pretraining="in22k", size=224),
    _seg("lrformer_t_plus.ade20k", "ade20k", (53, 31, 49.4), _PAD_512, recipe="lrformer_t_plus_ade20k"),
    _seg("lrformer_s_plus.ade20k", "ade20k", (70, 48, 51.3), _PAD_512, recipe="lrformer_s_plus_ade20k"),
    _seg("lrformer_b_plus.ade20k", "ade20k", (94, 80, 53.7), _PAD_512, recipe="lrformer_b_plus_ade20k"),
    _seg("lrformer_l_plus.ade20k_in22k", "ade20k", (192, 119, 55.8), _PAD_640, size=640, pretraining="in22k",
         recipe="lrformer_l_plus_ade20k_640"),
    _seg("lrformer_xl_plus.ade20k_in22k", "ade20k", (365, 205, 58.1), _PAD_640, size=640, pretraining="in22k",
         recipe="lrformer_xl_plus_ade20k_640"),
)}  # fmt: skip
"""Every released model by tag; the first tag of a variant is its default. Figures: the official
README's tables (ADE20K / COCO-Stuff / Cityscapes val, single scale; L at 640×640 on ADE20K)."""


FILE_SUFFIXES = {s.lstrip(".") for s in CHECKPOINT_SUFFIXES} | {"yaml", "yml", "json", "onnx", "xml", "tar"}
"""What follows a variant name and a dot in a file name, not in a tag (``lrformer_t.pth`` is a file)."""


def is_tag(name: object) -> bool:
    """Whether ``name`` has the ``VARIANT.TAG`` form of a released model (known or not), rather than
    being a file name such as ``lrformer_t.pth``. A tag is always a tag (as in timm): a local file
    named like one is given as ``./lrformer_t.ade20k``."""
    if not isinstance(name, str) or "." not in name:
        return False
    variant, tag = name.split(".", 1)
    return variant in VARIANTS and re.fullmatch(r"[a-z0-9_]+", tag) is not None and tag not in FILE_SUFFIXES


def list_models(filter: str = "*", pretrained: bool = False) -> list[str]:
    """Names :func:`~lrformer.models.create_model` accepts, matching the shell-style ``filter``: the
    variants, or with ``pretrained`` the released models' tags (timm's ``list_models``)."""
    names = list(RELEASED) if pretrained else variant_names()
    return [name for name in names if fnmatch.fnmatchcase(name, filter or "*")]


def list_released(pattern: str = "*") -> list[ReleasedModel]:
    """The released models whose tag matches the shell-style ``pattern`` (e.g. ``"lrformer_t*"``), in table order."""
    return [m for tag, m in RELEASED.items() if fnmatch.fnmatchcase(tag, pattern)]


def default_tag(variant: str) -> str:
    """The tag ``pretrained=True`` loads for a bare variant name."""
    for tag, model in RELEASED.items():
        if model.variant == variant:
            return tag
    raise ConfigError(f"no released weights for {variant}: give pretrained=PATH (or --weights PATH)")


def released_model(name: str) -> ReleasedModel:
    """The released model of a tag, or of a variant's default tag; an unknown tag is an
    :class:`~lrformer.errors.UnknownNameError` with "did you mean" over the tags."""
    if name in VARIANTS:
        name = default_tag(name)
    if name not in RELEASED:
        raise unknown_key_error(name, list(RELEASED), "released model")
    return RELEASED[name]


# --- finding the file ------------------------------------------------------------------------------

_DATASET_WORDS = (("ade", "ade20k"), ("coco", "cocostuff"), ("stuff", "cocostuff"), ("city", "cityscapes"))
_MIOU = re.compile(r"(?<![\d.])(\d{2}\.\d{1,2})(?!\.?\d)")


def name_words(path: str) -> list[str]:
    """A file name read as words: lower case, split at anything but letters and digits, ``+`` → ``plus``."""
    return [w for w in re.split(r"[^a-z0-9]+", path.lower().replace("+", " plus ")) if w]


def _variant_of(words: list[str]) -> str | None:
    for i, word in enumerate(words[:-1]):
        if word == "lrformer" and words[i + 1] in ("t", "s", "b", "l", "xl"):
            return f"lrformer_{words[i + 1]}" + ("_plus" if "plus" in words[i + 2 :] else "")
    return None


def _datasets_of(words: list[str]) -> set[str]:
    return {dataset for word in words for prefix, dataset in _DATASET_WORDS if word.startswith(prefix)}


def matches(model: ReleasedModel, path: str) -> bool:
    """Whether the repository file ``path`` is ``model``'s by the rule of this module's docstring."""
    if not path.lower().endswith(CHECKPOINT_SUFFIXES):
        return False
    words = name_words(path)
    if _variant_of(words) != model.variant or _datasets_of(words) != ({model.dataset} if model.dataset else set()):
        return False
    figures = {float(x) for x in _MIOU.findall(path.rsplit("/", 1)[-1])}
    names_miou = model.miou is not None and any(abs(x - model.miou) < 1e-6 for x in figures)
    if figures and model.dataset and not names_miou:
        return False
    in22k = any("22k" in w or "21k" in w for w in words)
    return in22k == (model.pretraining == "in22k") or names_miou


def choose_file(model: ReleasedModel, files: list[HubFile]) -> HubFile:
    """The one file of ``files`` (a repository listing) that is ``model``'s, or a one-line
    :class:`CheckpointError` listing the candidates and how to name a file with ``hf-hub:``."""
    if model.path:
        pinned = next((f for f in files if f.path == model.path), None)
        return pinned or HubFile(model.path, None, model.sha256)
    found = [f for f in files if matches(model, f.path)]
    if len({f.path.rsplit(".", 1)[0] for f in found}) == 1:  # one file, perhaps in two formats: safetensors wins
        return max(found, key=lambda f: f.path.endswith(".safetensors"))
    same_variant = [f.path for f in files if _variant_of(name_words(f.path)) == model.variant
                    and f.path.lower().endswith(CHECKPOINT_SUFFIXES)]  # fmt: skip
    if found:
        problem = f"{len(found)} files of {model.repository} match {model.tag}: {', '.join(f.path for f in found)}"
    else:
        listed = same_variant or [f.path for f in files if f.path.lower().endswith(CHECKPOINT_SUFFIXES)]
        problem = f"no file of {model.repository} matches {model.tag}" + (
            f" (files of {model.variant}: {', '.join(listed)})" if same_variant
            else f" (its checkpoints: {', '.join(listed[:12])}{' ...' if len(listed) > 12 else ''})"
        )  # fmt: skip
    example = hub_name(model.repository, (found[0].path if found else (same_variant or ["FILE.pth"])[0]))
    raise CheckpointError(
        f"{problem}; name the file instead, e.g. --weights {example} --model {model.tag} "
        f"(create_model('{model.tag}', pretrained='{example}')); `lrformer models --refresh` lists the repository again"
    )


def released_file(model: ReleasedModel, refresh: bool = False) -> HubFile:
    """The repository file of ``model`` (listing the repository once, see :func:`choose_file`)."""
    return choose_file(model, list_files(model.repository, refresh=refresh))


def released_source(model: ReleasedModel, refresh: bool = False) -> tuple[str, str | None]:
    """``(hf-hub name, sha256)`` of ``model``'s file (a pinned path needs no listing)."""
    chosen = HubFile(model.path, None, model.sha256) if model.path else released_file(model, refresh)
    return hub_name(model.repository, chosen.path), model.sha256


def check_classes(model: ReleasedModel, classes: int | None, source: str) -> None:
    """Refuse a downloaded file whose classifier is not the tag's class count (another dataset's model)."""
    if model.num_classes is not None and classes is not None and classes != model.num_classes:
        raise CheckpointError(
            f"{source} holds a {classes}-class model, not the {model.num_classes} classes of {model.tag} "
            f"({model.dataset}); name the right file with --weights hf-hub:{model.repository}/FILE"
        )
