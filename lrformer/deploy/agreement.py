"""How far a quantised export is from the float model: pixel agreement and mIoU on held-out images.

Both models run the same test pipeline (:class:`lrformer.Predictor`: views, windows, the resize to
the original size) on images that were not calibrated on; a fixed-size export sees every network
input resized to its size, and so does the float model it is compared with (:class:`FixedSize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.metrics import IoUMetric
from ..image.pipeline import InferenceConfig
from ..inference import Predictor
from ..inference.network import Network
from .calibration import CalibrationImages


@dataclass(frozen=True)
class Agreement:
    """The comparison of a quantised model with its float model on held-out images.

    Attributes:
        images: held-out images compared.
        pixels: fraction of their pixels given the same label by both, in [0, 1].
        miou_float, miou_quantised: mIoU (in [0, 1]) of each on the images' labels, when labelled.
    """

    images: int
    pixels: float
    miou_float: float | None = None
    miou_quantised: float | None = None

    def summary(self) -> str:
        """One line: ``pixel agreement 99.71% on 50 held-out images; mIoU 86.65 float, 86.40 int8 (-0.25)``."""
        line = f"pixel agreement with the float model {self.pixels * 100:.2f}% on {self.images} held-out images"
        if self.miou_float is not None and self.miou_quantised is not None:
            change = (self.miou_quantised - self.miou_float) * 100
            line += f"; mIoU {self.miou_float * 100:.2f} float, {self.miou_quantised * 100:.2f} int8 ({change:+.2f})"
        return line


class FixedSize(Network):
    """``network`` fed every input resized (bilinearly) to ``size``, its scores resized back:
    ``(N, 3, h, w)`` → ``(N, C, h, w)`` for a network that takes only ``size``."""

    def __init__(self, network: Network, size: Sequence[int]) -> None:
        self.network, self.size = network, tuple(size)
        self.num_classes, self.device, self.description = network.num_classes, network.device, network.description

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return self.network(x)
        scores = self.network(F.interpolate(x, size=self.size, mode="bilinear", align_corners=False))
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


def compare(
    reference: Network,
    quantised: Network,
    images: CalibrationImages,
    config: InferenceConfig,
    size: Sequence[int] | None = None,
) -> Agreement:
    """:class:`Agreement` of ``quantised`` with ``reference`` on ``images.held_out`` (labels from
    ``images.label`` when given), both through the test pipeline of ``config``; ``size``: the
    ``(H, W)`` of a fixed-size export (both networks then see inputs resized to it)."""
    if size is not None:
        reference, quantised = FixedSize(reference, size), FixedSize(quantised, size)
    predictors = Predictor(reference, config), Predictor(quantised, config)
    metrics = [IoUMetric(images.classes, images.ignore_index) for _ in predictors] if images.label else None
    same = total = 0
    for index, image in enumerate(images.held_out):
        labels = [predictor(Path(image)) for predictor in predictors]
        same += int(np.count_nonzero(labels[0] == labels[1]))
        total += labels[0].size
        if metrics:
            truth = images.label(index)
            for metric, label in zip(metrics, labels):
                metric.update(label.astype(np.int64), truth, source=str(image))
    if not metrics:
        return Agreement(len(images.held_out), same / max(total, 1))
    miou = [metric.compute().mIoU for metric in metrics]
    return Agreement(len(images.held_out), same / max(total, 1), miou[0], miou[1])
