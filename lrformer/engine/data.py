"""Training data: reproducible per-sample augmentation and a resumable distributed epoch sampler."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..data.augment import AugmentConfig, augment
from ..data.datasets import LabelValueError, SegmentationDataset, label_value_problem
from ..errors import ConfigError, InputError
from ..image.io import read_image


class AugmentedDataset(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]`` → ``(image (3, h, w), label (h, w), problem)`` augmented with the
    generator seeded by ``(seed, epoch, index)``: the same sample always gets the same draws.

    ``problem`` is ``""``, or a message naming the annotation file and a value in it that is
    neither a class index (``0..num_classes-1``) nor the ignore index (raised by :func:`batches`
    in the main process, so the message is not buried in a loader worker's traceback).
    """

    def __init__(self, dataset: SegmentationDataset, cfg: AugmentConfig, seed: int, num_classes: int) -> None:
        self.dataset, self.cfg, self.seed, self.num_classes = dataset, cfg, seed, num_classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
        epoch, index = key
        image_path, label_path = self.dataset.samples[index]
        image = read_image(image_path)
        label = self.dataset.load_label(index)
        problem = label_value_problem(label, self.num_classes, self.cfg.ignore_index, str(label_path))
        label = label.astype(np.uint8 if label.max(initial=0) <= 255 and label.min(initial=0) >= 0 else np.int32)
        if label.shape != image.shape[:2]:
            raise InputError(f"{label_path}: label {label.shape} and image {image.shape[:2]} differ")
        return (*augment(image, label, self.cfg, np.random.default_rng([self.seed, epoch, index])), problem)


class EpochSampler(torch.utils.data.Sampler):
    """This rank's ``(epoch, index)`` keys of one epoch, from ``start`` on.

    Same order as ``DistributedSampler(shuffle=True, drop_last=True, seed=seed)`` after
    ``set_epoch(epoch)``: a permutation seeded by ``seed + epoch``, truncated to a multiple of the
    world size, rank ``r`` taking every ``world``-th element from ``r``.
    """

    def __init__(self, size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        self.size, self.epoch, self.seed = size, epoch, seed
        self.rank, self.world_size, self.start = rank, world_size, start

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        total = self.size // self.world_size * self.world_size
        return order[self.rank : total : self.world_size][self.start :]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter((self.epoch, i) for i in self.indices())

    def __len__(self) -> int:
        return max(self.size // self.world_size - self.start, 0)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Endless batches of this rank's ``(epoch, index)`` keys, from iteration ``first_iteration`` on.

    Epoch ``e`` is :class:`EpochSampler`'s order for ``e`` cut into ``per_epoch`` full batches of
    ``batch_size`` consecutive keys (an incomplete last batch is dropped, as ``drop_last``); the
    next epoch follows without a pause. Iteration ``i`` is batch ``i mod per_epoch`` of epoch
    ``i // per_epoch``, so a run resumed at any iteration sees the batches an uninterrupted run
    would. One DataLoader iterates it for the whole run: its workers are started once.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, first_iteration: int = 0
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.first_iteration = rank, world_size, first_iteration
        self.per_epoch = size // world_size // batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.per_epoch == 0:
            return
        epoch, offset = divmod(self.first_iteration, self.per_epoch)
        while True:
            order = EpochSampler(self.size, epoch, self.seed, self.rank, self.world_size).indices()
            for start in range(offset * self.batch_size, self.per_epoch * self.batch_size, self.batch_size):
                yield [(epoch, index) for index in order[start : start + self.batch_size]]
            epoch, offset = epoch + 1, 0


def batches(
    dataset: AugmentedDataset,
    batch_size: int,
    workers: int,
    first_iteration: int,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(images, labels)`` batches for iterations ``first_iteration, first_iteration + 1, ...``
    (resumable; see :class:`EpochBatchSampler`), from one DataLoader whose ``workers`` processes
    live for the whole run. Raises :class:`LabelValueError` for a sample whose label map has a bad value.

    Closing the generator (``.close()``, or dropping it) stops the workers.
    """
    sampler = EpochBatchSampler(len(dataset), batch_size, dataset.seed, rank, world_size, first_iteration)
    if sampler.per_epoch == 0:
        raise ConfigError(
            f"the training set has {len(dataset)} images: fewer than one batch of {batch_size} per process "
            f"({world_size} processes); lower data.batch_size"
        )
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0,
        generator=torch.Generator(),  # worker seeds drawn from its own generator, not the global RNG
        pin_memory=torch.cuda.is_available(),
    )  # fmt: skip
    for images, labels, problems in loader:
        problem = next((p for p in problems if p), None)
        if problem:
            raise LabelValueError(problem)
        yield images, labels
