"""Test-time preprocessing with the official (mmcv / mmsegmentation) semantics (the pipeline of the released results).

Design notes: ``docs/design.md``, section 6 (the test pipelines).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv ``rescale_size`` with a (long, short) bound: ``f = min(long/max(h, w), short/min(h, w))``,
    new size ``(int(h·f + 0.5), int(w·f + 0.5))`` returned as ``(H, W)`` (at least 1 pixel each:
    mmcv would produce an empty image for extreme aspect ratios)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV ``INTER_LINEAR`` resize of a uint8 image to ``(height, width)``, as ``mmcv.imresize``."""
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def keep_ratio_resize(image: np.ndarray, scale: tuple[int, int]) -> np.ndarray:
    """``Resize(scale, keep_ratio=True)``: one bilinear resize to :func:`rescale_size`."""
    return resize_bilinear(image, *rescale_size(*image.shape[:2], scale))


def align_resize(image: np.ndarray, scale: tuple[int, int], size_divisor: int = 32) -> np.ndarray:
    """``AlignResize``: keep-ratio resize, then a **second** bilinear resize to the next multiples
    of ``size_divisor`` (``ceil(h/d)·d``, ``ceil(w/d)·d``)."""
    image = keep_ratio_resize(image, scale)
    height, width = image.shape[:2]
    return resize_bilinear(
        image, math.ceil(height / size_divisor) * size_divisor, math.ceil(width / size_divisor) * size_divisor
    )


def normalize(image_bgr: np.ndarray) -> torch.Tensor:
    """BGR uint8 ``(H, W, 3)`` → RGB, ``(x − mean) / std`` as float32 ``(3, H, W)``."""
    rgb = torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1])).permute(2, 0, 1).float()
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std_inv = 1.0 / torch.tensor(STD, dtype=torch.float64).view(3, 1, 1)
    return (rgb - mean) * std_inv.float()


def pad_to_multiple(x: torch.Tensor, divisor: int, value: float = 0.0) -> torch.Tensor:
    """Pad a ``(..., H, W)`` tensor bottom/right with ``value`` to multiples of ``divisor``."""
    height, width = x.shape[-2:]
    pad_h = math.ceil(height / divisor) * divisor - height
    pad_w = math.ceil(width / divisor) * divisor - width
    if pad_h == 0 and pad_w == 0:
        return x
    return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), value=value)
