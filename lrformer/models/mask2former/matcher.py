"""Hungarian matching of Mask2Former queries to ground-truth masks (mmdet ``HungarianAssigner``).

The cost is that of the official Mask2Former configs::

    2.0 * ClassificationCost + 5.0 * CrossEntropyLossCost(use_sigmoid=True) + 5.0 * DiceCost(pred_act=True, eps=1.0)

evaluated on ``num_points`` points drawn uniformly at random, the same points for all predicted and
ground-truth masks of one image (mmdet ``Mask2FormerHead._get_targets_single``).

Design notes: ``docs/design.md``, section 9 (training semantics).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...utils import require_extra
from .point_sample import point_sample, random_points


def classification_cost(cls_pred: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
    """``-softmax(cls_pred)[:, gt_labels]``: ``(Q, C + 1)``, ``(N,)`` → ``(Q, N)``."""
    return -cls_pred.float().softmax(-1)[:, gt_labels]


def mask_bce_cost(mask_logits: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target: ``(Q, P)``, ``(N, P)`` → ``(Q, N)``."""
    mask_logits, gt_masks = mask_logits.flatten(1).float(), gt_masks.flatten(1).float()
    pos = F.binary_cross_entropy_with_logits(mask_logits, torch.ones_like(mask_logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(mask_logits, torch.zeros_like(mask_logits), reduction="none")
    cost = torch.einsum("qp,np->qn", pos, gt_masks) + torch.einsum("qp,np->qn", neg, 1 - gt_masks)
    return cost / mask_logits.shape[1]


def mask_dice_cost(mask_logits: torch.Tensor, gt_masks: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Naive dice loss (sigmoid of the logits) of every pair: ``(Q, P)``, ``(N, P)`` → ``(Q, N)``."""
    probs, gt_masks = mask_logits.flatten(1).float().sigmoid(), gt_masks.flatten(1).float()
    numerator = 2 * torch.einsum("qp,np->qn", probs, gt_masks)
    denominator = probs.sum(-1)[:, None] + gt_masks.sum(-1)[None, :]
    return 1 - (numerator + eps) / (denominator + eps)


def match_cost(
    cls_pred: torch.Tensor,
    mask_point_logits: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_point_masks: torch.Tensor,
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
) -> torch.Tensor:
    """Weighted matching cost ``(Q, N)`` from point-sampled masks.

    Args:
        cls_pred: class logits ``(Q, C + 1)``.
        mask_point_logits: mask logits at the sampled points ``(Q, P)``.
        gt_labels: classes ``(N,)``.
        gt_point_masks: ground-truth masks (in ``[0, 1]``) at the same points ``(N, P)``.
    """
    return (
        class_weight * classification_cost(cls_pred, gt_labels)
        + mask_weight * mask_bce_cost(mask_point_logits, gt_point_masks)
        + dice_weight * mask_dice_cost(mask_point_logits, gt_point_masks)
    )


def linear_assignment(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a ``(Q, N)`` cost (``scipy.optimize.linear_sum_assignment``).

    Returns:
        ``(query_indices, gt_indices)``, each ``(min(Q, N),)`` int64 on ``cost.device``, sorted by query.
    """
    optimize = require_extra("scipy.optimize", "train", "training LRFormer+ (Hungarian matching)")
    rows, cols = optimize.linear_sum_assignment(cost.detach().cpu().numpy())
    order = np.argsort(rows)
    rows, cols = (torch.as_tensor(a[order], dtype=torch.long, device=cost.device) for a in (rows, cols))
    return rows, cols


@torch.no_grad()
def hungarian_match(
    cls_pred: torch.Tensor,
    mask_pred: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_masks: torch.Tensor,
    num_points: int = 12544,
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match the queries of one image to its ground-truth masks.

    Predicted (``h × w``) and ground-truth (``H × W``, e.g. 4× larger) masks are both read at the
    same normalised coordinates, so their resolutions need not agree.

    Args:
        cls_pred: class logits ``(Q, C + 1)`` (last: "no object").
        mask_pred: mask logits ``(Q, h, w)``.
        gt_labels: classes ``(N,)`` int64.
        gt_masks: binary masks ``(N, H, W)`` (bool, int or float).
        num_points: random points the mask costs are evaluated on.
        generator: optional generator for the random points.

    Returns:
        ``(query_indices, gt_indices)``: ``min(Q, N)`` matched pairs, int64, sorted by query.
    """
    num_queries, num_gts = cls_pred.shape[0], gt_labels.shape[0]
    points = random_points(1, num_points, mask_pred.device, generator)  # drawn even without ground truth, as mmdet
    if num_gts == 0 or num_queries == 0:
        empty = torch.zeros(0, dtype=torch.long, device=cls_pred.device)
        return empty, empty.clone()
    mask_points = point_sample(mask_pred.unsqueeze(1).float(), points.expand(num_queries, -1, -1))[:, 0]
    gt_points = point_sample(gt_masks.unsqueeze(1).float(), points.expand(num_gts, -1, -1))[:, 0]
    cost = match_cost(cls_pred, mask_points, gt_labels, gt_points, class_weight, mask_weight, dice_weight)
    return linear_assignment(cost)
