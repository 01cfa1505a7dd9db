"""torch.distributed set-up for runs started by ``torchrun`` (one process per device)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


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
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return info


DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
"""Device names training and the commands accept."""


def device_for(device: str, info: DistInfo) -> torch.device:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun; other devices are unchanged.

    Raises :class:`~lrformer.errors.ConfigError` for a device this machine does not have.
    """
    check_device(device)
    if str(device) == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return torch.device(device)


def check_device(device: str, option: str = "train.device", fix: str = "--set train.device=cpu") -> None:
    """Refuse, with the fix, a device name PyTorch does not know or a CUDA / MPS device it cannot use here."""
    device = str(device)
    if not DEVICE.match(device):
        raise ConfigError(f"{option} must be cpu, cuda, cuda:N or mps, got {device!r}")
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            have = f"only {count} CUDA device(s)" if count else "no CUDA GPU (a CPU build of PyTorch, or no driver)"
            raise ConfigError(f"{option} is {device!r} but PyTorch sees {have}: use {fix}")
    elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"{option} is 'mps' but this machine has no usable MPS device: use {fix}")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
