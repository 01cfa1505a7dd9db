"""LRFormer: Low-Resolution Self-Attention for Semantic Segmentation, in pure PyTorch."""

from .flops import FlopCount, count_flops
from .inference import InferenceConfig, Predictor
from .models import (
    CheckpointMismatchError,
    FeatureInfo,
    LRFormer,
    LRFormerSegmentor,
    create_model,
    list_models,
    load_checkpoint,
    reparameterize_model,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointMismatchError", "FeatureInfo", "FlopCount", "InferenceConfig", "LRFormer", "LRFormerSegmentor", "Predictor",
    "count_flops", "create_model", "list_models", "load_checkpoint", "reparameterize_model", "__version__",
]  # fmt: skip
