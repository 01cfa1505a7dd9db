"""The decode-head contract: what a segmentor, the predictor, the trainer and export may ask of a head.

Both heads implement it: :class:`~lrformer.models.lr_head.LRHead` (LRFormer-T/S/B/L) and
:class:`~lrformer.models.mask2former.Mask2FormerHead` (LRFormer+). ``features`` is always the four
backbone features ``[(B, C_i, ⌈H/s⌉, ⌈W/s⌉)]`` for the strides ``s = 4, 8, 16, 32`` of a
``(B, 3, H, W)`` input.

Design notes: ``docs/design.md``, section 4 (decode heads).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
from torch import nn


class DecodeHead(nn.Module, ABC):
    """A segmentation head on the four backbone features.

    * :meth:`forward` ``(features)`` → the head's raw output, what :meth:`loss` takes (LRHead: the
      stride-8 logits; Mask2Former: the per-layer class and mask logits);
    * :meth:`predict` ``(features, size)`` → fp32 class scores ``(B, num_classes, *size)``, whose
      ``argmax(1)`` is the label map (what mmseg's ``EncoderDecoder.encode_decode`` returns);
    * :meth:`loss` ``(output, labels)`` → the training loss under ``"loss"`` and its terms;
    * :meth:`attention_elements` and :meth:`set_grad_checkpointing` for the memory guards.

    Attributes:
        num_classes: semantic classes of the scores (the ``C`` of :meth:`predict`).
    """

    num_classes: int

    @abstractmethod
    def forward(self, features: Sequence[torch.Tensor]) -> Any:
        """Four backbone features → the head's raw output (the input of :meth:`loss`)."""

    @abstractmethod
    def predict(self, features: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Four backbone features → float32 class scores ``(B, num_classes, *size)``."""

    @abstractmethod
    def loss(self, output: Any, labels: torch.Tensor, ignore_index: int = 255) -> dict[str, torch.Tensor]:
        """Training loss of :meth:`forward`'s ``output`` against label maps ``(B, H, W)`` int64 at the
        input size (``ignore_index``: unlabelled). Returns the total under ``"loss"`` (the one to
        back-propagate) and its named terms (e.g. ``"loss_ce"``), each a scalar."""

    def criterion(self, ignore_index: int = 255) -> nn.Module | None:
        """The module :meth:`loss` computes with, for inspecting its weights and settings; ``None``
        where the loss is a plain function (LRHead's cross-entropy)."""
        return None

    def attention_elements(self, height: int, width: int) -> int:
        """Largest attention matrix (entries per image) the head builds when the stride-8 feature is
        ``height × width``; 0 when it builds none."""
        return 0

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the head's heavy blocks in training (timm's API); a head
        without any leaves it off. See :mod:`lrformer.models.activation_checkpointing`."""
