"""Evaluate a segmentation model on a dataset split, optionally across torchrun processes."""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.datasets import SegmentationDataset
from ..errors import ConfigError
from ..inference.loading import PreparedImages, PreparedItem
from ..inference.network import Network
from ..inference.predictor import InferenceConfig, Predictor, model_defaults
from .metrics import IoUMetric, SegmentationMetrics


class LabelledImages(PreparedImages):
    """:class:`~lrformer.inference.PreparedImages` of a dataset's ``indices``, each item with its
    label map: ``(PreparedItem, label (H, W), label path)``, all made in loader workers."""

    def __init__(
        self, dataset: SegmentationDataset, indices: list[int], config: InferenceConfig, keep_image: bool = False
    ) -> None:
        super().__init__([dataset.samples[i][0] for i in indices], config, keep_image)
        self.dataset, self.indices = dataset, indices

    def __getitem__(self, i: int) -> tuple[PreparedItem, np.ndarray, str]:
        item = super().__getitem__(i)
        index = self.indices[i]
        return item, self.dataset.load_label(index), str(self.dataset.samples[index][1])


def evaluate(
    model: nn.Module | Network,
    dataset: SegmentationDataset,
    config: InferenceConfig | None = None,
    batch_size: int = 1,
    workers: int = 2,
    device: str | torch.device | None = None,
    progress: bool = True,
    precision: str = "fp32",
    show: Callable[[np.ndarray, np.ndarray, np.ndarray, str], None] | None = None,
) -> SegmentationMetrics:
    """mIoU of ``model`` on ``dataset`` with the test-time settings ``config`` (default: the dataset's).
    ``model`` may be a :class:`~lrformer.inference.network.Network` (e.g. an exported model,
    :func:`lrformer.deploy.load_network`), which runs where it was loaded (``device`` and
    ``precision`` are then not used).

    Under torchrun every rank takes every ``world_size``-th image and the confusion sums are
    all-reduced, so all ranks return the single-process numbers. ``precision``: ``fp32``,
    ``fp16`` or ``bf16`` (autocast). ``show(image_bgr, prediction, label, image_path)`` is called
    for every image this rank evaluates (e.g. to draw ``image | prediction | ground truth``).
    """
    from tqdm import tqdm

    classes = dataset.classes
    if getattr(model, "num_classes", None) != len(classes):
        raise ConfigError(
            f"the model predicts {getattr(model, 'num_classes', None)} classes but {dataset.spec.name} has "
            f"{len(classes)}: create the model with num_classes={len(classes)} (and matching weights)"
        )
    config = config or model_defaults(model, dataset.spec.test)
    options = {} if isinstance(model, Network) else {"device": device, "precision": precision}
    predictor = Predictor(model, config, **options)
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    indices = list(range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(
        LabelledImages(dataset, indices, config, keep_image=show is not None),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
        generator=torch.Generator(),  # leaves the global RNG alone (exact training resume)
    )
    metric = IoUMetric(classes, dataset.spec.ignore_index)
    with tqdm(total=len(dataset), unit="img", disable=not progress or rank != 0, file=sys.stderr, desc="eval") as bar:
        for batch in loader:
            preds = predictor.predict_prepared([item.prepared for item, _, _ in batch], batch_size)
            for pred, (item, label, source) in zip(preds, batch):
                metric.update(pred, label, source)
                if show is not None:
                    show(item.prepared.bgr, pred, label, str(item.path))
            bar.update(len(batch) * world)
    metric.all_reduce()
    return metric.compute()
