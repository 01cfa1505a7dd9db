"""A procedurally drawn segmentation dataset (the offline demo's data).

Scenes of textured shapes on a smoothly shaded grey background: discs (striped, reds), boxes
(checked, greens), triangles (blotched, blues) and rings (dotted, yellows); every instance has its
own shades, size, position and overlap, so the task is easy to learn yet not trivial. Generated
deterministically (image ``i`` of a split from seed ``(split, i)``) into the generic layout that
``lrformer eval``/``train`` read, with its dataset YAML.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..utils import atomic_path

CLASSES = ("background", "disc", "box", "triangle", "ring")
PALETTE = ((40, 40, 40), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200))
VERSION = 3


CLASS_HUES = (None, 0, 60, 120, 30)
"""OpenCV hue (0-180) of each class's colour family; the background is unsaturated."""


def _colour(rng: np.random.Generator, kind: int) -> np.ndarray:
    """A BGR colour of the class's family: its hue ±8, random saturation and value."""
    if CLASS_HUES[kind] is None:
        hsv = (rng.integers(0, 180), rng.integers(0, 50), rng.integers(60, 200))
    else:
        hsv = ((CLASS_HUES[kind] + rng.integers(-8, 9)) % 180, rng.integers(120, 256), rng.integers(90, 256))
    pixel = np.array([[hsv]], dtype=np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _texture(rng: np.random.Generator, size: int, kind: int) -> np.ndarray:
    """A texture ``(size, size, 3)`` float32 of a class: 0 smooth gradient (the background),
    1 stripes, 2 checks, 3 blotches, 4 dots, in two colours of the class's family."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base, other = _colour(rng, kind), _colour(rng, kind)
    period = rng.uniform(8, 16)
    if kind == 0:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = ((xx * np.cos(angle) + yy * np.sin(angle)) / size + 1) / 2
        return (base * ramp[:, :, None] + other * (1 - ramp[:, :, None])).astype(np.float32)
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        mask = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0
    elif kind == 2:
        mask = ((xx // period + yy // period) % 2) > 0
    elif kind == 3:
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), period / 3)
        mask = noise > np.median(noise)
    else:
        mask = (np.hypot(xx % period - period / 2, yy % period - period / 2)) < period / 4
    return np.where(mask[:, :, None], base, other).astype(np.float32)


def draw_scene(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One scene: BGR uint8 image ``(size, size, 3)`` and label map ``(size, size)`` uint8."""
    image = _texture(rng, size, 0)
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.integers(1, len(CLASSES)))
        mask = np.zeros((size, size), np.uint8)
        cx, cy = (int(v) for v in rng.integers(size // 8, size - size // 8, 2))
        r = int(rng.integers(size // 10, size // 4))
        if cls == 1:
            cv2.circle(mask, (cx, cy), r, 1, -1)
        elif cls == 2:
            w, h = (int(v) for v in rng.integers(size // 10, size // 4, 2))
            cv2.rectangle(mask, (cx - w, cy - h), (cx + w, cy + h), 1, -1)
        elif cls == 3:
            angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
            points = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).astype(np.int32)
            cv2.fillPoly(mask, [points], 1)
        else:
            cv2.circle(mask, (cx, cy), r, 1, max(3, r // 3))
        inside = mask.astype(bool)
        image[inside] = _texture(rng, size, cls)[inside]
        label[inside] = cls
    image += rng.normal(0, 5, image.shape)
    return image.clip(0, 255).astype(np.uint8), label


def generate(root: str | Path, train: int = 400, val: int = 50, size: int = 128) -> Path:
    """Write the dataset under ``root`` (skipping what exists) and return its dataset YAML path."""
    root = Path(root)
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            image_path = root / "images" / split / f"{i:05d}.png"
            label_path = root / "annotations" / split / f"{i:05d}.png"
            if image_path.exists() and label_path.exists():
                continue
            rng = np.random.default_rng([VERSION, 0 if split == "train" else 1, i])
            image, label = draw_scene(rng, size)
            for path, array in ((image_path, image), (label_path, label)):
                with atomic_path(path) as tmp:
                    cv2.imwrite(str(tmp), array)
    spec = root / "dataset.yaml"
    with atomic_path(spec) as tmp:
        tmp.write_text(
            "img_dir: images/{split}\nann_dir: annotations/{split}\nimg_suffix: .png\nseg_map_suffix: .png\n"
            f"classes: {list(CLASSES)}\npalette: {[list(c) for c in PALETTE]}\n"
            f"reduce_zero_label: false\nignore_index: 255\ntest: {{scale: [{2 * size}, {size}]}}\n"
        )
    return spec
