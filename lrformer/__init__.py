"""LRFormer: Low-Resolution Self-Attention for Semantic Segmentation, in pure PyTorch.

The public names are loaded at first use (``import lrformer`` itself imports neither PyTorch nor
OpenCV); ``from lrformer import create_model`` and ``lrformer.create_model`` work as usual.
"""

from typing import TYPE_CHECKING

from ._lazy import attach

__version__ = "0.1.0"

_EXPORTS = {
    "CheckpointMismatchError": ".errors", "LRFormerError": ".errors",
    "MacCount": ".flops", "count_macs": ".flops", "FlopCount": ".flops", "count_flops": ".flops",
    "InferenceConfig": ".image.pipeline", "Predictor": ".inference",
    "FeatureInfo": ".models", "LRFormer": ".models", "LRFormerSegmentor": ".models", "create_model": ".models",
    "list_models": ".models", "load_checkpoint": ".models", "reparameterize_model": ".models",
    "load_network": ".deploy",
}  # fmt: skip
_SUBMODULES = ("benchmarking", "cli", "data", "deploy", "devices", "engine", "errors", "evaluation", "export", "files",
               "flops", "image", "inference", "models", "serving", "utils")  # fmt: skip

__all__ = [
    "CheckpointMismatchError", "FeatureInfo", "FlopCount", "InferenceConfig", "LRFormer", "LRFormerError",
    "LRFormerSegmentor", "MacCount", "Predictor", "count_flops", "count_macs", "create_model", "list_models",
    "load_checkpoint", "load_network", "reparameterize_model", "__version__",
]  # fmt: skip

__getattr__, __dir__ = attach(__name__, _EXPORTS, _SUBMODULES)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, the names above load on first use
    from .deploy import load_network
    from .errors import CheckpointMismatchError, LRFormerError
    from .flops import FlopCount, MacCount, count_flops, count_macs
    from .image.pipeline import InferenceConfig
    from .inference import Predictor
    from .models import (
        FeatureInfo,
        LRFormer,
        LRFormerSegmentor,
        create_model,
        list_models,
        load_checkpoint,
        reparameterize_model,
    )
