"""Test-time pipeline settings: how an image is resized, padded, windowed and augmented at test time.

Shared by the predictor (which runs the pipeline) and the dataset descriptions (which carry each
dataset's official settings).

Design notes: ``docs/design.md``, section 6 (the test pipelines).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal, Mapping

from ..errors import ConfigError

MMSEG_TTA_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
"""mmsegmentation's multi-scale test ratios."""


@dataclass(frozen=True)
class InferenceConfig:
    """Test-time settings.

    Attributes:
        mode: ``whole`` (one pass on the resized image) or ``slide`` (windows).
        pipeline: ``align`` (LRFormer: ``AlignResize``, two bilinear resizes) or ``pad``
            (LRFormer+: one keep-ratio resize, zero padding to ``size_divisor`` after normalising).
        scale: ``(long, short)`` bound of the keep-ratio resize, e.g. ``(2048, 512)``.
        size_divisor: alignment / padding multiple.
        crop, stride: ``(h, w)`` window size and step of ``slide`` mode.
        tta_ratios: scale ratios (``(1.0,)``: no multi-scale). ``align``: ``scale`` is multiplied by each;
            ``pad``: the original image size is (mmseg 1.x's ``tta_pipeline``, no bound).
        flip: also run horizontally flipped inputs (merged by averaging softmax probabilities).
        max_attention_elements: above this attention size (entries per image) a whole-mode input
            is processed in windows along its long side instead (extreme aspect ratios).
    """

    mode: Literal["whole", "slide"] = "whole"
    pipeline: Literal["align", "pad"] = "align"
    scale: tuple[int, int] = (2048, 512)
    size_divisor: int = 32
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    tta_ratios: tuple[float, ...] = (1.0,)
    flip: bool = False
    max_attention_elements: int = 2**28

    def __post_init__(self) -> None:
        def ints(value, count=2) -> bool:
            return (
                isinstance(value, tuple)
                and len(value) == count
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            )

        if not (ints(self.scale) and ints(self.crop) and ints(self.stride) and ints((self.size_divisor,), 1)):
            raise ConfigError(
                f"scale, crop and stride need two integers each and size_divisor one, got scale {self.scale}, "
                f"crop {self.crop}, stride {self.stride}, size_divisor {self.size_divisor}"
            )
        if not isinstance(self.flip, bool) or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r <= 16 for r in self.tta_ratios
        ):
            raise ConfigError(f"flip must be true or false and tta_ratios numbers in (0, 16], got {self.flip!r}, "
                              f"{self.tta_ratios!r}")  # fmt: skip
        if len(self.scale) != 2 or min(self.scale) < 1 or not 1 <= self.size_divisor <= 1024:
            raise ConfigError(
                f"need a resize bound of two positive sizes and size_divisor in [1, 1024], got scale {self.scale}, "
                f"size_divisor {self.size_divisor}; e.g. --scale 2048 512"
            )
        if not self.tta_ratios or not isinstance(self.max_attention_elements, int) or self.max_attention_elements < 0:
            raise ConfigError(
                f"need tta_ratios > 0 and max_attention_elements >= 0, got {self.tta_ratios}, "
                f"{self.max_attention_elements}"
            )
        if self.mode not in ("whole", "slide"):
            raise ConfigError(f"mode must be 'whole' or 'slide', got {self.mode!r}")
        if self.pipeline not in ("align", "pad"):
            raise ConfigError(f"pipeline must be 'align' or 'pad', got {self.pipeline!r}")
        if min(self.crop) < 32 or min(self.stride) < 1 or any(s > c for s, c in zip(self.stride, self.crop)):
            raise ConfigError(
                f"need crop >= 32 and 1 <= stride <= crop (so windows cover every pixel), "
                f"got crop {self.crop}, stride {self.stride}"
            )

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any] | None, base: InferenceConfig | None = None) -> InferenceConfig:
        """Settings read from YAML, JSON or a checkpoint (lists where tuples belong) on top of ``base``
        (default: the defaults). An unknown key is a :class:`~lrformer.errors.ConfigError` naming the
        valid ones; values are checked as in the constructor."""
        settings = dict(settings or {})
        names = [f.name for f in fields(cls)]
        unknown = [key for key in settings if key not in names]
        if unknown:
            raise ConfigError(f"unknown test setting {unknown[0]!r}; the settings are: {', '.join(names)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
        try:
            return replace(base or cls(), **values)
        except TypeError as exc:  # e.g. a tuple where a number belongs
            raise ConfigError(f"test settings {settings}: {exc}") from None

    @property
    def is_tta(self) -> bool:
        return self.flip or tuple(self.tta_ratios) != (1.0,)
