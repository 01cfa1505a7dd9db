"""LRFormer model code: LRSA, the backbone, the LRHead decoder, the segmentor, the variant registry,
the checkpoint loader and ``create_model``."""

from .backbone import FeatureInfo, LRFormer
from .block import IRB, LRBlock
from .decode_head import DecodeHead
from .factory import create_model
from .lr_head import LRHead
from .lrsa import LRSA, HeadLRSA
from .registry import VARIANTS
from .reparameterize import reparameterize_model
from .segmentor import LRFormerSegmentor
from .weight_loading import CheckpointMismatchError, LoadReport, load_checkpoint
from .zoo import RELEASED, list_models

__all__ = [
    "CheckpointMismatchError", "DecodeHead", "FeatureInfo", "IRB", "LRBlock", "LoadReport", "LRFormer", "LRFormerSegmentor", "LRHead", "LRSA", "HeadLRSA",
    "RELEASED", "VARIANTS", "create_model", "list_models", "load_checkpoint", "reparameterize_model",
]  # fmt: skip
