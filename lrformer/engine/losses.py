"""The training objective: the module DDP wraps, mapping (images, labels) to the loss.

The losses themselves live beside their heads (``DecodeHead.loss``): LRHead's cross-entropy in
:mod:`lrformer.models.lr_head`, the Mask2Former criterion in :mod:`lrformer.models.mask2former`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.lr_head import segmentation_loss
from ..models.segmentor import LRFormerSegmentor

__all__ = ["TrainingObjective", "segmentation_loss"]  # segmentation_loss: kept importable from here


class TrainingObjective(nn.Module):
    """``objective(images, labels)`` → ``(loss, terms)`` for a segmentor, through the head contract:
    ``model.decode_head.loss(model.forward_head(model.forward_features(images)), labels)``.

    LRHead models: ``loss_ce``, the cross-entropy of the stride-8 logits resized to the labels.
    LRFormer+ models: the Mask2Former criterion (Hungarian matching, class/mask/dice losses on every
    decoder layer) on float32 predictions.

    Args:
        model: a segmentor with a decode head.
        ignore_index: label of unlabelled pixels.

    ``forward(images (B, 3, H, W), labels (B, H, W) int64)`` returns the loss to back-propagate and
    its terms, detached (``loss`` itself left out).
    """

    def __init__(self, model: LRFormerSegmentor, ignore_index: int = 255) -> None:
        super().__init__()
        self.model = model
        self.ignore_index = ignore_index

    @property
    def criterion(self) -> nn.Module | None:
        """The head's loss module (the Mask2Former criterion with its weights), or ``None`` for LRHead."""
        return self.model.decode_head.criterion(self.ignore_index)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        output = self.model.forward_head(self.model.forward_features(images))
        terms = self.model.decode_head.loss(output, labels, self.ignore_index)
        loss = terms.pop("loss")
        return loss, {name: value.detach() for name, value in terms.items()}
