"""The datasets' class names and palettes, at their former place (they live in :mod:`lrformer.palettes`,
below the models, so that a released model can name its classes)."""

from ..palettes import (  # noqa: F401
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    COCO_STUFF_CLASSES,
    COCO_STUFF_PALETTE,
    DATASETS,
    get_classes,
    get_palette,
    random_palette,
)
