"""Train-time augmentation with mmsegmentation's semantics, on BGR uint8 images.

``RandomResize`` (LRFormer) or ``RandomChoiceResize`` + ``ResizeShortestEdge`` (LRFormer+) →
``RandomCrop`` (cat_max_ratio) → ``RandomFlip`` → ``PhotoMetricDistortion`` → BGR→RGB, normalise,
pad to the crop size (images with 0, labels with the ignore index). Every random draw comes from
the ``numpy.random.Generator`` passed in, so a sample's augmentation is reproducible from its
seed (exact resume, identical results across worker counts).

Design notes: ``docs/design.md``, section 9 (training semantics).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np
import torch

from ..errors import ConfigError
from ..image.transforms import normalize, rescale_size


@dataclass(frozen=True)
class RandomResize:
    """mmcv ``RandomResize(scale, ratio_range, keep_ratio=True)``, the LRFormer recipe.

    A ratio ``r ~ U(ratio_range)`` scales the bound to ``(int(scale[0]·r), int(scale[1]·r))``;
    the image is then rescaled, aspect kept, to fit it (:func:`rescale_size`).
    """

    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)

    def output_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """``(H, W)`` after the resize of an ``height × width`` image (one draw from ``rng``)."""
        low, high = self.ratio_range
        ratio = rng.random() * (high - low) + low
        return rescale_size(height, width, (int(self.scale[0] * ratio), int(self.scale[1] * ratio)))


@dataclass(frozen=True)
class RandomChoiceResize:
    """mmcv ``RandomChoiceResize(scales, resize_type='ResizeShortestEdge', max_size)``, the
    LRFormer+ (Mask2Former) recipe.

    A short side ``s`` is drawn uniformly from ``scales``; mmseg's ``ResizeShortestEdge`` turns
    it into a bound (:func:`shortest_edge_size`), and the image is rescaled, aspect kept, to fit
    that bound (:func:`rescale_size`).
    """

    scales: tuple[int, ...]
    max_size: int = 2048

    def output_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """``(H, W)`` after the resize of an ``height × width`` image (one draw from ``rng``)."""
        short = self.scales[int(rng.integers(len(self.scales)))]
        return rescale_size(height, width, shortest_edge_size(height, width, short, self.max_size))


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """mmseg ``ResizeShortestEdge``'s target ``(H, W)``: the short side to ``short``, the long side
    scaled with it; if the long side then exceeds ``max_size`` both are scaled down to fit; each
    rounded half up (``int(x + 0.5)``)."""
    factor = short / min(height, width)
    new_h, new_w = (short, factor * width) if height < width else (factor * height, short)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


RESIZE_TYPES = {"RandomResize": RandomResize, "RandomChoiceResize": RandomChoiceResize}
RESIZE_KEYS = ("type", "scale", "ratio_range", "scales", "max_size")
"""Keys of a resize mapping (``data.resize`` in a training config)."""


def build_resize(settings: dict) -> RandomResize | RandomChoiceResize:
    """The resize step from a mapping such as ``{type: RandomResize, scale: [2048, 512],
    ratio_range: [0.5, 2.0]}`` or ``{type: RandomChoiceResize, scales: [256, ..., 1024], max_size: 2048}``.

    Raises :class:`~lrformer.errors.ConfigError` naming the problem: an unknown type, a key the type does not take (e.g.
    left over from a base config: ``_delete_: true`` replaces the whole mapping), a bad value.
    """
    if not isinstance(settings, dict) or settings.get("type") not in RESIZE_TYPES:
        got = settings.get("type") if isinstance(settings, dict) else settings
        raise ConfigError(f"type must be one of {', '.join(RESIZE_TYPES)}, got {got!r}")
    cls = RESIZE_TYPES[settings["type"]]
    names = [f.name for f in fields(cls)]
    extra = [k for k in settings if k != "type" and k not in names]
    if extra:
        raise ConfigError(
            f"{cls.__name__} takes {', '.join(names)}, not {', '.join(extra)} (left over from a base config? "
            "add `_delete_: true` to the resize mapping to replace it whole)"
        )
    kwargs = {k: v for k, v in settings.items() if k != "type"}
    if cls is RandomResize:
        scale, ratios = kwargs.get("scale", RandomResize.scale), kwargs.get("ratio_range", RandomResize.ratio_range)
        if not _numbers(scale, int, 2) or not _numbers(ratios, (int, float), 2) or not 0 < ratios[0] <= ratios[1]:
            raise ConfigError(
                f"RandomResize needs scale [long, short] (two positive integers) and ratio_range [low, high] "
                f"(0 < low <= high), got scale {scale!r}, ratio_range {ratios!r}"
            )
        return RandomResize(tuple(scale), tuple(float(r) for r in ratios))
    scales, max_size = kwargs.get("scales"), kwargs.get("max_size", RandomChoiceResize.max_size)
    if not _numbers(scales, int) or not _numbers([max_size], int, 1):
        raise ConfigError(
            f"RandomChoiceResize needs scales (a list of positive short sides) and max_size (a positive "
            f"integer), got scales {scales!r}, max_size {max_size!r}"
        )
    return RandomChoiceResize(tuple(scales), max_size)


def _numbers(values, kind, count: int | None = None) -> bool:
    """``values`` is a non-empty list/tuple of ``count`` positive numbers of type ``kind`` (no bools)."""
    return (
        isinstance(values, (list, tuple))
        and len(values) > 0
        and (count is None or len(values) == count)
        and all(isinstance(v, kind) and not isinstance(v, bool) and v > 0 for v in values)
    )


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of the training pipeline (defaults: the official ADE20K 512×512 recipe)."""

    resize: RandomResize | RandomChoiceResize = RandomResize()
    crop_size: tuple[int, int] = (512, 512)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    ignore_index: int = 255

    @classmethod
    def from_data_config(cls, data: dict, ignore_index: int) -> AugmentConfig:
        """The pipeline of a training config's ``data`` section (``resize``, ``crop_size``,
        ``cat_max_ratio``, ``flip_prob``, ``photometric``) with the dataset's ``ignore_index``."""
        return cls(
            resize=build_resize(data["resize"]), crop_size=tuple(data["crop_size"]),
            cat_max_ratio=data["cat_max_ratio"], flip_prob=data["flip_prob"], photometric=data["photometric"],
            ignore_index=ignore_index,
        )  # fmt: skip


def random_resize(
    image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The configured random resize (``cfg.resize``): image bilinear, label nearest."""
    height, width = cfg.resize.output_size(*image.shape[:2], rng)
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
