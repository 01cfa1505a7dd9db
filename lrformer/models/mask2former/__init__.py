"""Mask2Former head in pure PyTorch (LRFormer+): pixel decoder, masked-attention decoder, matching and losses."""

from .criterion import Mask2FormerCriterion, semantic_targets
from .head import Mask2FormerHead, Mask2FormerOutput
from .matcher import hungarian_match

__all__ = ["Mask2FormerCriterion", "Mask2FormerHead", "Mask2FormerOutput", "hungarian_match", "semantic_targets"]
