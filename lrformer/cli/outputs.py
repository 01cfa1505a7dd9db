"""What ``lrformer predict`` and ``lrformer eval --show-dir`` write: label maps, overlays, panels
and class-fraction JSON, each file atomically; a failed write stops the run with a one-line error."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..image import class_table, overlay, panel, save_image, save_label_png
from ..image.io import PictureTooLargeError
from ..utils import write_bytes_atomic


@contextlib.contextmanager
def writing(path: Path, done: int, unit: str = "image(s)", option: str = "--out") -> Iterator[None]:
    """Turn an ``OSError`` (full disk, a folder removed meanwhile) while writing ``path`` into one
    line that says what to do and that the ``done`` finished outputs are complete."""
    try:
        yield
    except OSError as exc:
        raise InputError(
            f"cannot write {path} ({exc.strerror or exc}): free some space or choose another {option} and rerun; "
            f"the {done} finished {unit} are complete"
        ) from exc


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=1) + "\n").encode())


class Legend:
    """The colours and class names pictures use: ``palette`` ``(K, 3)`` RGB and ``names`` (or ``None``: ``class N``)."""

    def __init__(self, palette: np.ndarray, names: Sequence[str] | None) -> None:
        self.palette, self.names = palette, names

    @classmethod
    def for_model(cls, description: Mapping, num_classes: int, option: str | None) -> Legend:
        """The palette and classes of a model's ``description`` (``Predictor.network.description``:
        a self-describing checkpoint's or export's), unless ``--palette`` (``option``) names
        others; else the dataset of that name (or a dataset YAML), or the one the class count
        suggests (150 ADE20K, 19 Cityscapes, 171 COCO-Stuff), else random colours."""
        from ..data.datasets import load_spec
        from ..palettes import DATASETS, get_palette

        saved_palette, saved_classes = description.get("palette"), description.get("classes")
        if saved_palette and not option and len(saved_palette) >= num_classes:
            return cls(np.asarray(saved_palette, dtype=np.uint8), saved_classes)
        if option and option.endswith((".yaml", ".yml")):
            spec = load_spec(option)
            if not spec.palette:
                raise InputError(f"--palette {option}: the dataset file has no palette; add one or name a palette")
            return cls(np.asarray(spec.palette, dtype=np.uint8), spec.classes)
        name = option or {150: "ade20k", 19: "cityscapes", 171: "cocostuff"}.get(num_classes, "random")
        names = saved_classes
        if names is None and name in DATASETS and len(DATASETS[name][0]) == num_classes:
            names = DATASETS[name][0]
        return cls(get_palette(name, num_classes), names)

    @classmethod
    def for_dataset(cls, spec) -> Legend:
        """A dataset's class names and palette (random colours where it has too few)."""
        from ..palettes import get_palette

        palette = np.asarray(spec.palette, dtype=np.uint8) if spec.palette else np.zeros((0, 3), np.uint8)
        if len(palette) < len(spec.classes):
            palette = get_palette("random", len(spec.classes))
        return cls(palette, spec.classes)


class ImageOutputs:
    """The files written for one input image named ``name`` under ``out`` (see :mod:`.inputs`)."""

    def __init__(self, out: Path, legend: Legend, args: argparse.Namespace) -> None:
        self.out, self.legend, self.args = out, legend, args
        self.done = 0

    @property
    def keep_image(self) -> bool:
        """Whether the decoded image is needed after prediction (for pictures)."""
        return not self.args.no_overlay or self.args.panel

    def write(self, name: str, source: Path, image_bgr: np.ndarray | None, label: np.ndarray) -> list[str]:
        """Label PNG, then the panel (from the untouched image), then the overlay drawn into the
        image itself (no second copy of a large image), then the JSON; ``image_bgr`` is consumed.
        Returns the problems that skipped a picture (too large for a JPEG); a failed write raises."""
        args, legend = self.args, self.legend
        problems = []
        path = self.out / f"{name}.png"
        with writing(path, self.done):
            save_label_png(path, label, legend.palette)
        if args.panel:
            path = self.out / f"{name}_panel.jpg"
            with writing(path, self.done):
                picture = panel(image_bgr, label, legend.palette, legend.names, legend=not args.no_legend)
                problems += _save_picture(path, picture)
        if not args.no_overlay:
            path = self.out / f"{name}_overlay.jpg"
            picture = overlay(image_bgr, label, legend.palette, args.opacity, legend.names, not args.no_legend, True)
            with writing(path, self.done):
                problems += _save_picture(path, picture)
        if args.json:
            path = self.out / f"{name}.json"
            with writing(path, self.done):
                write_json(path, {"input": str(source), "size": list(label.shape),
                                  "classes": class_table(label, legend.names)})  # fmt: skip
        self.done += 1
        return problems


def _save_picture(path: Path, picture: np.ndarray) -> list[str]:
    """Write a picture; one that no JPEG can hold is skipped and described instead."""
    try:
        save_image(path, picture)
    except PictureTooLargeError as exc:
        return [str(exc)]
    return []
