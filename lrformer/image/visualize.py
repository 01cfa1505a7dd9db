"""Pictures of label maps: palette colours, overlays, side-by-side panels and class legends.

Pictures are composed in horizontal bands of about a million pixels, so drawing one costs the
picture's own bytes plus a few MB of scratch (and nothing more when an overlay is drawn into the
image itself): blending a 12000×12000 image in float32 at once would take several GB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ConfigError, InputError

BAND_PIXELS = 1 << 20
"""Pixels per band when a picture is composed."""


def _bands(height: int, width: int) -> Iterator[slice]:
    """Row slices of about :data:`BAND_PIXELS` pixels covering ``height`` rows of ``width`` pixels."""
    step = max(1, BAND_PIXELS // max(width, 1))
    for start in range(0, height, step):
        yield slice(start, min(start + step, height))


def _lut(palette: np.ndarray, top: int) -> np.ndarray:
    """``(max(top + 1, len(palette)), 3)`` uint8 colours; labels beyond the palette are black."""
    lut = np.zeros((max(top + 1, len(palette)), 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    return lut


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Label map ``(H, W)`` → RGB image ``(H, W, 3)`` uint8 (labels beyond the palette are black)."""
    return _lut(np.asarray(palette), int(label.max(initial=0)))[label]


def _blend(image: np.ndarray, color: np.ndarray, opacity: float) -> np.ndarray:
    """``image·(1−a) + color·a`` rounded to uint8; both ``(h, W, 3)`` uint8."""
    blended = image.astype(np.float32) * (1.0 - opacity) + color.astype(np.float32) * opacity
    return blended.round().clip(0, 255).astype(np.uint8)


def class_pixels(label: np.ndarray, minlength: int = 0) -> np.ndarray:
    """Pixels per label value, ``(max(minlength, label.max() + 1),)`` int64, counted band by band
    (``np.bincount`` of a whole 144-megapixel map would first widen it to 1.2 GB of int64)."""
    flat = label.reshape(-1)
    counts = np.zeros(max(minlength, int(label.max(initial=0)) + 1), dtype=np.int64)
    for start in range(0, flat.size, BAND_PIXELS):
        counts += np.bincount(flat[start : start + BAND_PIXELS], minlength=len(counts))
    return counts


def class_name(names: Sequence[str] | None, index: int) -> str:
    """``names[index]`` (stripped), or ``class N`` beyond the names."""
    return str(names[index]).strip() if names is not None and index < len(names) else f"class {index}"


def class_table(label: np.ndarray, names: Sequence[str] | None = None) -> list[dict]:
    """The classes present in ``label``, most pixels first: ``{"id", "name", "pixels", "fraction"}``."""
    return class_rows(class_pixels(label), names)


def class_rows(counts: np.ndarray, names: Sequence[str] | None = None) -> list[dict]:
    """:func:`class_table` of pixel counts per class ``(K,)`` (e.g. summed over a video's frames)."""
    total = max(int(counts.sum()), 1)
    present = sorted(np.flatnonzero(counts).tolist(), key=lambda i: (-counts[i], i))
    return [
        {"id": i, "name": class_name(names, i), "pixels": int(counts[i]), "fraction": round(counts[i] / total, 6)}
        for i in present
    ]


@dataclass(frozen=True)
class LegendEntry:
    """One legend row: a class, its colour (RGB) and its predicted share of the pixels."""

    index: int
    name: str
    color: tuple[int, int, int]
    fraction: float

    @property
    def text(self) -> str:
        return f"{self.name} {100 * self.fraction:.1f}%"


def legend_entries(
    label: np.ndarray,
    palette: np.ndarray,
    names: Sequence[str] | None = None,
    ground_truth: np.ndarray | None = None,
    ignore_index: int = 255,
) -> list[LegendEntry]:
    """The classes present in ``label`` (most pixels first), then those only in ``ground_truth``."""
    rows = class_table(label, names)
    if ground_truth is not None:
        seen = {row["id"] for row in rows}
        only_truth = [i for i in np.flatnonzero(class_pixels(ground_truth)).tolist() if i not in seen]
        rows += [{"id": i, "name": class_name(names, i), "fraction": 0.0} for i in only_truth if i != ignore_index]
    lut = _lut(np.asarray(palette), max([r["id"] for r in rows], default=0))
    return [LegendEntry(r["id"], r["name"], tuple(int(c) for c in lut[r["id"]]), r["fraction"]) for r in rows]


@dataclass(frozen=True)
class LegendLayout:
    """Where :func:`draw_legend` puts things: ``swatches[k]`` is entry ``k``'s colour square
    ``(x0, y0, x1, y1)`` (exclusive ends) and ``texts[k]`` the top-left of its text."""

    width: int
    height: int  # the rows' height, at most the picture's
    font_size: int
    swatches: list[tuple[int, int, int, int]]
    texts: list[tuple[int, int]]


def font_for(height: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at a size readable next to an ``height``-pixel picture (12 to 64 px)."""
    return ImageFont.load_default(size=legend_font_size(height))


def legend_font_size(height: int) -> int:
    """Font size of a legend beside a picture ``height`` pixels tall: ``clamp(height / 40, 12, 64)``."""
    return int(min(64, max(12, height // 40)))


def legend_layout(entries: Sequence[LegendEntry], height: int) -> LegendLayout:
    """Rows of ``swatch  name  percent`` top to bottom, in as many columns as a picture ``height``
    pixels tall needs; the legend is as tall as its first column."""
    size = legend_font_size(height)
    font = font_for(height)
    margin, row = size // 2, size + size // 2
    per_column = max(1, (height - 2 * margin) // row)
    swatches, texts = [], []
    x = 0
    for start in range(0, len(entries), per_column):
        column = entries[start : start + per_column]
        text_width = max(int(font.getlength(e.text)) for e in column)
        for k in range(len(column)):
            top = margin + k * row
            swatches.append((x + margin, top + (row - size) // 2, x + margin + size, top + (row - size) // 2 + size))
            texts.append((x + 2 * margin + size, top + (row - size) // 2))
        x += 3 * margin + size + text_width
    rows = min(per_column, len(entries))
    return LegendLayout(max(x + margin, 1), min(height, 2 * margin + rows * row), size, swatches, texts)


def draw_legend(entries: Sequence[LegendEntry], height: int) -> np.ndarray:
    """A legend for a picture ``height`` pixels tall: ``(h, width, 3)`` uint8 RGB (``h <= height``),
    white with a colour square and ``name percent`` per entry (see :func:`legend_layout`)."""
    layout = legend_layout(entries, height)
    canvas = Image.new("RGB", (layout.width, layout.height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = font_for(height)
    for entry, swatch, origin in zip(entries, layout.swatches, layout.texts):
        draw.rectangle((swatch[0], swatch[1], swatch[2] - 1, swatch[3] - 1), fill=entry.color)
        draw.text(origin, entry.text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _legend(label, palette, names, height: int, ground_truth=None, ignore_index: int = 255) -> np.ndarray:
    """The legend of ``label`` (and ``ground_truth``) for a picture ``height`` tall, BGR."""
    return draw_legend(legend_entries(label, palette, names, ground_truth, ignore_index), height)[:, :, ::-1]


LEGEND_MAX_COVER = 1 / 3
"""An overlay's legend is left out when it would cover more than this share of the image (or not
fit in it); a panel always has room for it."""


def _check_shapes(label: np.ndarray, **others: np.ndarray | None) -> None:
    for name, other in others.items():
        if other is not None and other.shape[:2] != label.shape:
            raise InputError(f"the {name.replace('_', ' ')} is {other.shape[:2]} but the label map {label.shape}")


def overlay(
    image_bgr: np.ndarray,
    label: np.ndarray,
    palette: np.ndarray,
    opacity: float = 0.5,
    names: Sequence[str] | None = None,
    legend: bool = False,
    inplace: bool = False,
) -> np.ndarray:
    """Blend the palette colours of ``label`` over the image, ``image·(1−a) + colour·a``, band by band.

    Args:
        image_bgr: the image ``(H, W, 3)`` uint8 BGR.
        label: the label map ``(H, W)``.
        palette: ``(K, 3)`` RGB colour per class; labels beyond it are black.
        opacity: the colours' weight ``a`` in [0, 1].
        names: class names for the legend (default ``class N``).
        legend: draw a legend of the classes present (:func:`draw_legend`) in the top-left corner,
            unless it would cover more than :data:`LEGEND_MAX_COVER` of the image or not fit.
        inplace: write into ``image_bgr`` instead of a new array (no memory beyond a band).

    Returns:
        ``(H, W, 3)`` uint8 BGR (``image_bgr`` itself with ``inplace``).
    """
    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"opacity must be in [0, 1], got {opacity}")
    _check_shapes(label, image=image_bgr)
    height, width = label.shape
    lut = _lut(np.asarray(palette), int(label.max(initial=0)))[:, ::-1]  # BGR
    canvas = image_bgr if inplace else np.empty_like(image_bgr)
    for rows in _bands(height, width):
        canvas[rows] = _blend(image_bgr[rows], lut[label[rows]], opacity)
    if legend:
        key = _legend(label, palette, names, height)
        if key.shape[1] <= width and key.shape[0] * key.shape[1] <= LEGEND_MAX_COVER * height * width:
            canvas[: key.shape[0], : key.shape[1]] = key
    return canvas


def panel(
    image_bgr: np.ndarray,
    label: np.ndarray,
    palette: np.ndarray,
    names: Sequence[str] | None = None,
    ground_truth: np.ndarray | None = None,
    legend: bool = True,
    ignore_index: int = 255,
) -> np.ndarray:
    """``image | prediction [| ground truth] [| legend]`` side by side, composed band by band.

    ``image_bgr`` ``(H, W, 3)`` uint8 BGR, ``label`` and ``ground_truth`` ``(H, W)`` → ``(H,
    W·tiles + legend width, 3)`` BGR. Ground-truth pixels equal to ``ignore_index`` are black, as
    are labels beyond the palette. The legend lists the predicted classes, then those only in the
    ground truth.
    """
    _check_shapes(label, image=image_bgr, ground_truth=ground_truth)
    height, width = label.shape
    top = max(int(label.max(initial=0)), int(ground_truth.max(initial=0)) if ground_truth is not None else 0)
    lut = _lut(np.asarray(palette), top)[:, ::-1]  # BGR
    if legend:
        key = _legend(label, palette, names, height, ground_truth, ignore_index)
    else:
        key = np.zeros((height, 0, 3), np.uint8)
    maps = [label] if ground_truth is None else [label, ground_truth]
    canvas = np.full((height, width * (1 + len(maps)) + key.shape[1], 3), 255, dtype=np.uint8)
    for rows in _bands(height, width):
        canvas[rows, :width] = image_bgr[rows]
        for i, labels in enumerate(maps, start=1):
            tile = canvas[rows, i * width : (i + 1) * width]
            tile[:] = lut[labels[rows]]
            if labels is ground_truth:
                tile[labels[rows] == ignore_index] = 0
    canvas[: key.shape[0], width * (1 + len(maps)) :] = key
    return canvas
