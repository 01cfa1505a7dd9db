"""Mask2Former training losses for semantic segmentation (mmseg/mmdet ``Mask2FormerHead.loss``).

Each label map is turned into one binary mask per class present (:func:`semantic_targets`). For
every decoder layer (the prediction before the first layer included) the queries of each image
are Hungarian-matched to these masks (:func:`~.matcher.hungarian_match`) and three losses are
computed (mmdet ``Mask2FormerHead._loss_by_feat_single``):

* ``loss_cls``: weighted cross-entropy over ``num_classes + 1`` classes (matched queries: their
  mask's class, others: "no object" with weight ``no_object_weight``), × ``class_weight``;
* ``loss_mask``: binary cross-entropy of the matched masks, × ``mask_weight``;
* ``loss_dice``: naive dice loss (eps 1) of the matched masks, × ``dice_weight``;

the mask losses on ``num_points`` importance-sampled points per mask and divided by the number of
matched masks in the batch, where an image without any ground-truth mask counts as one (mmdet's
``max(num_pos, 1)`` per image), averaged over processes under ``torch.distributed``.

Design notes: ``docs/design.md``, section 9 (training semantics).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ...errors import LabelValueError
from .matcher import hungarian_match
from .point_sample import point_sample, uncertain_point_coords_with_randomness

_EPS = torch.finfo(torch.float32).eps  # mmdet ``weight_reduce_loss`` guard against a zero avg_factor


def semantic_targets(
    label: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class binary masks of a label map (mmseg ``Mask2FormerHead._seg_data_to_instance_data``).

    Args:
        label: ``(H, W)`` int64 class indices, ``ignore_index`` for unlabelled pixels.
        num_classes: number of semantic classes (labels must lie in ``[0, num_classes)``).
        ignore_index: label excluded from the targets; its pixels belong to no mask.

    Returns:
        ``(gt_labels (N,) int64, gt_masks (N, H, W) bool)``: one mask per class present, by
        increasing class index.
    """
    classes = torch.unique(label)
    classes = classes[classes != ignore_index]
    if classes.numel() and (classes[0] < 0 or classes[-1] >= num_classes):
        raise LabelValueError(
            f"labels must be in [0, {num_classes}) or {ignore_index}, got values {classes.tolist()}: fix the label "
            "maps, or the model's num_classes and the dataset's ignore_index"
        )
    return classes, label.unsqueeze(0) == classes.view(-1, 1, 1)


def dice_loss(mask_logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Naive dice loss per mask (mmdet ``DiceLoss(use_sigmoid=True, naive_dice=True)``, unreduced).

    Args:
        mask_logits: ``(M, P)`` logits (sigmoid applied here).
        targets: ``(M, P)`` targets in ``[0, 1]``.

    Returns:
        ``(M,)`` ``1 - (2 Σ p t + eps) / (Σ p + Σ t + eps)``.
    """
    probs, targets = mask_logits.flatten(1).sigmoid(), targets.flatten(1).float()
    numerator = 2 * (probs * targets).sum(1) + eps
    return 1 - numerator / (probs.sum(1) + targets.sum(1) + eps)


def classification_loss(
    cls_logits: torch.Tensor, target_classes: torch.Tensor, no_object_weight: float = 0.1
) -> torch.Tensor:
    """Class-weighted cross-entropy (mmdet ``CrossEntropyLoss`` with ``class_weight``, unscaled).

    Args:
        cls_logits: ``(..., C + 1)`` logits, the last class "no object".
        target_classes: ``(...)`` targets in ``[0, C]``.

    Returns:
        ``Σ w[y] · CE / (Σ w[y] + eps)`` with ``w = [1, …, 1, no_object_weight]``.
    """
    cls_logits, target_classes = cls_logits.flatten(0, -2).float(), target_classes.flatten()
    weight = cls_logits.new_ones(cls_logits.shape[-1])
    weight[-1] = no_object_weight
    loss = F.cross_entropy(cls_logits, target_classes, weight=weight, reduction="sum")
    return loss / (weight[target_classes].sum() + _EPS)


def _mean_over_processes(count: torch.Tensor) -> torch.Tensor:
    """mmdet ``reduce_mean``: the mean of ``count`` over the processes of the default group."""
    if dist.is_available() and dist.is_initialized():
        count = count.clone()
        dist.all_reduce(count.div_(dist.get_world_size()))
    return count


class Mask2FormerCriterion(nn.Module):
    """Mask2Former semantic-segmentation training loss (mmseg ADE20K/Cityscapes config defaults).

    Call with the head's per-layer outputs and the label maps (what ``Mask2FormerHead.loss`` does)::

        cls_preds, mask_preds = model.forward_head(model.forward_features(images))
        losses = criterion(cls_preds, mask_preds, labels)
        losses["loss"].backward()

    It holds no parameters or buffers: the head builds one per ``loss`` call, outside its state dict.

    Args:
        num_classes: semantic classes (the class logits have one more: "no object").
        class_weight: weight of the classification loss (and of its matching cost).
        mask_weight: weight of the mask binary cross-entropy (and of its matching cost).
        dice_weight: weight of the dice loss (and of its matching cost).
        no_object_weight: cross-entropy weight of the "no object" class.
        num_points: points per mask for matching and for the mask losses.
        oversample_ratio: candidate points per sampled point in importance sampling.
        importance_sample_ratio: share of the points chosen by uncertainty (the rest uniform).
        ignore_index: unlabelled pixels (in no target mask, so negatives for every mask).
    """

    def __init__(
        self,
        num_classes: int,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_weight, self.mask_weight, self.dice_weight = class_weight, mask_weight, dice_weight
        self.no_object_weight = no_object_weight
        self.num_points, self.oversample_ratio = num_points, oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, weights=(cls {self.class_weight}, mask {self.mask_weight}, "
            f"dice {self.dice_weight}), no_object_weight={self.no_object_weight}, num_points={self.num_points}"
        )

    def layer_losses(
        self,
        cls_pred: torch.Tensor,
        mask_pred: torch.Tensor,
        targets: Sequence[tuple[torch.Tensor, torch.Tensor]],
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weighted ``(loss_cls, loss_mask, loss_dice)`` of one decoder layer.

        Args:
            cls_pred: class logits ``(B, Q, C + 1)``.
            mask_pred: mask logits ``(B, Q, h, w)``.
            targets: per image ``(gt_labels (N,), gt_masks (N, H, W))`` from :func:`semantic_targets`.
            generator: optional generator for the random points.
        """
        target_classes = torch.full(cls_pred.shape[:2], self.num_classes, dtype=torch.long, device=cls_pred.device)
        matched_preds, matched_gts = [], []
        for b, (gt_labels, gt_masks) in enumerate(targets):
            query_idx, gt_idx = hungarian_match(
                cls_pred[b], mask_pred[b], gt_labels, gt_masks, self.num_points,
                self.class_weight, self.mask_weight, self.dice_weight, generator,
            )  # fmt: skip
            target_classes[b, query_idx] = gt_labels[gt_idx]
            matched_preds.append(mask_pred[b, query_idx])
            matched_gts.append(gt_masks[gt_idx])

        loss_cls = self.class_weight * classification_loss(cls_pred, target_classes, self.no_object_weight)

        mask_logits = torch.cat(matched_preds)  # (M, h, w), by image then query
        # mmdet's avg_factor: matched masks per image, an image without any counted as one
        per_image = sum(max(len(p), 1) for p in matched_preds)
        num_masks = _mean_over_processes(torch.tensor(float(per_image), device=cls_pred.device)).clamp(min=1)
        if mask_logits.shape[0] == 0:  # no ground truth in the batch: zero, still in the graph
            return loss_cls, mask_logits.sum(), mask_logits.sum()

        mask_logits = mask_logits.unsqueeze(1).float()
        points = uncertain_point_coords_with_randomness(
            mask_logits.detach(), self.num_points, self.oversample_ratio, self.importance_sample_ratio, generator
        )
        with torch.no_grad():  # ground truth at the input resolution, read at the same normalised points
            point_targets = point_sample(torch.cat(matched_gts).unsqueeze(1).float(), points)[:, 0]
        point_logits = point_sample(mask_logits, points)[:, 0]  # (M, num_points)

        loss_dice = self.dice_weight * dice_loss(point_logits, point_targets).sum() / (num_masks + _EPS)
        loss_mask = F.binary_cross_entropy_with_logits(point_logits, point_targets, reduction="sum")
        loss_mask = self.mask_weight * loss_mask / (num_masks * self.num_points + _EPS)
        return loss_cls, loss_mask, loss_dice

    def forward(
        self,
        cls_preds: Sequence[torch.Tensor],
        mask_preds: Sequence[torch.Tensor],
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses of every decoder layer.

        Args:
            cls_preds: per layer class logits ``(B, Q, C + 1)`` (``Mask2FormerHead.forward``).
            mask_preds: per layer mask logits ``(B, Q, h, w)`` (typically ``h, w = H/4, W/4``).
            labels: label maps ``(B, H, W)`` int64 at the input resolution, ``ignore_index`` unlabelled.
            generator: optional generator for the random points (reproducible losses).

        Returns:
            ``loss_cls``, ``loss_mask``, ``loss_dice`` of the last layer, ``d{i}.loss_*`` of the
            earlier ones (``d0`` the prediction before the first decoder layer), and ``loss``, their sum.
        """
        if len(cls_preds) != len(mask_preds):
            raise ValueError(f"{len(cls_preds)} class predictions but {len(mask_preds)} mask predictions")
        if any(c.dim() != 3 or m.dim() != 4 for c, m in zip(cls_preds, mask_preds)):
            raise ValueError("expected per-layer lists of (B, Q, C + 1) class and (B, Q, h, w) mask logits")
        labels = labels.to(mask_preds[-1].device)
        targets = [semantic_targets(label, self.num_classes, self.ignore_index) for label in labels]
        per_layer = [self.layer_losses(c, m, targets, generator) for c, m in zip(cls_preds, mask_preds)]
        prefixes = [""] + [f"d{i}." for i in range(len(per_layer) - 1)]  # last layer first, as mmdet
        losses: dict[str, torch.Tensor] = {}
        for prefix, values in zip(prefixes, per_layer[-1:] + per_layer[:-1]):
            for name, value in zip(("loss_cls", "loss_mask", "loss_dice"), values):
                losses[prefix + name] = value
        losses["loss"] = sum(losses.values())
        return losses
