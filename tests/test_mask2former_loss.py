"""Mask2Former training criterion: Hungarian matching, semantic targets, loss pieces, a few training steps."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lrformer
from lrformer.errors import LabelValueError
from lrformer.models.mask2former.criterion import (
    Mask2FormerCriterion,
    classification_loss,
    dice_loss,
    semantic_targets,
)
from lrformer.models.mask2former.matcher import (
    classification_cost,
    hungarian_match,
    linear_assignment,
    mask_bce_cost,
    mask_dice_cost,
    match_cost,
)
from lrformer.models.mask2former.point_sample import point_sample, random_points, uncertain_point_coords_with_randomness


def _brute_force_min_cost(cost: torch.Tensor) -> float:
    """Smallest total cost of a one-to-one assignment of ``min(Q, N)`` pairs, by enumeration."""
    rows, cols = cost.shape
    if rows >= cols:  # each ground truth gets a distinct query
        return min(sum(cost[q, g].item() for g, q in enumerate(p)) for p in itertools.permutations(range(rows), cols))
    return min(sum(cost[q, g].item() for q, g in enumerate(p)) for p in itertools.permutations(range(cols), rows))


# ----------------------------------------------------------------------------- matching


@pytest.mark.parametrize("shape", [(4, 3), (3, 4), (4, 4), (5, 2), (1, 3)])
def test_linear_assignment_equals_brute_force(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    for _ in range(20):
        cost = torch.randn(shape, generator=gen)
        rows, cols = linear_assignment(cost)
        assert len(rows) == len(cols) == min(shape)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert rows.tolist() == sorted(rows.tolist())
        assert cost[rows, cols].sum().item() == pytest.approx(_brute_force_min_cost(cost), abs=1e-5)


def _random_instance(gen: torch.Generator, num_queries: int = 4, num_classes: int = 3):
    """Random predictions at 8×8 and three ground-truth masks at the 4× larger 32×32."""
    cls_pred = torch.randn(num_queries, num_classes + 1, generator=gen)
    mask_pred = 3 * torch.randn(num_queries, 8, 8, generator=gen)
    gt_masks = torch.rand(3, 32, 32, generator=gen) > 0.5
    gt_labels = torch.tensor([2, 0, 1])
    return cls_pred, mask_pred, gt_labels, gt_masks


def test_hungarian_match_minimises_the_point_cost():
    for seed in range(5):
        cls_pred, mask_pred, gt_labels, gt_masks = _random_instance(torch.Generator().manual_seed(seed))
        query_idx, gt_idx = hungarian_match(
            cls_pred, mask_pred, gt_labels, gt_masks, num_points=64, generator=torch.Generator().manual_seed(7)
        )
        # the same points: a generator in the same state
        points = random_points(1, 64, "cpu", torch.Generator().manual_seed(7))
        pred_points = point_sample(mask_pred.unsqueeze(1), points.expand(4, -1, -1))[:, 0]
        gt_points = point_sample(gt_masks.unsqueeze(1).float(), points.expand(3, -1, -1))[:, 0]
        cost = match_cost(cls_pred, pred_points, gt_labels, gt_points)
        assert query_idx.tolist() == sorted(query_idx.tolist()) and sorted(gt_idx.tolist()) == [0, 1, 2]
        assert cost[query_idx, gt_idx].sum().item() == pytest.approx(_brute_force_min_cost(cost), abs=1e-5)


def test_hungarian_match_recovers_planted_queries():
    """Queries predicting (at 1/4 resolution) exactly the ground-truth masks and classes are found."""
    gt_masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    gt_masks[0, :16], gt_masks[1, 16:, :16], gt_masks[2, 16:, 16:] = True, True, True
    gt_labels = torch.tensor([1, 2, 0])
    owner = [3, 0, 5]  # query owning each ground truth
    mask_pred = torch.full((6, 8, 8), -8.0)
    cls_pred = torch.zeros(6, 4)
    cls_pred[:, 3] = 4.0  # "no object"
    for g, q in enumerate(owner):
        mask_pred[q] = 16 * F.avg_pool2d(gt_masks[g][None].float(), 4)[0] - 8
        cls_pred[q, gt_labels[g]] = 6.0
    query_idx, gt_idx = hungarian_match(cls_pred, mask_pred, gt_labels, gt_masks, 256, generator=torch.Generator())
    assert dict(zip(gt_idx.tolist(), query_idx.tolist())) == dict(enumerate(owner))


def test_hungarian_match_without_ground_truth():
    query_idx, gt_idx = hungarian_match(torch.randn(4, 3), torch.randn(4, 8, 8), torch.zeros(0, dtype=torch.long),
                                        torch.zeros(0, 32, 32), num_points=16)  # fmt: skip
    assert query_idx.numel() == gt_idx.numel() == 0


# Hand-made matching case: three queries, two ground truths, four points. Mask logits ln 3, 0 and −ln 3 have
# sigmoid probabilities 3/4, 1/2 and 1/4; class logits ln 2, 0, 0 have softmax (1/2, 1/4, 1/4).
LN3, LN2 = math.log(3), math.log(2)
HAND_CLS = [[LN2, 0.0, 0.0], [0.0, 0.0, LN2], [0.0, 0.0, LN2]]  # softmax (1/2, 1/4, 1/4), (1/4, 1/4, 1/2) twice
HAND_MASKS = [[LN3, LN3, 0.0, -LN3], [0.0] * 4, [LN3, 0.0, -LN3, -LN3]]  # p (¾, ¾, ½, ¼), (½, ½, ½, ½), (¾, ½, ¼, ¼)
HAND_GT_MASKS, HAND_GT_LABELS = [[1, 1, 0, 0], [1, 1, 1, 0]], [0, 1]

# mmdet ClassificationCost: −softmax probability of the ground truth's class, (Q, N)
HAND_CLASS_COST = [[-1 / 2, -1 / 4], [-1 / 4, -1 / 4], [-1 / 4, -1 / 4]]
# mmdet CrossEntropyLossCost(use_sigmoid=True): mean over the points of −ln p (target 1) or −ln(1 − p) (target 0):
# a = ln(4/3) (p ¾ on 1, p ¼ on 0), b = ln 4 (p ¼ on 1), c = ln 2 (p ½ on either).
#   q0 on g0: (a, a, c, a), on g1: (a, a, c, a); q1: c at every point; q2 on g0: (a, c, a, a), on g1: (a, c, b, a)
_A, _B, _C = math.log(4 / 3), math.log(4), math.log(2)
HAND_BCE_COST = [[(3 * _A + _C) / 4] * 2, [_C, _C], [(3 * _A + _C) / 4, (2 * _A + _B + _C) / 4]]
# mmdet DiceCost(pred_act=True, eps=1): 1 − (2·Σ p·t + 1) / (Σ p + Σ t + 1), Σ t = 2 (g0) and 3 (g1)
#   q0 (Σ p = 2.25): g0 Σ p·t = 1.5 → 1 − 4/(2.25 + 2 + 1) = 5/21,   g1 Σ p·t = 2 → 1 − 5/(2.25 + 3 + 1) = 1/5
#   q1 (Σ p = 2):    g0 Σ p·t = 1 → 1 − 3/(2 + 2 + 1) = 2/5,         g1 Σ p·t = 1.5 → 1 − 4/(2 + 3 + 1) = 1/3
#   q2 (Σ p = 1.75): g0 Σ p·t = 1.25 → 1 − 3.5/(1.75 + 2 + 1) = 5/19, g1 Σ p·t = 1.5 → 1 − 4/(1.75 + 3 + 1) = 7/23
HAND_DICE_COST = [[5 / 21, 1 / 5], [2 / 5, 1 / 3], [5 / 19, 7 / 23]]
# 2·class + 5·BCE + 5·dice:
#   [[2.13572, 2.44524],
#    [4.96574, 4.63240],
#    [2.76104, 4.34024]]
HAND_COST = [
    [2 * k + 5 * m + 5 * d for k, m, d in zip(*rows)] for rows in zip(HAND_CLASS_COST, HAND_BCE_COST, HAND_DICE_COST)
]


def _hand_inputs():
    return (torch.tensor(HAND_CLS), torch.tensor(HAND_MASKS), torch.tensor(HAND_GT_LABELS),
            torch.tensor(HAND_GT_MASKS, dtype=torch.float32))  # fmt: skip


def test_match_cost_pieces_by_hand():
    cls_pred, mask_logits, gt_labels, gt_masks = _hand_inputs()
    assert HAND_COST[0] == pytest.approx([2.13572, 2.44524], abs=1e-5)  # the table above
    assert HAND_COST[2] == pytest.approx([2.76104, 4.34024], abs=1e-5)
    assert classification_cost(cls_pred, gt_labels).tolist() == [pytest.approx(r, abs=1e-6) for r in HAND_CLASS_COST]
    assert mask_bce_cost(mask_logits, gt_masks).tolist() == [pytest.approx(r, abs=1e-6) for r in HAND_BCE_COST]
    assert mask_dice_cost(mask_logits, gt_masks).tolist() == [pytest.approx(r, abs=1e-6) for r in HAND_DICE_COST]
    # the default weights are the official configs' 2, 5, 5
    cost = match_cost(cls_pred, mask_logits, gt_labels, gt_masks)
    assert cost.shape == (3, 2) and cost.tolist() == [pytest.approx(r, abs=1e-5) for r in HAND_COST]
    # each weight scales its own piece: 1·class + 2·BCE + 3·dice
    weighted = match_cost(
        cls_pred, mask_logits, gt_labels, gt_masks, class_weight=1.0, mask_weight=2.0, dice_weight=3.0
    )
    expected = [
        [k + 2 * m + 3 * d for k, m, d in zip(*rows)] for rows in zip(HAND_CLASS_COST, HAND_BCE_COST, HAND_DICE_COST)
    ]
    assert weighted.tolist() == [pytest.approx(r, abs=1e-5) for r in expected]


def test_hungarian_match_by_hand(monkeypatch):
    """The hand-made case through ``hungarian_match``: both ground truths' cheapest query is q0 (2.13572 and
    2.44524), and greedy picking (g0 takes q0, then g1 takes q2) totals 2.13572 + 4.34024 = 6.47596; the optimum
    gives q0 to g1 and q2 to g0: 2.76104 + 2.44524 = 5.20628. (The other assignments, (g0, g1) ← (q0, q1): 6.76812,
    (q1, q0): 7.41098, (q1, q2): 9.30598, (q2, q1): 7.39344.)"""
    import lrformer.models.mask2former.matcher as matcher

    cls_pred, mask_logits, gt_labels, gt_masks = _hand_inputs()
    # the masks as 1 × 4 maps, read at the four pixel centres instead of random points
    centres = torch.tensor([[[0.125, 0.5], [0.375, 0.5], [0.625, 0.5], [0.875, 0.5]]])
    drawn = []

    def fixed_points(batch, num_points, device, generator=None):
        drawn.append((batch, num_points))
        return centres.to(device)

    monkeypatch.setattr(matcher, "random_points", fixed_points)
    query_idx, gt_idx = hungarian_match(cls_pred, mask_logits.view(3, 1, 4), gt_labels, gt_masks.view(2, 1, 4) > 0, 4)
    assert drawn == [(1, 4)]
    # the case is built so that the per-column argmin collides and the cheapest total is 5.20628
    assert [min(range(3), key=lambda q: HAND_COST[q][g]) for g in range(2)] == [0, 0]
    assert _brute_force_min_cost(torch.tensor(HAND_COST)) == pytest.approx(2.76104 + 2.44524, abs=1e-4)
    assert query_idx.tolist() == [0, 2] and gt_idx.tolist() == [1, 0]
    # weights reach the assignment: with the class cost alone q0 (probability 1/2 of class 0) takes g0
    query_idx, gt_idx = hungarian_match(cls_pred, mask_logits.view(3, 1, 4), gt_labels, gt_masks.view(2, 1, 4) > 0, 4,
                                        class_weight=1.0, mask_weight=0.0, dice_weight=0.0)  # fmt: skip
    assert dict(zip(gt_idx.tolist(), query_idx.tolist()))[0] == 0


# ----------------------------------------------------------------------------- targets and sampling


def test_semantic_targets_hand_made():
    label = torch.tensor([[0, 0, 3, 3], [0, 255, 3, 3], [2, 2, 2, 2], [2, 2, 2, 2]])
    gt_labels, gt_masks = semantic_targets(label, num_classes=4)
    assert gt_labels.tolist() == [0, 2, 3]
    assert gt_masks.dtype == torch.bool and gt_masks.shape == (3, 4, 4)
    expected = [
        [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]],
        [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
    ]
    assert gt_masks.int().tolist() == expected
    assert gt_masks.sum().item() == 15  # the ignored pixel is in no mask

    empty_labels, empty_masks = semantic_targets(torch.full((4, 4), 255), num_classes=4)
    assert empty_labels.numel() == 0 and empty_masks.shape == (0, 4, 4)
    with pytest.raises(LabelValueError, match=r"labels must be in \[0, 4\) or 255, got values \[0, 4\]: fix"):
        semantic_targets(torch.tensor([[0, 4]]), num_classes=4)


def test_point_sample_reads_pixel_centres():
    maps = torch.arange(12.0).view(1, 1, 3, 4)
    ys, xs = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    centres = torch.stack([(xs + 0.5) / 4, (ys + 0.5) / 3], -1).view(1, -1, 2)
    assert torch.allclose(point_sample(maps, centres), maps.view(1, 1, -1), atol=1e-5)


def test_uncertain_points_prefer_the_decision_boundary():
    logits = torch.linspace(-10, 10, 64).view(1, 1, 1, 64).expand(1, 1, 8, 64)  # zero crossing at x = 0.5
    points = uncertain_point_coords_with_randomness(logits, 40, 3.0, 0.75, torch.Generator().manual_seed(0))
    assert points.shape == (1, 40, 2) and points.min() >= 0 and points.max() <= 1
    uncertain_x = points[0, :30, 0]
    assert (uncertain_x - 0.5).abs().max() < 0.25  # the 30 most uncertain of 120 candidates


# ----------------------------------------------------------------------------- loss pieces


def test_dice_loss_by_hand():
    masks = (torch.rand(5, 100, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    assert torch.allclose(dice_loss(100 * (2 * masks - 1), masks), torch.zeros(5), atol=1e-6)
    # probabilities 0.5 on 4 points, target [1, 0, 0, 0]: 1 - (2·0.5 + 1) / (2 + 1 + 1) = 0.5
    assert dice_loss(torch.zeros(1, 4), torch.tensor([[1.0, 0, 0, 0]])).item() == pytest.approx(0.5)


def _nll(logits: list[float], target: int) -> float:
    return -math.log(math.exp(logits[target]) / sum(math.exp(v) for v in logits))


def test_classification_loss_weights_no_object_by_hand():
    logits = [[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 1.5, 0.0]]
    targets = [0, 2, 2]  # classes 0, 1 and "no object" (2)
    expected = (_nll(logits[0], 0) + 0.1 * _nll(logits[1], 2) + 0.1 * _nll(logits[2], 2)) / (1 + 0.1 + 0.1)
    loss = classification_loss(torch.tensor(logits), torch.tensor(targets), no_object_weight=0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _one_image_case(masks: str = "right"):
    """One 32×32 label map (left half class 0, right half class 1), three queries at 8×8."""
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[0, :, 16:] = 1
    cls_logits = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]]], requires_grad=True)
    left = torch.zeros(8, 8)
    left[:, :4] = 1
    mask_logits = torch.stack([left, 1 - left, torch.zeros(8, 8)]) * 20 - 10
    if masks == "swapped":
        mask_logits = mask_logits[[1, 0, 2]]
    elif masks == "zero":
        mask_logits = torch.zeros(3, 8, 8)
    return [cls_logits], [mask_logits[None].requires_grad_()], labels


def test_criterion_one_layer_by_hand():
    criterion = Mask2FormerCriterion(num_classes=2, num_points=200)
    cls_preds, mask_preds, labels = _one_image_case()
    losses = criterion(cls_preds, mask_preds, labels, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"loss_cls", "loss_mask", "loss_dice", "loss"}
    # query 0 ↔ class 0, query 1 ↔ class 1, query 2 "no object" (weight 0.1); loss weight 2
    logits = cls_preds[0][0].tolist()
    expected = 2.0 * (_nll(logits[0], 0) + _nll(logits[1], 1) + 0.1 * _nll(logits[2], 2)) / 2.1
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(sum(losses[k].item() for k in ("loss_cls", "loss_mask", "loss_dice")))
    losses["loss"].backward()
    assert mask_preds[0].grad[0, 2].abs().sum() == 0  # unmatched queries get no mask gradient

    # masks swapped: the mask costs (weight 5 + 5) outweigh the class cost, query 0 ↔ class 1
    swapped = criterion(*_one_image_case("swapped"), generator=torch.Generator().manual_seed(0))
    expected = 2.0 * (_nll(logits[0], 1) + _nll(logits[1], 0) + 0.1 * _nll(logits[2], 2)) / 2.1
    assert swapped["loss_cls"].item() == pytest.approx(expected, rel=1e-5)

    # zero mask logits: every point costs log 2 whatever its target, × loss weight 5
    zero = criterion(*_one_image_case("zero"), generator=torch.Generator().manual_seed(0))
    assert zero["loss_mask"].item() == pytest.approx(5 * math.log(2), rel=1e-5)
    assert zero["loss_cls"].item() == pytest.approx(losses["loss_cls"].item())  # matched by class alone
    assert losses["loss_mask"] < 0.5 * zero["loss_mask"] and losses["loss_dice"] < 0.5 * zero["loss_dice"]


def test_criterion_without_ground_truth_and_reproducibility():
    gen = torch.Generator().manual_seed(0)
    cls_preds = [torch.randn(2, 5, 4, generator=gen, requires_grad=True) for _ in range(3)]
    mask_preds = [torch.randn(2, 5, 8, 8, generator=gen, requires_grad=True) for _ in range(3)]
    labels = torch.full((2, 32, 32), 255)
    criterion = Mask2FormerCriterion(num_classes=3, num_points=32)
    losses = criterion(cls_preds, mask_preds, labels)
    with pytest.raises(ValueError, match="per-layer lists"):
        criterion(cls_preds[0], mask_preds[0], labels)
    assert list(losses) == ["loss_cls", "loss_mask", "loss_dice"] + [
        f"d{i}.{name}" for i in range(2) for name in ("loss_cls", "loss_mask", "loss_dice")
    ] + ["loss"]  # fmt: skip
    assert losses["loss_mask"].item() == losses["loss_dice"].item() == 0
    # every query is "no object": the class weights cancel out to the plain mean cross-entropy
    no_object = torch.full((10,), 3)
    assert losses["loss_cls"].item() == pytest.approx(
        2 * F.cross_entropy(cls_preds[-1].flatten(0, 1), no_object).item()
    )
    losses["loss"].backward()
    assert mask_preds[0].grad is not None and mask_preds[0].grad.abs().sum() == 0

    labels[0, :, :10], labels[1, 5:20] = 1, 2
    first = criterion(cls_preds, mask_preds, labels, generator=torch.Generator().manual_seed(3))
    second = criterion(cls_preds, mask_preds, labels, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(first[k], second[k]) for k in first)


# ----------------------------------------------------------------------------- training


def _tiny_plus():
    return lrformer.create_model(
        "lrformer_t_plus", num_classes=3, embed_dims=[16, 32, 64, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 4],
        drop_path_rate=0.0, feat_channels=32, num_queries=8, pixel_decoder_layers=1, pixel_decoder_heads=4,
        pixel_decoder_points=2, pixel_decoder_ffn=64, pixel_decoder_gn_groups=8, transformer_decoder_layers=3,
        transformer_decoder_heads=4, transformer_decoder_ffn=64, positional_encoding_num_feats=16,
    )  # fmt: skip


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = _tiny_plus().train()
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[0, :32], labels[0, 40:, 8:56] = 1, 2
    labels[1, :, 32:], labels[1, 8:24, 8:24], labels[1, 60:] = 2, 1, 255
    colours = torch.tensor([[-1.0, 0.0, 1.0], [1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    images = colours[labels.clamp(max=2)].permute(0, 3, 1, 2) + 0.3 * torch.randn(2, 3, 64, 64)
    criterion = Mask2FormerCriterion(num_classes=3, num_points=256)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_value() -> dict[str, torch.Tensor]:
        cls_preds, mask_preds = model.decode_head(model.backbone(images))
        assert len(cls_preds) == len(mask_preds) == 4 and mask_preds[0].shape == (2, 8, 16, 16)
        return criterion(cls_preds, mask_preds, labels, generator=torch.Generator().manual_seed(0))

    initial = loss_value()
    assert len(initial) == 4 * 3 + 1 and all(torch.isfinite(v) for v in initial.values())
    for _ in range(10):
        optimizer.zero_grad()
        loss_value()["loss"].backward()
        optimizer.step()
    with torch.no_grad():
        final = loss_value()
    assert final["loss"] < 0.85 * initial["loss"]
    assert final["loss_cls"] < initial["loss_cls"]


DATA = Path(__file__).parent / "data" / "mask2former_loss_case.pt"


def test_criterion_equals_mmdet_with_an_image_without_labels():
    """mmdet 3.3.0's ``loss_by_feat`` on 3 layers × 3 images, the second image all ignore
    (tests/data/README.md): same random points from the same seed, so the same nine losses."""
    case = torch.load(DATA)
    assert (case["labels"][1] == 255).all()
    criterion = Mask2FormerCriterion(case["num_classes"], num_points=case["num_points"])
    for expected in case["cases"]:
        torch.manual_seed(expected["seed"])
        losses = criterion(list(case["cls_scores"]), list(case["mask_preds"]), case["labels"].long())
        assert set(losses) - {"loss"} == set(expected["losses"])
        for name, value in expected["losses"].items():
            assert losses[name].item() == pytest.approx(value, rel=1e-5), (expected["seed"], name)


def test_an_image_without_masks_counts_as_one_mask():
    """mmdet normalises the mask losses by sum over images of max(matched masks, 1): an image with
    two masks and one with none divide by 3. With zero mask logits every point's BCE is log 2, so
    the expected values follow by hand."""
    criterion = Mask2FormerCriterion(num_classes=2, num_points=64)
    cls_preds, mask_preds, labels = _one_image_case("zero")  # one image, classes 0 and 1 (2 masks)
    two = [torch.cat([cls_preds[0], cls_preds[0]])], [torch.cat([mask_preds[0], mask_preds[0]]).detach()]
    labels = torch.cat([labels, torch.full_like(labels, 255)])
    losses = criterion(*two, labels, generator=torch.Generator().manual_seed(0))
    # 2 matched masks, 64 points each, BCE log 2 per point: 5 · (2 · 64 · log 2) / (3 · 64)
    assert losses["loss_mask"].item() == pytest.approx(5 * 2 * math.log(2) / 3, rel=1e-5)
    alone = criterion(*_one_image_case("zero")[:2], labels[:1], generator=torch.Generator().manual_seed(0))
    assert alone["loss_mask"].item() == pytest.approx(5 * math.log(2), rel=1e-5)  # divided by 2


def _distributed_worker(rank: int, port: int, folder: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cls_preds, mask_preds, labels = _one_image_case("zero")
    if rank == 1:  # one mask here, two on rank 0
        labels = torch.zeros_like(labels)
    criterion = Mask2FormerCriterion(num_classes=2, num_points=64)
    losses = criterion(cls_preds, mask_preds, labels, generator=torch.Generator().manual_seed(0))
    torch.save({k: v.detach() for k, v in losses.items()}, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_mask_count_is_averaged_over_processes(tmp_path):
    """mmdet's reduce_mean: each process divides by the mean mask count (2 + 1) / 2 = 1.5."""
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(29573, str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    # zero mask logits: BCE log 2 at each of 64 points of each matched mask
    assert rank0["loss_mask"].item() == pytest.approx(5 * 2 * 64 * math.log(2) / (1.5 * 64), rel=1e-5)
    assert rank1["loss_mask"].item() == pytest.approx(5 * 1 * 64 * math.log(2) / (1.5 * 64), rel=1e-5)
