"""Training checkpoints: written atomically, the last K kept plus the best by validation mIoU, and
the choice of the one to resume from."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..models.weights import load_failure
from ..utils import atomic_path
from .distributed import restart_count, run_id

logger = logging.getLogger("lrformer.train")

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


def checkpoint_to_resume(
    work_dir: Path, resume: bool | str | Path, max_iters: int
) -> tuple[Path | None, dict[str, Any] | None]:
    """``(path, training state)`` of ``resume`` (a file), or with ``True`` of the newest readable
    checkpoint of ``work_dir`` (unreadable ones skipped with a warning), checked against the
    schedule's ``max_iters``; ``(None, None)`` when the work dir has none."""
    found = resumable(work_dir)  # (iteration, path), oldest first
    candidates = [p for _, p in reversed(found)] if resume is True else [Path(resume)]
    if not candidates:
        logger.info("no checkpoint in %s: starting from scratch", work_dir)
        return None, None
    for path in candidates:
        try:
            state = read_training_state(path)
            break
        except CheckpointError as exc:
            if resume is not True:
                raise
            logger.warning("skipping %s: %s", path.name, exc)
    else:
        raise CheckpointError(
            f"no checkpoint in {work_dir} can be read ({', '.join(p.name for p in candidates)}): "
            "resume from another file with --resume FILE, or start over with --force"
        )
    newer = [p.name for i, p in found if i > state["iteration"]]
    if newer:
        logger.warning("resuming from %s: the newer %s are replaced as this run reaches them",
                       path.name, ", ".join(newer))  # fmt: skip
    if state["iteration"] > max_iters:
        raise ConfigError(
            f"{path.name} is at iteration {state['iteration']}, past schedule.max_iters "
            f"{max_iters}: raise schedule.max_iters to continue it"
        )
    if state["iteration"] == max_iters:
        logger.warning("%s is the end of the schedule (iteration %d): the run is already complete",
                       path.name, state["iteration"])  # fmt: skip
    return path, state


def restart_checkpoint(work_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """After torchrun restarted the workers (``--max-restarts``): the newest readable checkpoint
    this run wrote before (its ``elastic_run`` is this run's id), else ``None`` — the attempt then
    starts as the first one did."""
    attempt = restart_count()
    if attempt == 0:
        return None
    for _, path in reversed(resumable(work_dir)):
        try:
            state = read_training_state(path)
        except CheckpointError as exc:
            logger.warning("restart %d: skipping %s: %s", attempt, path.name, exc)
            continue
        if state.get("elastic_run") == run_id():
            logger.warning("restart %d: resuming from %s at iteration %d", attempt, path, state["iteration"])
            return path, state
    logger.warning("restart %d: this run wrote no checkpoint yet; starting as the first attempt did", attempt)
    return None


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
