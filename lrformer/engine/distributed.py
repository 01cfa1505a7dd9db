"""torch.distributed set-up for runs started by ``torchrun`` (one process per device)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import check_device, resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): NCCL for CUDA, gloo for CPU.

    Without torchrun it returns a single-process :class:`DistInfo` and initialises nothing.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = resolve_device(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return info


def device_for(
    device: str, info: DistInfo, option: str = "train.device", fix: str = "--set train.device=cpu"
) -> torch.device:
    """``auto`` resolved (:func:`~lrformer.devices.resolve_device`), then ``cuda`` becomes
    ``cuda:LOCAL_RANK`` under torchrun; other devices are unchanged.

    Raises :class:`~lrformer.errors.ConfigError` naming ``option`` and ``fix`` for a device this
    machine does not have.
    """
    device = check_device(device, option, fix)
    if device == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return torch.device(device)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
