"""Training objectives: the module DDP wraps, mapping (images, labels) to the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy of stride-8 logits resized (bilinear) to the labels, averaged over **all**
    pixels (ignored ones add 0 but count: mmseg's ``avg_non_ignore=False``)."""
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none").mean()


class TrainingObjective(nn.Module):
    """``objective(images, labels)`` → ``(loss, terms)`` for a segmentor.

    LRHead models: :func:`segmentation_loss`. LRFormer+ models: the Mask2Former criterion
    (Hungarian matching, class/mask/dice losses on every decoder layer).
    """

    def __init__(self, model: nn.Module, ignore_index: int = 255) -> None:
        super().__init__()
        self.model = model
        self.ignore_index = ignore_index
        self.criterion = None
        if hasattr(model.decode_head, "transformer_decoder"):
            from ..models.mask2former.criterion import Mask2FormerCriterion

            self.criterion = Mask2FormerCriterion(model.decode_head.num_classes, ignore_index=ignore_index)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.criterion is None:
            loss = segmentation_loss(self.model(images), labels, self.ignore_index)
            return loss, {"loss_ce": loss.detach()}
        cls_preds, mask_preds = self.model.decode_head(self.model.backbone(images))
        terms = self.criterion([c.float() for c in cls_preds], [m.float() for m in mask_preds], labels)
        loss = terms.pop("loss")
        return loss, {k: v.detach() for k, v in terms.items()}
