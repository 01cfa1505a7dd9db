"""The LRFormer segmentor: backbone + decode head, in the released ``EncoderDecoder`` layout."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .backbone import LRFormer
from .decode_head import DecodeHead


class LRFormerSegmentor(nn.Module):
    """``backbone`` (LRFormer) followed by ``decode_head`` (a :class:`~.decode_head.DecodeHead`:
    LRHead, or the Mask2Former head of LRFormer+).

    ``model(x)`` has one meaning for every variant: class scores at the input size, ``(B, 3, H, W)``
    → ``(B, num_classes, H, W)`` float32, so ``model(x).argmax(1)`` is the label map (what mmseg's
    ``EncoderDecoder.encode_decode`` returns). The two halves are :meth:`forward_features` (the four
    backbone features) and :meth:`forward_head` (the head's raw output, what its ``loss`` takes).

    Its state dict carries ``backbone.*`` and ``decode_head.*`` keys exactly as the released
    checkpoints. ``decode_head`` is None for LRFormer-XL built alone (released as a backbone, before
    its Mask2Former head); such a model only gives :meth:`forward_features`.

    Attributes:
        config: the resolved construction arguments (variant name and hyper-parameters).
        grad_checkpointing: whether activation checkpointing is on (:meth:`set_grad_checkpointing`).
    """

    def __init__(self, backbone: LRFormer, decode_head: DecodeHead | None, config: dict[str, Any] | None = None):
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
        :mod:`lrformer.models.activation_checkpointing`."""
        self.grad_checkpointing = enable
        self.backbone.set_grad_checkpointing(enable)
        if self.decode_head is not None:
            self.decode_head.set_grad_checkpointing(enable)

    @property
    def num_classes(self) -> int | None:
        return None if self.decode_head is None else self.decode_head.num_classes

    def attention_elements(self, height: int, width: int) -> int:
        """Largest attention matrix (entries per image) the model builds for an ``H×W`` input.

        LRSA grids keep the aspect ratio, so this grows with the square of the aspect ratio.
        """
        elements = self.backbone.attention_elements(height, width)
        if self.decode_head is not None:
            stride8 = self.backbone.feature_sizes(height, width)[1]
            elements = max(elements, self.decode_head.attention_elements(*stride8))
        return elements

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` normalised images → the four backbone features ``(B, C_i, ⌈H/s⌉, ⌈W/s⌉)``,
        ``s = 4, 8, 16, 32`` (timm's name)."""
        return self.backbone(x)

    def forward_head(self, features: Sequence[torch.Tensor]) -> Any:
        """The four backbone features → the decode head's raw output: LRHead logits
        ``(B, num_classes, ⌈H/8⌉, ⌈W/8⌉)``, or LRFormer+'s per-layer class and mask logits
        (:class:`~.mask2former.head.Mask2FormerOutput`). What ``decode_head.loss`` takes."""
        return self._head()(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images → float32 class scores ``(B, num_classes, H, W)`` at the
        input size (``decode_head.predict``): LRHead logits resized bilinearly, LRFormer+ summed
        class probabilities. ``argmax(1)`` gives the label map."""
        return self._head().predict(self.forward_features(x), x.shape[-2:])

    def _head(self) -> DecodeHead:
        if self.decode_head is None:
            raise ConfigError(
                f"{self.config.get('name', 'this model')} has no decode head, so it gives no class scores: take its "
                "features with model.forward_features(x), or create it with features_only=True"
            )
        return self.decode_head

    def extra_repr(self) -> str:
        return f"variant={self.config.get('name')!r}" if self.config.get("name") else ""
