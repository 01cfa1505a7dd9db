"""Training data: reproducible per-sample augmentation and a resumable distributed epoch sampler."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..data.augment import AugmentConfig, augment
from ..data.datasets import SegmentationDataset
from ..inference.image_io import read_image


class AugmentedDataset(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]`` → ``(image (3, h, w), label (h, w))`` augmented with the
    generator seeded by ``(seed, epoch, index)``: the same sample always gets the same draws."""

    def __init__(self, dataset: SegmentationDataset, cfg: AugmentConfig, seed: int) -> None:
        self.dataset, self.cfg, self.seed = dataset, cfg, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        image = read_image(self.dataset.samples[index][0])
        label = self.dataset.load_label(index)
        label = label.astype(np.uint8 if label.max(initial=0) <= 255 else np.int32)
        if label.shape != image.shape[:2]:
            raise ValueError(
                f"{self.dataset.samples[index][1]}: label {label.shape} and image {image.shape[:2]} differ"
            )
        return augment(image, label, self.cfg, np.random.default_rng([self.seed, epoch, index]))


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


def batches(
    dataset: AugmentedDataset,
    batch_size: int,
    workers: int,
    first_iteration: int,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches for iterations ``first_iteration, first_iteration + 1, ...`` (resumable)."""
    per_epoch = len(dataset) // world_size // batch_size
    if per_epoch == 0:
        raise ValueError(
            f"the training set has {len(dataset)} images: fewer than one batch of {batch_size} per process "
            f"({world_size} processes); lower data.batch_size"
        )
    epoch, offset = divmod(first_iteration, per_epoch)
    while True:
        sampler = EpochSampler(len(dataset), epoch, dataset.seed, rank, world_size, offset * batch_size)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
            generator=torch.Generator(), pin_memory=torch.cuda.is_available(),
        )  # fmt: skip
        yield from loader
        epoch, offset = epoch + 1, 0
