"""A procedurally drawn segmentation dataset (the offline demo's data).

Scenes of textured shapes on a textured background: discs, boxes, triangles and rings, with
random colours and textures per instance, so a model has to learn shape, not colour. Generated
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
VERSION = 1


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random colour texture ``(size, size, 3)`` float32: stripes, checks or blotches."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base, other = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    kind = rng.integers(3)
    period = rng.uniform(4, 14)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        mask = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0
    elif kind == 1:
        mask = ((xx // period + yy // period) % 2) > 0
    else:
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), period / 3)
        mask = noise > np.median(noise)
    return np.where(mask[:, :, None], base, other).astype(np.float32)


def draw_scene(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One scene: BGR uint8 image ``(size, size, 3)`` and label map ``(size, size)`` uint8."""
    image = _texture(rng, size)
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
        image[inside] = _texture(rng, size)[inside]
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
