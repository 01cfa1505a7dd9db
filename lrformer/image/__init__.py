"""Image operations shared by the data pipeline and the predictor: decoding and writing images
and videos, the official resize / normalise / pad transforms, the test-time pipeline settings, and
pictures of predictions (overlays, panels, legends)."""

from .io import (
    IMAGE_SUFFIXES,
    INPUT_FORMATS,
    ImageInput,
    ImageReadError,
    read_image,
    save_image,
    save_label_png,
    to_bgr,
)
from .pipeline import InferenceConfig
from .video import VIDEO_SUFFIXES, VideoInfo, VideoReader, video_writer
from .visualize import class_table, colorize, draw_legend, legend_entries, overlay, panel

__all__ = [
    "IMAGE_SUFFIXES", "INPUT_FORMATS", "VIDEO_SUFFIXES", "ImageInput", "ImageReadError", "InferenceConfig",
    "VideoInfo", "VideoReader", "class_table", "colorize", "draw_legend", "legend_entries", "overlay", "panel",
    "read_image", "save_image", "save_label_png", "to_bgr", "video_writer",
]  # fmt: skip
