"""Inference: the official test pipeline, the predictor, image I/O and overlays."""

from ..image import ImageReadError, InferenceConfig, colorize, overlay, read_image, save_image, save_label_png, to_bgr
from .loading import PreparedImages, PreparedItem
from .network import Network, TorchNetwork
from .predictor import MMSEG_TTA_RATIOS, Predictor, PreparedImage, prepare

__all__ = [
    "MMSEG_TTA_RATIOS", "ImageReadError", "InferenceConfig", "Network", "PreparedImage", "PreparedImages",
    "PreparedItem", "Predictor", "TorchNetwork", "colorize", "overlay", "prepare", "read_image", "save_image",
    "save_label_png", "to_bgr",
]  # fmt: skip
