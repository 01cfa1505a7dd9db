"""LRFormer model code: LRSA, the backbone, the LRHead decoder, the segmentor and the variant registry."""

from .backbone import LRFormer
from .block import IRB, LRBlock
from .lr_head import LRHead
from .lrsa import LRSA, HeadLRSA
from .reparameterize import reparameterize_model
from .segmentor import LRFormerSegmentor
from .variants import VARIANTS, create_model, list_models

__all__ = [
    "IRB", "LRBlock", "LRFormer", "LRFormerSegmentor", "LRHead", "LRSA", "HeadLRSA",
    "VARIANTS", "create_model", "list_models", "reparameterize_model",
]  # fmt: skip
