"""The LRFormer segmentor: backbone + decode head, in the released ``EncoderDecoder`` layout."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .backbone import LRFormer


class LRFormerSegmentor(nn.Module):
    """``backbone`` (LRFormer) followed by ``decode_head`` (e.g. LRHead).

    Its state dict carries ``backbone.*`` and ``decode_head.*`` keys exactly as the released
    checkpoints. Without a decode head (LRFormer-XL before its Mask2Former head, or a feature
    extractor) the forward pass returns the backbone features.

    Attributes:
        config: the resolved construction arguments (variant name and hyper-parameters).
        grad_checkpointing: whether activation checkpointing is on (:meth:`set_grad_checkpointing`).
    """

    def __init__(self, backbone: LRFormer, decode_head: nn.Module | None, config: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.config = dict(config or {})
        self.grad_checkpointing = False

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in training (timm's API), for less memory at the cost of one more
        forward pass per step: every backbone block, and in the decode head the LRHead fuse blocks or
        the Mask2Former pixel decoder's encoder layers. Gradients, stochastic-depth masks and BatchNorm
        statistics equal those without it; eval mode and ``torch.no_grad`` are unaffected. See
        :mod:`lrformer.models.grad_checkpoint`."""
        self.grad_checkpointing = enable
        self.backbone.set_grad_checkpointing(enable)
        if hasattr(self.decode_head, "set_grad_checkpointing"):
            self.decode_head.set_grad_checkpointing(enable)

    @property
    def num_classes(self) -> int | None:
        return None if self.decode_head is None else self.decode_head.num_classes

    def attention_elements(self, height: int, width: int) -> int:
        """Largest attention matrix (entries per image) the model builds for an ``H×W`` input.

        LRSA grids keep the aspect ratio, so this grows with the square of the aspect ratio.
        """
        elements = self.backbone.attention_elements(height, width)
        if hasattr(self.decode_head, "attention_elements"):
            stride8 = self.backbone.feature_sizes(height, width)[1]
            elements = max(elements, self.decode_head.attention_elements(*stride8))
        return elements

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``(B, 3, H, W)`` normalised images → segmentation scores.

        LRFormer-T/S/B/L: LRHead logits ``(B, num_classes, ⌈H/8⌉, ⌈W/8⌉)``. LRFormer+: semantic
        class scores at the input size ``(B, num_classes, H, W)``. Without a decode head: the four
        backbone features.
        """
        features = self.backbone(x)
        if self.decode_head is None:
            return features
        return self.decode_head.predict(features, x.shape[-2:])

    def extra_repr(self) -> str:
        return f"variant={self.config.get('name')!r}" if self.config.get("name") else ""
