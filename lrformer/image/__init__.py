"""Image operations shared by the data pipeline and the predictor: decoding and writing images
and videos, the official resize / normalise / pad transforms, the test-time pipeline settings, and
pictures of predictions (overlays, panels, legends).

The names below load their module (and OpenCV, numpy) at first use: importing
:mod:`lrformer.image.pipeline` alone stays light.
"""

from typing import TYPE_CHECKING

from .._lazy import attach

_EXPORTS = {
    **dict.fromkeys(("IMAGE_SUFFIXES", "INPUT_FORMATS", "ImageInput", "ImageReadError", "read_image", "save_image",
                     "save_label_png", "to_bgr"), ".io"),
    "InferenceConfig": ".pipeline",
    **dict.fromkeys(("VIDEO_SUFFIXES", "VideoInfo", "VideoReader", "video_writer"), ".video"),
    **dict.fromkeys(("class_table", "colorize", "draw_legend", "legend_entries", "overlay", "panel"), ".visualize"),
}  # fmt: skip

__all__ = [
    "IMAGE_SUFFIXES", "INPUT_FORMATS", "VIDEO_SUFFIXES", "ImageInput", "ImageReadError", "InferenceConfig",
    "VideoInfo", "VideoReader", "class_table", "colorize", "draw_legend", "legend_entries", "overlay", "panel",
    "read_image", "save_image", "save_label_png", "to_bgr", "video_writer",
]  # fmt: skip

__getattr__, __dir__ = attach(__name__, _EXPORTS, ("io", "pipeline", "transforms", "video", "visualize"))

if TYPE_CHECKING:
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
