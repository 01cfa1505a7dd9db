"""Image operations shared by the data pipeline and the predictor: decoding and writing images,
the official resize / normalise / pad transforms, and the test-time pipeline settings."""

from .io import (
    IMAGE_SUFFIXES,
    ImageInput,
    ImageReadError,
    colorize,
    overlay,
    read_image,
    save_image,
    save_label_png,
    to_bgr,
)
from .pipeline import InferenceConfig

__all__ = [
    "IMAGE_SUFFIXES", "ImageInput", "ImageReadError", "InferenceConfig",
    "colorize", "overlay", "read_image", "save_image", "save_label_png", "to_bgr",
]  # fmt: skip
