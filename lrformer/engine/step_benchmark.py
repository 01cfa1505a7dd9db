"""Cost of one training step, and throughput of the training data pipeline (``lrformer benchmark --train / --data``).

:func:`benchmark_train_step` runs the trainer's step on a random batch — forward pass, loss
(:class:`~lrformer.engine.losses.TrainingObjective`), backward pass, gradient clipping and the
AdamW step of the default recipe (:func:`~lrformer.engine.optim.build_optimizer`) — with or
without activation checkpointing, and measures its time and the memory it needs:

- **CUDA**: after the warm-up steps the weights, gradients, optimizer state and batch exist;
  ``torch.cuda.memory_allocated`` before a timed step is the baseline, ``max_memory_allocated``
  during it (after ``reset_peak_memory_stats``) the peak.
- **CPU**: a process's peak resident set only grows, so each configuration runs in a fresh
  subprocess whose glibc returns every freed block of 64 KiB or more to the system
  (``MALLOC_MMAP_THRESHOLD_=65536``), so that resident memory follows the live tensors. Before a
  timed step the kernel's peak counter is reset (``5`` written to ``/proc/self/clear_refs``) and
  ``VmRSS`` is the baseline; ``VmHWM`` after the step is the peak. Where the counter cannot be
  reset (not Linux, or no permission) the added memory is NaN with a note, and the peak is the
  subprocess's lifetime peak.

In both cases ``added_mb = peak_mb - baseline_mb`` is what the step needs above the weights,
gradients and optimizer state: the activations kept for the backward pass and the temporaries.

:func:`benchmark_data` reads batches from the trainer's pipeline (``SegmentationDataset`` →
``AugmentedDataset`` → :func:`~lrformer.engine.data.batches`) for several worker counts.
"""

from __future__ import annotations

import gc
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.augment import AugmentConfig
from ..data.datasets import SegmentationDataset, load_spec
from ..devices import autocast_dtype, check_device, set_cudnn_autotuning
from ..errors import ConfigError, LRFormerError
from ..models import create_model
from ..utils import peak_memory_mb
from .data import AugmentedDataset, batches
from .losses import TrainingObjective
from .optim import build_optimizer, optimisation_step
from .settings import OptimSettings, TrainingConfig

MMAP_THRESHOLD = 65536
"""glibc ``M_MMAP_THRESHOLD`` of the CPU measuring subprocess: blocks from this size up are mapped and
unmapped on their own, so freed tensors leave the resident set."""

NO_PEAK_RESET = "added memory not measured: the peak resident set cannot be reset here (/proc/self/clear_refs)"


def measure_train_step(
    model: str | Path,
    size: tuple[int, int],
    batch: int = 2,
    grad_checkpointing: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
    warmup: int = 1,
    iters: int = 3,
    threads: int | None = None,
    cudnn_benchmark: bool = True,
) -> dict[str, Any]:
    """Time and memory of one training step, measured in this process (see the module docstring).

    On the CPU the memory figures are only meaningful in a fresh process with a low mmap threshold:
    :func:`benchmark_train_step` arranges that.

    Args:
        model: a variant name (``lrformer_b``) or a model YAML/JSON, built with its default
            drop-path rate and class count, in training mode.
        size: crop ``(H, W)`` of the random images (labels: random classes at the same size).
        batch: images per step.
        grad_checkpointing: ``model.set_grad_checkpointing(True)`` first.
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``.
        precision: ``fp32``, or ``bf16`` / ``fp16`` autocast as ``train.amp`` (fp16 with a grad scaler).
        warmup: untimed steps first, at least 1 (the first step creates the gradients and the
            optimizer state).
        iters: timed steps.
        threads: CPU threads (``torch.set_num_threads``); ``None``: PyTorch's default.
        cudnn_benchmark: cuDNN autotuning on CUDA, as ``train.cudnn_benchmark`` (default on).

    Returns:
        ``model``, ``height``, ``width``, ``batch``, ``grad_checkpointing``, ``device``, ``precision``,
        ``median_ms`` (median step time), ``images_per_s``, ``baseline_mb`` (memory before a step:
        weights, gradients, optimizer state, the batch; CPU: the resident set of the process),
        ``peak_mb`` (the highest during a step), ``added_mb`` (``peak_mb - baseline_mb``, the largest
        over the timed steps) and ``note`` (``""``, or why a figure is NaN).
    """
    if warmup < 1:
        raise ConfigError("a training-step benchmark needs at least one warm-up step (--warmup 1): the first "
                          "step creates the gradients and the optimizer state")  # fmt: skip
    device = torch.device(check_device(device, "--device", "--device cpu"))
    dtype = autocast_dtype(precision, device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = create_model(model).train().to(device)
    set_cudnn_autotuning(device, cudnn_benchmark)
    net.set_grad_checkpointing(grad_checkpointing)
    objective = TrainingObjective(net)
    recipe = OptimSettings()  # the default recipe's optimiser and clipping
    optimizer = build_optimizer(net, recipe)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    clip = recipe.clip_grad
    images = torch.randn(batch, 3, *size, device=device)
    labels = torch.randint(0, net.num_classes or 1, (batch, *size), device=device)

    def step() -> None:  # Trainer.train_step without the schedule and the cross-process loss average
        optimisation_step(objective, optimizer, scaler, images, labels, dtype, clip, net.parameters())

    for _ in range(warmup):
        step()
    meter = _CudaMemory(device) if device.type == "cuda" else _ResidentMemory()
    times, baselines, peaks, added = [], [], [], []
    for _ in range(iters):
        gc.collect()
        baseline = meter.start()
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        peak = meter.peak()
        baselines.append(baseline)
        peaks.append(peak)
        added.append(peak - baseline)
    median = statistics.median(times)
    return {
        "model": str(model),
        "height": size[0],
        "width": size[1],
        "batch": batch,
        "grad_checkpointing": grad_checkpointing,
        "device": str(device),
        "precision": precision,
        "median_ms": median * 1e3,
        "images_per_s": batch / median,
        "baseline_mb": min(baselines),
        "peak_mb": max(peaks),
        "added_mb": max(added),
        "note": meter.note,
    }


def benchmark_train_step(*args: Any, isolate: bool | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`measure_train_step` (same arguments and result), in a fresh subprocess when
    ``isolate`` (default: on the CPU, whose peak memory can only be measured that way; CUDA memory
    is measured in this process).

    The subprocess runs ``python -m lrformer.engine.step_benchmark`` with
    ``MALLOC_MMAP_THRESHOLD_=65536``; a mistake it finds (an unknown model, say) is raised here as
    :class:`~lrformer.errors.ConfigError` with its message.
    """
    bound = inspect.signature(measure_train_step).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments, model=str(bound.arguments["model"]), size=tuple(bound.arguments["size"]))
    arguments["device"] = check_device(arguments["device"], "--device", "--device cpu")
    if isolate is None:
        isolate = torch.device(arguments["device"]).type == "cpu"
    if not isolate:
        return measure_train_step(**arguments)
    return _run_isolated(arguments)


def _run_isolated(arguments: dict[str, Any]) -> dict[str, Any]:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "lrformer.engine.step_benchmark", json.dumps(arguments)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if "error" in answer:
        raise ConfigError(answer["error"])
    if done.returncode or "result" not in answer:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the measuring subprocess failed (exit code {done.returncode}): {last}")
    return answer["result"]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _CudaMemory:
    """Allocated CUDA memory before a step and the most allocated during it, in MB."""

    note = ""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> float:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device) / 2**20

    def peak(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**20


class _ResidentMemory:
    """The resident set before a step and its peak during it (``VmRSS``, ``VmHWM``), in MB."""

    def __init__(self) -> None:
        self.note = "" if _reset_peak_rss() else NO_PEAK_RESET

    def start(self) -> float:
        if self.note:
            return math.nan
        _reset_peak_rss()
        return _proc_status_mb("VmRSS")

    def peak(self) -> float:
        return peak_memory_mb("cpu") if self.note else _proc_status_mb("VmHWM")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set of this process to its current one (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return math.nan


def benchmark_data(
    config: TrainingConfig | dict[str, Any], workers: Sequence[int] = (0, 1, 2), batches_per_run: int = 10
) -> list[dict[str, Any]]:
    """Images per second of the training data pipeline of a training ``config``, for each
    worker count (``data.workers`` replaced).

    The pipeline is the trainer's: the ``data.train_split`` of ``data.dataset`` under ``data.root``,
    augmented as the ``data`` section says (:meth:`AugmentConfig.from_data_config`), batched by
    :func:`~lrformer.engine.data.batches` with ``data.batch_size`` in one process. A first batch
    (which starts the workers) is not timed; then ``batches_per_run`` batches are.

    Returns:
        one row per worker count: ``workers``, ``batch_size``, ``batches``, ``seconds``,
        ``images_per_s`` and ``images_per_s_per_worker`` (``images_per_s`` divided by the worker
        count; with 0 workers the main process does the work and counts as one).
    """
    config = TrainingConfig.coerce(config)
    data = config.data
    spec = load_spec(data.dataset)
    dataset = SegmentationDataset(spec, data.root, data.train_split)
    augment = AugmentConfig.from_data_config(data, spec.ignore_index)
    num_classes = config.model.num_classes or len(spec.classes)
    augmented = AugmentedDataset(dataset, augment, config.train.seed, num_classes)
    batch_size = data.batch_size
    rows = []
    for count in workers:
        stream = batches(augmented, batch_size, count, 0)
        try:
            next(stream)  # the workers start
            start = time.perf_counter()
            for _ in range(batches_per_run):
                next(stream)
            seconds = time.perf_counter() - start
        finally:
            stream.close()
        rate = batches_per_run * batch_size / seconds
        rows.append({"workers": count, "batch_size": batch_size, "batches": batches_per_run, "seconds": seconds,
                     "images_per_s": rate, "images_per_s_per_worker": rate / max(count, 1)})  # fmt: skip
    return rows


def _main(argv: list[str]) -> int:
    """Subprocess entry: ``measure_train_step(**json)``; prints ``{"result": ...}`` or ``{"error": ...}``."""
    arguments = json.loads(argv[0])
    arguments["size"] = tuple(arguments["size"])
    try:
        result = measure_train_step(**arguments)
    except (LRFormerError, ValueError, OSError, KeyError) as exc:  # the user's mistakes, as cli.main sees them
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(json.dumps({"error": message.strip().splitlines()[0] if message.strip() else type(exc).__name__}))
        return 2
    print(json.dumps({"result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
