"""Timing one forward pass: warm-up, then median / p90 latency, throughput and peak memory."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

from .devices import autocast, autocast_dtype, check_device, set_cudnn_autotuning
from .utils import peak_memory_mb


def benchmark(
    model: nn.Module,
    size: tuple[int, int],
    batch: int = 1,
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    warmup: int = 3,
    iters: int = 10,
    cudnn_benchmark: bool = False,
) -> dict[str, Any]:
    """Latency of ``model`` on a random ``(batch, 3, H, W)`` input under ``torch.inference_mode``;
    ``cudnn_benchmark``: cuDNN autotuning on a CUDA device (:func:`~lrformer.devices.set_cudnn_autotuning`),
    its search falling in the warm-up passes.

    Returns ``height``, ``width``, ``batch``, ``median_ms``, ``p90_ms``, ``images_per_s`` and
    ``peak_mb`` (CUDA: max allocated; CPU: the process's peak RSS, which only grows).
    """
    device = torch.device(check_device(device, "device", 'device="cpu"'))
    model = model.to(device).eval()
    set_cudnn_autotuning(device, cudnn_benchmark)
    runner = torch.compile(model) if compile else model
    x = torch.randn(batch, 3, *size, device=device)
    dtype = autocast_dtype(precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with torch.inference_mode(), autocast(device, dtype):
        for i in range(warmup + iters):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            runner(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    times.sort()
    median = statistics.median(times)
    return {
        "height": size[0],
        "width": size[1],
        "batch": batch,
        "median_ms": median * 1e3,
        "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))] * 1e3,
        "images_per_s": batch / median,
        "peak_mb": peak_memory_mb(device),
    }
