"""Training checkpoints: written atomically, the last K kept plus the best by validation mIoU."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..models.weights import load_failure
from ..utils import atomic_path

ITER_PATTERN = re.compile(r"^iter_(\d+)\.pth$")
BEST_PATTERN = re.compile(r"^best_mIoU_iter_(\d+)\.pth$")


def save(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically; a failed write (e.g. a full disk) raises
    :class:`~lrformer.errors.CheckpointError` and leaves no partial file."""
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as exc:  # torch's writer reports a full disk as a RuntimeError
        reason = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(f"cannot write the checkpoint {path} ({reason}); is the disk full?") from exc


def iteration_checkpoints(work_dir: Path, pattern: re.Pattern = ITER_PATTERN) -> list[tuple[int, Path]]:
    """``iter_N.pth`` files (or those of ``pattern``) in ``work_dir``, oldest first."""
    found = [(int(m.group(1)), p) for p in work_dir.glob("*.pth") if (m := pattern.match(p.name)) and p.is_file()]
    return sorted(found)


def resumable(work_dir: Path) -> list[tuple[int, Path]]:
    """Every checkpoint a run can continue from (``iter_N.pth`` and ``best_mIoU_iter_N.pth``), oldest first."""
    return sorted(iteration_checkpoints(work_dir) + iteration_checkpoints(work_dir, BEST_PATTERN))


def prune(work_dir: Path, keep: int, up_to: int) -> None:
    """Delete all but the newest ``keep`` iteration checkpoints up to iteration ``up_to`` (the
    current run's); later ones (a run resumed from an older file) and the best one are kept."""
    own = [path for iteration, path in iteration_checkpoints(work_dir) if iteration <= up_to]
    for path in own[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)


TRAINING_KEYS = ("state_dict", "optimizer", "scheduler", "scaler", "iteration", "best_miou", "rng")


def read_training_state(path: Path) -> dict[str, Any]:
    """A checkpoint written by the trainer, loaded without executing code (``weights_only``).

    Raises :class:`~lrformer.errors.CheckpointError` naming the file when it is missing, damaged,
    unsafe (pickled code) or not a training checkpoint.
    """
    if Path(path).is_dir():
        raise CheckpointError(
            f"--resume {path} is a folder: give a checkpoint file, or --resume alone for the newest one"
        )
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, a pickle with code in it
        raise CheckpointError(
            f"{path} cannot be read as a training checkpoint: {load_failure(exc)}; resume from another one "
            "(--resume alone takes the newest readable one in the work dir) or start over with --force"
        ) from None
    missing = [k for k in TRAINING_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint of lrformer train (no {', '.join(missing)}): to start from its "
            f"weights, use --set model.pretrained={path} (whole model) or model.backbone_checkpoint"
        )
    return state


def save_best(work_dir: Path, state: dict[str, Any], iteration: int) -> Path:
    """Write ``best_mIoU_iter_N.pth`` and remove the previous best of this run (earlier
    iterations; a later one is from a run this one resumed before, and is kept)."""
    path = work_dir / f"best_mIoU_iter_{iteration}.pth"
    save(path, state)
    for old_iteration, old in iteration_checkpoints(work_dir, BEST_PATTERN):
        if old_iteration < iteration:
            old.unlink(missing_ok=True)
    return path


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG state: CPU, and its own CUDA device's when it trains on one."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_rng_states(device: torch.device) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (a collective: call it on all ranks)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [rng_state(device)]
    states: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, rng_state(device))
    return states
