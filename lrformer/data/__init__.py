"""Datasets: their descriptions (classes, palettes, folders, official test settings), reading
images and label maps, the training augmentations, and converting official label files."""

from ..palettes import get_classes, get_palette
from .datasets import BUILTIN, DatasetSpec, LabelValueError, SegmentationDataset, load_spec, read_label

__all__ = [
    "BUILTIN", "DatasetSpec", "LabelValueError", "SegmentationDataset",
    "get_classes", "get_palette", "load_spec", "read_label",
]  # fmt: skip
