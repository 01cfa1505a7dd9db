"""mIoU exactly as mmsegmentation's ``IoUMetric`` reports it (the metric of the released results).

Per class, intersection / union / label area are **summed over the whole set** (not averaged
per image); IoU = I/U, Acc = I/label area, aAcc = ΣI/Σlabel area; mIoU and mAcc are means over
the classes whose denominator is non-zero. Pixels labelled ``ignore_index`` are ignored.

Design notes: ``docs/design.md``, section 7 (evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..data.datasets import check_label_values
from ..errors import InputError, LabelValueError

__all__ = ["IoUMetric", "LabelValueError", "SegmentationMetrics"]


@dataclass
class SegmentationMetrics:
    """Result of :meth:`IoUMetric.compute`; fractions in [0, 1] (``nan`` where undefined)."""

    aAcc: float
    mIoU: float
    mAcc: float
    IoU: dict[str, float]
    Acc: dict[str, float]

    def as_percent(self) -> dict:
        """The numbers as mmseg prints them: percent, rounded to two decimals (``None`` for nan)."""

        def pct(v: float):
            return None if np.isnan(v) else round(float(v) * 100, 2)

        return {
            "aAcc": pct(self.aAcc), "mIoU": pct(self.mIoU), "mAcc": pct(self.mAcc),
            "IoU": {k: pct(v) for k, v in self.IoU.items()}, "Acc": {k: pct(v) for k, v in self.Acc.items()},
        }  # fmt: skip

    def table(self) -> str:
        """Per-class table and summary, formatted like mmseg's log."""
        data = self.as_percent()
        width = max(10, *(len(n) for n in self.IoU))
        rows = [f"| {'Class':<{width}} |   IoU  |   Acc  |", f"|{'-' * (width + 2)}|--------|--------|"]
        for name in self.IoU:
            iou, acc = data["IoU"][name], data["Acc"][name]
            rows.append(f"| {name:<{width}} | {_fmt(iou):>6} | {_fmt(acc):>6} |")
        rows.append("")
        rows.append(f"aAcc: {_fmt(data['aAcc'])}  mIoU: {_fmt(data['mIoU'])}  mAcc: {_fmt(data['mAcc'])}")
        return "\n".join(rows)


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.2f}"


class IoUMetric:
    """Accumulates the per-class confusion sums of predictions against labels.

    Args:
        class_names: one name per class; their count is the number of classes.
        ignore_index: label value excluded from every sum.

    Usable during training (``reset``/``update``/``compute``) and across processes
    (:meth:`all_reduce` sums the accumulators of every rank).
    """

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255) -> None:
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        # [intersection, union, prediction area, label area] per class, exact integers
        self.sums = torch.zeros(4, self.num_classes, dtype=torch.float64)

    def update(self, pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, source: str = "label") -> None:
        """Add one prediction / label pair of equal ``(H, W)`` shape."""
        pred = torch.as_tensor(pred).detach().cpu().long()
        label = torch.as_tensor(label).detach().cpu().long()
        if pred.shape != label.shape:
            raise InputError(
                f"{source}: prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape "
                "(an image with an EXIF rotation whose label is not rotated?)"
            )
        check_label_values(label.numpy(), self.num_classes, self.ignore_index, source)
        pred, label = pred.flatten(), label.flatten()
        valid = label != self.ignore_index
        pred, label = pred[valid], label[valid]
        n = self.num_classes
        intersection = torch.bincount(label[pred == label], minlength=n)[:n]
        area_pred = torch.bincount(pred.clamp(0, n), minlength=n + 1)[:n]
        area_label = torch.bincount(label, minlength=n)
        self.sums += torch.stack([intersection, area_pred + area_label - intersection, area_pred, area_label]).double()

    def all_reduce(self) -> None:
        """Sum the accumulators over all processes of the default process group (no-op without one)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = (
                torch.device("cuda", torch.cuda.current_device())
                if torch.distributed.get_backend() == "nccl"
                else "cpu"
            )
            sums = self.sums.to(device)
            torch.distributed.all_reduce(sums)
            self.sums = sums.cpu()

    def compute(self) -> SegmentationMetrics:
        intersection, union, _, area_label = self.sums.numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = intersection / union
            acc = intersection / area_label
            a_acc = intersection.sum() / area_label.sum()
        return SegmentationMetrics(
            aAcc=float(a_acc),
            mIoU=float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            mAcc=float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            IoU=dict(zip(self.class_names, iou.tolist())),
            Acc=dict(zip(self.class_names, acc.tolist())),
        )
