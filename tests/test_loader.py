"""The training loader: DistributedSampler's order, exact resume, and workers started once per run."""

from __future__ import annotations

import os

import torch

from lrformer.engine.data import EpochBatchSampler, batches


def reference_batches(size: int, batch: int, seed: int, rank: int, world: int, epochs: int) -> list[list[tuple]]:
    """Batches as torch's DistributedSampler (shuffle, drop_last) and a drop_last DataLoader give them, epoch by epoch."""
    out = []
    for epoch in range(epochs):
        sampler = torch.utils.data.DistributedSampler(
            range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        order = list(sampler)
        out += [[(epoch, i) for i in order[b : b + batch]] for b in range(0, len(order) - batch + 1, batch)]
    return out


def take(iterable, n: int) -> list:
    iterator = iter(iterable)
    return [next(iterator) for _ in range(n)]


def test_batches_follow_distributed_sampler_across_epochs_and_resume_anywhere():
    size, batch, seed, world = 23, 3, 7, 2  # 11 keys per rank: 3 batches, 2 keys dropped per epoch
    for rank in range(world):
        expected = reference_batches(size, batch, seed, rank, world, epochs=4)
        assert len(expected) == 12
        assert take(EpochBatchSampler(size, batch, seed, rank, world), 12) == expected
        for first in (1, 3, 5, 10):  # resumed at any iteration: the tail of the same sequence
            assert take(EpochBatchSampler(size, batch, seed, rank, world, first), 12 - first) == expected[first:]


class KeysAndWorkers(torch.utils.data.Dataset):
    """Returns the ``(epoch, index)`` key and the process that loaded it."""

    seed = 5

    def __len__(self) -> int:
        return 8

    def __getitem__(self, key):
        return torch.tensor([*key, os.getpid()]), torch.zeros(1), ""


def test_workers_are_started_once_for_all_epochs():
    stream = batches(KeysAndWorkers(), batch_size=2, workers=2, first_iteration=0)
    loaded = torch.cat([images for images, _ in take(stream, 12)])  # 3 epochs of 4 batches
    stream.close()
    keys = [tuple(row[:2].tolist()) for row in loaded]
    assert keys == [key for b in reference_batches(8, 2, 5, 0, 1, epochs=3) for key in b]
    workers = set(loaded[:, 2].tolist())
    assert len(workers) == 2 and os.getpid() not in workers  # the same two processes for every epoch
