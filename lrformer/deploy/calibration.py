"""The images int8 quantisation calibrates on, and the held-out images its result is checked on.

A calibration source is a folder of images, or a dataset (a built-in name or a dataset YAML with
its root; a training config names one in its ``data`` section, which the command line reads). A
dataset calibrates on its training split and is checked on its validation split, whose labels give
the mIoU; a folder, or a dataset with one split, is divided: a seeded random draw of the images
calibrates and the others are held out. Images are drawn in a seeded random order so that the
calibration set spans the source; unreadable ones are skipped, each with a note.

Calibration images go through the model's test pipeline (:func:`lrformer.inference.prepare`) to
network inputs, :func:`network_input`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.datasets import DatasetSpec, SegmentationDataset
from ..errors import ImageReadError, InputError, MissingFileError
from ..files import walk_files
from ..image.io import IMAGE_SUFFIXES, read_image
from ..image.pipeline import InferenceConfig
from ..inference import prepare

CALIBRATION_SIZE = 300
"""Images calibrated on by default (NNCF's default subset)."""
HELD_OUT_SIZE = 50
"""Held-out images the int8 model is compared on, at most."""
SEED = 0


@dataclass
class CalibrationImages:
    """Images to calibrate on and, disjoint from them, images to check the quantised model on.

    ``label(i)``, when the source is labelled, gives the label map ``(H, W)`` int64 of
    ``held_out[i]`` (the dataset's ``reduce_zero_label`` applied); ``classes`` and
    ``ignore_index`` are then the dataset's. ``notes``: what was skipped, one line each.
    """

    calibration: list[Path]
    held_out: list[Path]
    label: Callable[[int], np.ndarray] | None = None
    classes: tuple[str, ...] | None = None
    ignore_index: int = 255
    test: InferenceConfig | None = None
    notes: list[str] = field(default_factory=list)


def from_folder(folder: str | Path, size: int = CALIBRATION_SIZE, held_out: int = HELD_OUT_SIZE) -> CalibrationImages:
    """Calibration and held-out images of a folder of images (searched recursively)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"--calib {folder} does not exist: give a folder of images, a dataset or a config")
    images, notes = walk_files(folder, lambda path: path.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InputError(
            f"--calib {folder} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...): give a folder of images like "
            "those the model will see"
        )
    calibration, kept = _divide(_readable(_shuffled(images), size + held_out, notes, folder), size, held_out)
    return CalibrationImages(calibration, kept, notes=notes)


def from_dataset(
    spec: DatasetSpec,
    root: str | Path,
    splits: tuple[str, str] = ("train", "val"),
    size: int = CALIBRATION_SIZE,
    held_out: int = HELD_OUT_SIZE,
) -> CalibrationImages:
    """Calibration images from the dataset's ``splits[0]`` and labelled held-out images from
    ``splits[1]``; with only one of the two splits present, that split is divided."""
    found = {split: _dataset(spec, root, split) for split in dict.fromkeys(splits)}
    present = [split for split, dataset in found.items() if dataset is not None]
    if not present:
        SegmentationDataset(spec, root, splits[-1])  # raises, showing the expected layout
    notes: list[str] = []
    train, val = found[splits[0]], found[splits[-1]]
    if train is not None and val is not None and splits[0] != splits[-1]:
        calibration = _readable(_shuffled(_images(train)), size, notes, f"{spec.name} {splits[0]}")
        kept = _readable(_shuffled(_images(val)), held_out, notes, f"{spec.name} {splits[-1]}")
    else:
        dataset = val if val is not None else train
        images = _readable(_shuffled(_images(dataset)), size + held_out, notes, f"{spec.name} {present[0]}")
        calibration, kept = _divide(images, size, held_out)
        val = dataset
    index = {str(image): i for i, image in enumerate(_images(val))}
    return CalibrationImages(
        calibration, kept, lambda i: val.load_label(index[str(kept[i])]), spec.classes, spec.ignore_index, spec.test,
        notes,
    )  # fmt: skip


def network_input(
    image: str | Path, config: InferenceConfig, shape: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """The network input ``(B, 3, h, w)`` float32 the test pipeline makes of ``image``: its first
    view (``prepare``), its centre ``crop`` in slide mode, resized bilinearly to ``shape``'s
    ``H, W`` when given (a fixed-size export), repeated to its batch size ``B``."""
    x = prepare(image, config).views[0].image[None]
    if config.mode == "slide":
        height, width = x.shape[-2:]
        top, left = max(height - config.crop[0], 0) // 2, max(width - config.crop[1], 0) // 2
        x = x[..., top : top + config.crop[0], left : left + config.crop[1]]
    if shape is not None and tuple(x.shape[-2:]) != tuple(shape[2:]):
        x = F.interpolate(x, size=tuple(shape[2:]), mode="bilinear", align_corners=False)
    batch = shape[0] if shape is not None else 1
    return torch.cat([x] * batch).numpy() if batch > 1 else x.numpy()


def _dataset(spec: DatasetSpec, root: str | Path, split: str) -> SegmentationDataset | None:
    """The dataset's ``split``, or None when its image folder does not exist."""
    try:
        return SegmentationDataset(spec, root, split)
    except MissingFileError:
        return None


def _images(dataset: SegmentationDataset) -> list[Path]:
    return [image for image, _ in dataset.samples]


def _shuffled(paths: list[Path]) -> list[Path]:
    paths = sorted(paths)
    random.Random(SEED).shuffle(paths)
    return paths


def _readable(paths: list[Path], count: int, notes: list[str], source: str | Path) -> list[Path]:
    """The first ``count`` of ``paths`` that decode; each one that does not adds a note. None
    decoding is an :class:`InputError`."""
    readable = []
    for path in paths:
        if len(readable) == count:
            break
        try:
            read_image(path)
        except ImageReadError as exc:
            notes.append(f"skipped {path}: {exc}")
            continue
        readable.append(path)
    if not readable:
        raise InputError(
            f"--calib {source}: none of its {len(paths)} images can be read ({notes[0]}); give readable images"
        )
    return readable


def _divide(images: list[Path], size: int, held_out: int) -> tuple[list[Path], list[Path]]:
    """``(calibration, held out)`` from one list: ``size`` images calibrate when more remain,
    else a fifth of them (at least one, at most ``held_out``) is held out."""
    keep = len(images) - size if len(images) > size else min(held_out, max(1, len(images) // 5))
    keep = min(keep, held_out, len(images) - 1)
    return images[: len(images) - keep], images[len(images) - keep :]
