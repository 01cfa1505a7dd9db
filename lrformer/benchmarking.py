"""Timing forward passes: warm-up, then median / p90 latency, throughput and peak memory.

:func:`benchmark` times a PyTorch model; :func:`benchmark_networks` times several
:class:`~lrformer.inference.network.Network` objects (a PyTorch model, ONNX Runtime, OpenVINO: the
call the predictor makes) side by side, their passes interleaved so that the noise of a shared
machine hits all of them alike. Both rest on :func:`time_passes` and :func:`latency`.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .devices import autocast, autocast_dtype, check_device, set_cudnn_autotuning
from .inference.network import Network
from .utils import peak_memory_mb


def time_passes(
    runs: Mapping[str, Callable[[], Any]],
    warmup: int = 3,
    iters: int = 10,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of ``iters`` timed calls of each run, after ``warmup`` untimed calls of each.

    With several runs the timed calls are interleaved round by round (``a, b, c, a, b, c, ...``),
    so a slow spell of the machine slows all of them alike and their ratios stay comparable.
    ``synchronize`` (e.g. ``torch.cuda.synchronize``) is called before and after each timed call.
    """
    wait = synchronize or (lambda: None)
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(iters):
        for name, run in runs.items():
            wait()
            start = time.perf_counter()
            run()
            wait()
            times[name].append(time.perf_counter() - start)
    return times


def latency(times: list[float], batch: int) -> dict[str, float]:
    """``median_ms``, ``p90_ms`` and ``images_per_s`` (``batch`` images a call) of call times in seconds."""
    ordered = sorted(times)
    median = statistics.median(ordered)
    return {
        "median_ms": median * 1e3,
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1e3,
        "images_per_s": batch / median,
    }


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
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    with torch.inference_mode(), autocast(device, dtype):
        times = time_passes({"model": lambda: runner(x)}, warmup, iters, synchronize)["model"]
    return {
        "height": size[0],
        "width": size[1],
        "batch": batch,
        **latency(times, batch),
        "peak_mb": peak_memory_mb(device),
    }


def peak_resident_mb() -> float:
    """This process's peak resident set in MB: ``VmHWM`` of ``/proc/self/status`` on Linux, which
    starts afresh at ``exec`` (``getrusage``'s ``ru_maxrss`` keeps the peak of the process that
    forked, so a fresh subprocess would report at least its parent's size); elsewhere
    :func:`~lrformer.utils.peak_memory_mb`."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return peak_memory_mb("cpu")


def benchmark_networks(
    networks: Mapping[str, Network], size: tuple[int, int], batch: int = 1, warmup: int = 3, iters: int = 10
) -> dict[str, dict[str, float]]:
    """Latency of each network's call (``network(x)``, what the predictor runs) on one random
    ``(batch, 3, H, W)`` float32 input, the networks timed side by side (:func:`time_passes`).

    A network that cannot take the size (a fixed-size export) raises its one-line
    :class:`~lrformer.errors.ConfigError` before anything is timed. Returns, per name,
    ``median_ms``, ``p90_ms`` and ``images_per_s``.
    """
    for network in networks.values():
        network.check_size(*size)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    inputs = {name: x.to(network.device) for name, network in networks.items()}
    runs = {name: (lambda name=name, network=network: network(inputs[name])) for name, network in networks.items()}
    cuda = [network.device for network in networks.values() if network.device.type == "cuda"]
    synchronize = (lambda: [torch.cuda.synchronize(device) for device in cuda]) if cuda else None
    with torch.no_grad():  # as Predictor.scores
        times = time_passes(runs, warmup, iters, synchronize)
    return {name: latency(samples, batch) for name, samples in times.items()}
