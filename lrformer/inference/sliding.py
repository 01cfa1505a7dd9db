"""Sliding-window arithmetic (mmsegmentation ``slide_inference``) and the large-attention guard.

Design notes: ``docs/design.md``, section 6 (the test pipelines).
"""

from __future__ import annotations

from typing import Callable

import torch


def window_starts(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``(start, end)`` along one axis: ``y1 = i·stride``, ``y2 = min(y1 + crop, size)``,
    ``y1 = max(y2 − crop, 0)``, for ``i`` in ``range(max(size − crop + stride − 1, 0) // stride + 1)``."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    windows = []
    for i in range(count):
        end = min(i * stride + crop, size)
        windows.append((max(end - crop, 0), end))
    return windows


def slide(
    x: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    crop: tuple[int, int],
    stride: tuple[int, int],
    batch_size: int = 1,
) -> torch.Tensor:
    """Sliding-window scores of ``x`` ``(B, 3, H, W)`` → ``(B, C, H, W)``.

    ``forward`` maps a window batch ``(N, 3, h, w)`` to scores at the window size ``(N, C, h, w)``.
    Window scores are summed and divided by the per-pixel window count. Windows of one image are
    run ``batch_size`` at a time.
    """
    height, width = x.shape[-2:]
    boxes = [
        (y1, y2, x1, x2)
        for y1, y2 in window_starts(height, crop[0], stride[0])
        for x1, x2 in window_starts(width, crop[1], stride[1])
    ]
    scores = None
    count = x.new_zeros((1, 1, height, width))
    for b in range(x.shape[0]):
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            crops = [x[b, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk]
            if len({c.shape for c in crops}) == 1:
                outs = list(forward(torch.stack(crops)))
            else:  # windows clipped by a small image have different shapes
                outs = [forward(c[None])[0] for c in crops]
            if scores is None:
                scores = x.new_zeros((x.shape[0], outs[0].shape[0], height, width))
            for (y1, y2, x1, x2), out in zip(chunk, outs):
                scores[b, :, y1:y2, x1:x2] += out
                if b == 0:
                    count[..., y1:y2, x1:x2] += 1
    return scores / count


def long_side_windows(
    height: int, width: int, attention_elements: Callable[[int, int], int], budget: int
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Windows along the long side when the whole input's attention exceeds ``budget`` elements.

    Returns ``(crop, stride)`` (``(h, w)`` each) or ``None`` when the whole input fits (or the
    budget is 0: no fallback). The window
    keeps the full short side and the largest power-of-two aspect ratio (up to 8) that fits; when
    not even a square window fits, square windows are used anyway (the smallest this can do).
    """
    if budget <= 0 or attention_elements(height, width) <= budget:
        return None
    short, long_ = min(height, width), max(height, width)
    aspect = 8
    while aspect > 1 and attention_elements(*_oriented(short, aspect * short, height >= width)) > budget:
        aspect //= 2
    window = min(long_, aspect * short)
    stride = max(window - short // 2, 1)
    crop = _oriented(short, window, height >= width)
    strides = _oriented(short, stride, height >= width)
    return crop, strides


def _oriented(short: int, long_: int, portrait: bool) -> tuple[int, int]:
    return (long_, short) if portrait else (short, long_)
