"""Train-time augmentation with mmsegmentation's semantics (SPEC §11), on BGR uint8 images.

``RandomResize`` → ``RandomCrop`` (cat_max_ratio) → ``RandomFlip`` → ``PhotoMetricDistortion`` →
BGR→RGB, normalise, pad to the crop size (images with 0, labels with the ignore index). Every
random draw comes from the ``numpy.random.Generator`` passed in, so a sample's augmentation is
reproducible from its seed (exact resume, identical results across worker counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..inference.transforms import normalize, rescale_size


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of the training pipeline (defaults: the official ADE20K 512×512 recipe)."""

    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: tuple[int, int] = (512, 512)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    ignore_index: int = 255


def random_resize(
    image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``RandomResize``: r ~ U(ratio_range), keep-ratio rescale to ``(int(long·r), int(short·r))``;
    image bilinear, label nearest."""
    low, high = cfg.ratio_range
    ratio = rng.random() * (high - low) + low
    scale = (int(cfg.scale[0] * ratio), int(cfg.scale[1] * ratio))
    height, width = rescale_size(*image.shape[:2], scale)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
    return image, label


def random_crop(
    image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``RandomCrop`` at a uniform offset, redrawn up to 10 times until the crop's non-ignored
    labels hold more than one class and the largest is below ``cat_max_ratio``."""
    crop_h, crop_w = cfg.crop_size

    def draw() -> tuple[int, int]:
        return (int(rng.integers(0, max(image.shape[0] - crop_h, 0) + 1)),
                int(rng.integers(0, max(image.shape[1] - crop_w, 0) + 1)))  # fmt: skip

    y, x = draw()
    if cfg.cat_max_ratio < 1.0:
        for _ in range(10):
            values, counts = np.unique(label[y : y + crop_h, x : x + crop_w], return_counts=True)
            counts = counts[values != cfg.ignore_index]
            if len(counts) > 1 and counts.max() / counts.sum() < cfg.cat_max_ratio:
                break
            y, x = draw()
    return image[y : y + crop_h, x : x + crop_w], label[y : y + crop_h, x : x + crop_w]


def _convert(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``PhotoMetricDistortion``: brightness ±32; contrast ×[0.5, 1.5] first or last (mode);
    saturation ×[0.5, 1.5]; hue ±18 (OpenCV 8-bit HSV); each step applied with probability 0.5."""

    def contrast(img: np.ndarray) -> np.ndarray:
        return _convert(img, alpha=rng.uniform(0.5, 1.5)) if rng.integers(2) else img

    if rng.integers(2):
        image = _convert(image, beta=rng.uniform(-32, 32))
    mode = rng.integers(2)
    if mode == 1:
        image = contrast(image)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=rng.uniform(0.5, 1.5))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + int(rng.integers(-18, 18))) % 180  # numpy randint: [-18, 17]
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0:
        image = contrast(image)
    return image


def augment(
    image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training pipeline: BGR uint8 ``(H, W, 3)`` and label ``(H, W)`` →
    normalised RGB ``(3, h, w)`` float32 and label ``(h, w)`` int64 padded to the crop size."""
    image, label = random_resize(image, label, cfg, rng)
    image, label = random_crop(image, label, cfg, rng)
    if rng.random() < cfg.flip_prob:
        image, label = image[:, ::-1], label[:, ::-1]
    if cfg.photometric:
        image = photometric_distortion(np.ascontiguousarray(image), rng)
    x = normalize(image)
    y = torch.from_numpy(np.ascontiguousarray(label)).long()
    pad_h, pad_w = cfg.crop_size[0] - x.shape[1], cfg.crop_size[1] - x.shape[2]
    if pad_h > 0 or pad_w > 0:
        x = torch.nn.functional.pad(x, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=0.0)
        y = torch.nn.functional.pad(y, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=cfg.ignore_index)
    return x, y
