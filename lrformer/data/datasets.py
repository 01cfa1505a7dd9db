"""Dataset readers for ADE20K, Cityscapes, COCO-Stuff 164k and a generic layout described in YAML.

A dataset is a list of (image, annotation) file pairs plus its class names, palette,
``reduce_zero_label`` and ``ignore_index``, and the official test-time settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, InputError, LabelValueError, MissingFileError, UnknownNameError
from ..image.pipeline import InferenceConfig
from ..palettes import DATASETS as PALETTES
from ..utils import read_mapping, unknown_key_error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's files are and how to read them (paths relative to the data root)."""

    name: str
    img_dir: str
    ann_dir: str
    img_suffix: str
    seg_map_suffix: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None = None
    reduce_zero_label: bool = False
    ignore_index: int = 255
    test: InferenceConfig = field(default_factory=InferenceConfig)
    splits: dict[str, str] = field(default_factory=dict)  # split name → value of {split} in the dirs

    def dirs(self, split: str) -> tuple[str, str]:
        value = self.splits.get(split, split)
        return self.img_dir.format(split=value), self.ann_dir.format(split=value)

    def layout(self, split: str = "val") -> str:
        img_dir, ann_dir = self.dirs(split)
        return f"ROOT/{img_dir}/**/*{self.img_suffix} with labels ROOT/{ann_dir}/**/*{self.seg_map_suffix}"


_CITYSCAPES_TEST = InferenceConfig(mode="slide", scale=(2048, 1024), crop=(1024, 1024), stride=(768, 768))

BUILTIN: dict[str, DatasetSpec] = {
    "ade20k": DatasetSpec(
        "ade20k", "ADEChallengeData2016/images/{split}", "ADEChallengeData2016/annotations/{split}", ".jpg", ".png",
        PALETTES["ade20k"][0], PALETTES["ade20k"][1], reduce_zero_label=True,
        splits={"train": "training", "val": "validation"},
    ),
    "cityscapes": DatasetSpec(
        "cityscapes", "leftImg8bit/{split}", "gtFine/{split}", "_leftImg8bit.png", "_gtFine_labelTrainIds.png",
        PALETTES["cityscapes"][0], PALETTES["cityscapes"][1], test=_CITYSCAPES_TEST,
    ),
    "cocostuff": DatasetSpec(
        "cocostuff", "images/{split}", "annotations/{split}", ".jpg", "_labelTrainIds.png",
        PALETTES["cocostuff"][0], PALETTES["cocostuff"][1], splits={"train": "train2017", "val": "val2017"},
    ),
}  # fmt: skip
"""The standard layouts. ``ade20k``'s root may be the folder holding ``ADEChallengeData2016`` or that folder itself."""

YAML_KEYS = ("img_dir", "ann_dir", "img_suffix", "seg_map_suffix", "classes", "palette", "reduce_zero_label",
             "ignore_index", "splits", "test")  # fmt: skip


def load_spec(name_or_yaml: str | Path) -> DatasetSpec:
    """A built-in dataset by name, or a generic layout from a YAML file (keys: :data:`YAML_KEYS`)."""
    if str(name_or_yaml) in BUILTIN:
        return BUILTIN[str(name_or_yaml)]
    path = Path(name_or_yaml)
    if not path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        raise MissingFileError(f"dataset file {path} does not exist")
    if not path.is_file():
        raise UnknownNameError(
            f"unknown dataset {str(name_or_yaml)!r}: use {', '.join(BUILTIN)} or a YAML file describing the layout"
        )
    data = read_mapping(path, "dataset file", ", ".join(YAML_KEYS))
    for key in data:
        if key not in YAML_KEYS:
            raise unknown_key_error(key, YAML_KEYS, f"key in {path}:")
    missing = [k for k in ("img_dir", "ann_dir", "classes") if k not in data]
    if missing:
        raise ConfigError(f"{path}: missing required key(s) {missing}")
    palette = data.get("palette")
    if palette is not None and len(palette) != len(data["classes"]):
        raise ConfigError(f"{path}: {len(palette)} palette colours for {len(data['classes'])} classes")
    test = InferenceConfig.from_dict(data.get("test"))
    return DatasetSpec(
        name=path.stem, img_dir=data["img_dir"], ann_dir=data["ann_dir"],
        img_suffix=data.get("img_suffix", ".jpg"), seg_map_suffix=data.get("seg_map_suffix", ".png"),
        classes=tuple(data["classes"]), palette=tuple(map(tuple, palette)) if palette else None,
        reduce_zero_label=bool(data.get("reduce_zero_label", False)), ignore_index=int(data.get("ignore_index", 255)),
        test=test, splits=dict(data.get("splits") or {}),
    )  # fmt: skip


def label_value_problem(label: np.ndarray, num_classes: int, ignore_index: int = 255, source: str = "label") -> str:
    """``""`` when every value of ``label`` is a class index (``0..num_classes-1``) or
    ``ignore_index``; otherwise a one-line message naming ``source``, the first bad value and the fix."""
    label = np.asarray(label)
    bad = label[((label < 0) | (label >= num_classes)) & (label != ignore_index)]
    if not bad.size:
        return ""
    return (
        f"{source}: label value {int(bad.flat[0])} is not a class index (0..{num_classes - 1}) nor the ignore "
        f"index {ignore_index}; check the dataset's classes, reduce_zero_label and ignore_index (Cityscapes "
        "needs *_labelTrainIds.png: run `lrformer convert cityscapes`)"
    )


def check_label_values(label: np.ndarray, num_classes: int, ignore_index: int = 255, source: str = "label") -> None:
    """Raise :class:`LabelValueError` (see :func:`label_value_problem`) for a bad label map."""
    problem = label_value_problem(label, num_classes, ignore_index, source)
    if problem:
        raise LabelValueError(problem)


def read_label(path: str | Path) -> np.ndarray:
    """A label map as stored: palette ("P") PNGs give their indices, 16-bit PNGs their values
    (read with Pillow, as mmseg does)."""
    try:
        with Image.open(path) as image:
            label = np.array(image)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the annotation ({exc})") from exc
    if label.ndim != 2:
        raise InputError(f"{path}: annotations must be single-channel label maps, got shape {label.shape}")
    return label


class SegmentationDataset:
    """Image / label pairs of one split. ``dataset[i]`` → ``(bgr image, label map, image path)``.

    Raises on a missing root (showing the expected layout) and on images without labels (listing
    them); labels without images are listed in a warning.
    """

    def __init__(self, spec: DatasetSpec, root: str | Path, split: str = "val") -> None:
        self.spec = spec
        self.root = self._resolve_root(Path(root), spec, split)
        img_dir, ann_dir = (self.root / d for d in spec.dirs(split))
        if not img_dir.is_dir():
            raise MissingFileError(
                f"{img_dir} does not exist. Expected layout for {spec.name} ({split}): {spec.layout(split)}"
            )
        images = sorted(p for p in img_dir.rglob(f"*{spec.img_suffix}") if p.is_file())
        if not images:
            raise MissingFileError(
                f"no *{spec.img_suffix} images under {img_dir}. Expected layout: {spec.layout(split)}"
            )
        labels = {
            p: ann_dir / (str(p.relative_to(img_dir))[: -len(spec.img_suffix)] + spec.seg_map_suffix) for p in images
        }
        unlabelled = [str(p) for p, a in labels.items() if not a.is_file()]
        if unlabelled:
            raise MissingFileError(
                f"{len(unlabelled)} image(s) have no annotation in {ann_dir} (expected <name>{spec.seg_map_suffix}): "
                + ", ".join(unlabelled[:10])
                + (" ..." if len(unlabelled) > 10 else "")
            )
        known = set(labels.values())
        orphans = (
            [str(p) for p in ann_dir.rglob(f"*{spec.seg_map_suffix}") if p not in known] if ann_dir.is_dir() else []
        )
        if orphans:
            logger.warning("%d annotation(s) without an image: %s", len(orphans), ", ".join(orphans[:10]))
        self.samples = list(labels.items())

    @staticmethod
    def _resolve_root(root: Path, spec: DatasetSpec, split: str) -> Path:
        if not root.is_dir():
            raise MissingFileError(
                f"data root {root} does not exist. Expected layout for {spec.name}: {spec.layout(split)}"
            )
        first = Path(spec.dirs(split)[0]).parts[0]
        if not (root / first).exists() and root.name == first:
            return root.parent  # e.g. --data-root .../ADEChallengeData2016
        return root

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def __len__(self) -> int:
        return len(self.samples)

    def load_label(self, index: int) -> np.ndarray:
        """Label map ``(H, W)`` int64 with ``reduce_zero_label`` applied (0 → ignore, others − 1)."""
        label = read_label(self.samples[index][1]).astype(np.int64)
        if self.spec.reduce_zero_label:
            label = np.where(label == 0, 255, label - 1)
            label[label == 254] = 255
        return label

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        from ..image.io import read_image

        image_path = self.samples[index][0]
        return read_image(image_path), self.load_label(index), str(image_path)
