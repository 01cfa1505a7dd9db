"""Mask2Former head in pure PyTorch (LRFormer+): pixel decoder, masked-attention decoder, matching and losses."""

from .head import Mask2FormerHead

__all__ = ["Mask2FormerHead"]
