"""Devices and precisions: ``auto`` device selection, availability checks with the fix, autocast.

Every command and :class:`~lrformer.inference.Predictor` take the same device names: ``auto``
(CUDA if PyTorch sees a GPU, else Apple's MPS, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` and
``mps``; and the same precisions: ``fp32`` (no autocast), ``fp16`` and ``bf16`` (autocast, with
scores converted back to fp32 before they are resized and merged).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import ContextManager

import torch

from .errors import ConfigError

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
"""Device names the commands and the training configuration accept."""

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
"""Precision name → autocast dtype (``None``: plain fp32)."""


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(device: str | torch.device) -> str:
    """``auto`` → ``cuda`` when PyTorch sees a GPU, else ``mps`` when usable, else ``cpu``; any
    other name is returned unchanged."""
    device = str(device)
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if mps_available() else "cpu"


def check_device(device: str | torch.device, option: str = "--device", fix: str = "--device cpu") -> str:
    """The usable device ``device`` names (``auto`` resolved), or :class:`ConfigError` naming
    ``option`` and ``fix`` for a name PyTorch does not know or a GPU this machine lacks."""
    name = str(device)
    if not DEVICE.match(name):
        raise ConfigError(f"{option} must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    name = resolve_device(name)
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            have = f"only {count} CUDA device(s)" if count else "no CUDA GPU (a CPU build of PyTorch, or no driver)"
            raise ConfigError(f"{option} is {name!r} but PyTorch sees {have}: use {fix}")
    elif name == "mps" and not mps_available():
        raise ConfigError(f"{option} is 'mps' but this machine has no usable MPS device: use {fix}")
    return name


def autocast_dtype(precision: str, device: str | torch.device, option: str = "--precision") -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``, or :class:`ConfigError` when the device
    cannot run it (e.g. bf16 on a GPU older than Ampere)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{option} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    device = torch.device(device)
    if dtype is None:
        return None
    if device.type == "cuda" and dtype == torch.bfloat16 and not _cuda_bf16(device):
        raise ConfigError(f"{option} bf16: this GPU has no bfloat16 support; use {option} fp16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # autocast only warns (and turns itself off) for an unsupported pair
        try:
            with torch.autocast(device.type, dtype=dtype):
                pass
        except (RuntimeError, UserWarning) as exc:
            raise ConfigError(
                f"{option} {precision} is not supported on {device.type} by this PyTorch ({exc}); use {option} fp32"
            ) from None
    return dtype


def _cuda_bf16(device: torch.device) -> bool:
    """Whether the CUDA device ``device`` (not merely the current one) computes in bfloat16."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported()


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op for ``None`` (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_cudnn_autotuning(device: str | torch.device, enabled: bool) -> bool:
    """cuDNN autotuning (``torch.backends.cudnn.benchmark``) for a CUDA ``device``: the first call
    of a convolution at a new input shape times cuDNN's algorithms and keeps the fastest, which pays
    when shapes repeat (training crops, fixed-size benchmarks) and costs a search at every new shape
    (whole images of varying sizes). Results may differ in the last bits from run to run. Does
    nothing on other devices; returns whether autotuning is now on."""
    if torch.device(device).type != "cuda":
        return False
    torch.backends.cudnn.benchmark = enabled
    return enabled
