"""The iteration-based trainer: one process, or many under torchrun (DDP + SyncBatchNorm).

Design notes: ``docs/design.md``, section 9 (training semantics).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from ..data.augment import AugmentConfig
from ..data.datasets import SegmentationDataset, load_spec
from ..devices import check_device, set_cudnn_autotuning
from ..errors import CheckpointError, ConfigError, LRFormerError
from ..evaluation import evaluate
from ..inference.predictor import model_defaults
from ..models import create_model
from ..models.checkpoint import load_checkpoint
from ..models.factory import describe
from ..utils import peak_memory_mb, require_extra
from . import checkpointing, workdir
from .data import AugmentedDataset, batches
from .distributed import broadcast_from_main, device_for, init_distributed, restart_count, run_id
from .losses import TrainingObjective
from .optim import build_optimizer, build_scheduler, optimisation_step
from .sync_bn import synchronise_batchnorm

logger = logging.getLogger("lrformer.train")

# DDP's hint for depth-wise (C, 1, 3, 3) weights, whose channels-last gradients it copies into its buckets
warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides", UserWarning)


FP16_NONFINITE_TOLERANCE = 20
"""Consecutive non-finite fp16 losses (steps the grad scaler skips) tolerated before stopping."""


class TrainingDiverged(LRFormerError, RuntimeError):
    """The loss became NaN or infinite (the message names the iteration and the last good checkpoint)."""


class Trainer:
    """Trains a segmentation model from a resolved config (see :mod:`lrformer.engine.config`).

    Args:
        config: the resolved configuration.
        work_dir: where checkpoints, ``config.yaml`` and TensorBoard logs go.
        resume: ``True`` for the newest readable checkpoint in ``work_dir``, or a checkpoint path.
        force: delete the checkpoints of an earlier run in ``work_dir`` and start over (without it,
            and without ``resume``, such a work dir is refused; see :mod:`lrformer.engine.workdir`).
        callbacks: functions called with the trainer after every iteration.
    """

    def __init__(
        self,
        config: dict[str, Any],
        work_dir: str | Path,
        resume: bool | str | Path | None = None,
        callbacks: list[Callable[[Trainer], None]] = (),
        force: bool = False,
    ) -> None:
        self.cfg = config
        self.work_dir = Path(work_dir)
        self.callbacks = list(callbacks)
        train_cfg, data_cfg = config["train"], config["data"]
        # the training extra, asked for before anything is written
        self._tensorboard = require_extra(
            "torch.utils.tensorboard", "train", "training (TensorBoard logs)", package="tensorboard"
        )
        if str(config["model"]["name"]).endswith("_plus"):
            require_extra("scipy", "train", "training LRFormer+ (Hungarian matching)")
        check_device(train_cfg["device"], "train.device", "--set train.device=cpu")  # before joining a process group
        self.dist = init_distributed(train_cfg["device"])
        self.device = device_for(train_cfg["device"], self.dist)
        torch.manual_seed(train_cfg["seed"] + self.dist.rank)

        spec = load_spec(data_cfg["dataset"])
        self.train_set = SegmentationDataset(spec, data_cfg["root"], data_cfg["train_split"])
        self.val_set = (
            SegmentationDataset(spec, data_cfg["root"], data_cfg["val_split"]) if train_cfg["val_interval"] else None
        )
        if self.val_set is not None and train_cfg["val_max_images"]:
            self.val_set.samples = self.val_set.samples[: train_cfg["val_max_images"]]
        self.augment = AugmentConfig.from_data_config(data_cfg, spec.ignore_index)

        model_cfg = config["model"]
        self.model = create_model(
            model_cfg["name"], num_classes=model_cfg["num_classes"] or len(spec.classes),
            pretrained=model_cfg["pretrained"], strict=model_cfg["strict"], drop_path_rate=model_cfg["drop_path_rate"],
            **model_cfg["overrides"],
        ).train()  # fmt: skip
        # validation as the official test pipeline of the model (LRFormer+: resize and pad; L: its
        # 640 scale) on top of the dataset's settings, then the config's `test` section
        self.test_config = replace(model_defaults(self.model, spec.test), **_tuples(config["test"]))
        # what every checkpoint carries so that it can be used on its own (predict / eval / export)
        self.description = describe(self.model, spec.classes, spec.palette, asdict(self.test_config))
        if model_cfg["backbone_checkpoint"]:  # ImageNet weights, or the backbone of a segmentation checkpoint
            load_checkpoint(self.model.backbone, model_cfg["backbone_checkpoint"], strict=model_cfg["strict"])
        if train_cfg["grad_checkpoint"]:  # blocks recompute their activations in the backward pass
            self.model.set_grad_checkpointing(True)
        self.model.to(self.device)
        set_cudnn_autotuning(self.device, train_cfg["cudnn_benchmark"])
        if self.dist.enabled:
            self.model = synchronise_batchnorm(self.model, self.device, train_cfg["sync_bn"])
        self.optimizer = build_optimizer(self.model, config["optim"])
        if self.dist.is_main:
            for group in self.optimizer.param_groups:
                logger.info(
                    "parameter group: %d tensors, lr %.3g (x%g), weight decay %.3g (x%g)", len(group["params"]),
                    group["lr"], group["lr_mult"], group["weight_decay"], group["decay_mult"],
                )  # fmt: skip
        self.scheduler = build_scheduler(self.optimizer, config["schedule"])
        amp = train_cfg["amp"]
        if amp not in (None, "bf16", "fp16"):
            raise ValueError(f"train.amp must be null, bf16 or fp16, got {amp!r}")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.objective: torch.nn.Module = TrainingObjective(self.model, spec.ignore_index)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # mmengine's wrapper: no buffer broadcast, so per-process BatchNorm statistics stay each rank's own
            # (torch 2.13 deprecates the argument, but says to keep it for rank-local buffers)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
                self.objective = torch.nn.parallel.DistributedDataParallel(
                    self.objective, device_ids=ids, broadcast_buffers=False
                )
        if train_cfg["compile"]:
            self.objective = torch.compile(self.objective)
        self.iteration = 0
        self.best_miou = -1.0
        self._rng_states: list | None = None  # every rank's RNG state, gathered when checkpointing
        self._nonfinite = 0
        self.last_checkpoint: Path | None = None
        # the main process owns the work dir (a lock, stale temporaries removed, earlier runs refused)
        # and chooses the checkpoint to resume; every process loads that one
        self._lock = None
        try:
            path, state = None, None
            if self.dist.is_main:
                restart = self._restart_checkpoint()
                if restart is not None:  # torchrun restarted the group: continue this run, delete nothing
                    resume, force = restart[0], False
                self._lock = workdir.claim(self.work_dir, bool(resume), force)
                path, state = restart or (self._checkpoint_to_resume(resume) if resume else (None, None))
            path = broadcast_from_main(path)
            if path is not None:
                self._load_state(state or checkpointing.read_training_state(path), path)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self.writer = None

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "rng": self._rng_states if self._rng_states is not None else [checkpointing.rng_state(self.device)],
            "config": self.cfg,
            "lrformer": self.description,
            "elastic_run": run_id(),  # torchrun's run id: a restarted attempt resumes only its own run's files
        }

    def _checkpoint_to_resume(self, resume: bool | str | Path) -> tuple[Path | None, dict[str, Any] | None]:
        """``resume`` (a file), or with ``True`` the newest readable checkpoint of the work dir
        (unreadable ones skipped with a warning), checked against the schedule; ``(None, None)``
        when the work dir has none."""
        found = checkpointing.resumable(self.work_dir)  # (iteration, path), oldest first
        candidates = [p for _, p in reversed(found)] if resume is True else [Path(resume)]
        if not candidates:
            logger.info("no checkpoint in %s: starting from scratch", self.work_dir)
            return None, None
        for path in candidates:
            try:
                state = checkpointing.read_training_state(path)
                break
            except CheckpointError as exc:
                if resume is not True:
                    raise
                logger.warning("skipping %s: %s", path.name, exc)
        else:
            raise CheckpointError(
                f"no checkpoint in {self.work_dir} can be read ({', '.join(p.name for p in candidates)}): "
                "resume from another file with --resume FILE, or start over with --force"
            )
        newer = [p.name for i, p in found if i > state["iteration"]]
        if newer:
            logger.warning("resuming from %s: the newer %s are replaced as this run reaches them",
                           path.name, ", ".join(newer))  # fmt: skip
        if state["iteration"] > self.cfg["schedule"]["max_iters"]:
            raise ConfigError(
                f"{path.name} is at iteration {state['iteration']}, past schedule.max_iters "
                f"{self.cfg['schedule']['max_iters']}: raise schedule.max_iters to continue it"
            )
        if state["iteration"] == self.cfg["schedule"]["max_iters"]:
            logger.warning("%s is the end of the schedule (iteration %d): the run is already complete",
                           path.name, state["iteration"])  # fmt: skip
        return path, state

    def _restart_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """After torchrun restarted the workers (``--max-restarts``): the newest readable checkpoint
        this run wrote before (its ``elastic_run`` is this run's id), else ``None`` — the attempt then
        starts as the first one did."""
        attempt = restart_count()
        if attempt == 0:
            return None
        for _, path in reversed(checkpointing.resumable(self.work_dir)):
            try:
                state = checkpointing.read_training_state(path)
            except CheckpointError as exc:
                logger.warning("restart %d: skipping %s: %s", attempt, path.name, exc)
                continue
            if state.get("elastic_run") == run_id():
                logger.warning("restart %d: resuming from %s at iteration %d", attempt, path, state["iteration"])
                return path, state
        logger.warning("restart %d: this run wrote no checkpoint yet; starting as the first attempt did", attempt)
        return None

    def _load_state(self, state: dict[str, Any], path: Path) -> None:
        load_checkpoint(self.model, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when the run that saved it did not use fp16
            self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.best_miou = state["iteration"], state["best_miou"]
        if len(state["rng"]) == self.dist.world_size:
            checkpointing.set_rng_state(state["rng"][self.dist.rank], self.device)
        else:
            logger.warning(
                "the checkpoint holds the RNG states of %d process(es), this run has %d: reseeding, so "
                "stochastic depth and dropout draws will differ from an uninterrupted run",
                len(state["rng"]), self.dist.world_size,
            )  # fmt: skip
            torch.manual_seed(self.cfg["train"]["seed"] + self.dist.rank + self.iteration)
        self.last_checkpoint = path
        logger.info("resumed from %s at iteration %d", path, self.iteration)

    def save_checkpoint(self) -> None:
        self._rng_states = checkpointing.gather_rng_states(self.device)  # collective: on every rank
        if self.dist.is_main:
            path = self.work_dir / f"iter_{self.iteration}.pth"
            try:
                checkpointing.save(path, self.state())
            except CheckpointError as exc:
                raise CheckpointError(
                    f"{exc} The last good checkpoint is {self.last_checkpoint or '(none yet)'}: free space and "
                    "rerun with --resume"
                ) from exc
            checkpointing.prune(self.work_dir, self.cfg["train"]["keep_checkpoints"], up_to=self.iteration)
            self.last_checkpoint = path

    # ------------------------------------------------------------------ loop
    def validate(self) -> dict[str, float]:
        metrics = evaluate(
            self.model, self.val_set, self.test_config, 1, self.cfg["data"]["workers"], self.device, progress=False
        )
        self.model.train()
        result = {"mIoU": metrics.mIoU * 100, "aAcc": metrics.aAcc * 100, "mAcc": metrics.mAcc * 100}
        improved = result["mIoU"] > self.best_miou  # the metrics are all-reduced: the same on every rank
        if improved:
            self.best_miou = result["mIoU"]
            # every rank's RNG state (a collective), so that resuming from the best checkpoint is exact too
            self._rng_states = checkpointing.gather_rng_states(self.device)
        if self.dist.is_main:
            logger.info("iter %d validation: mIoU %.2f  aAcc %.2f  mAcc %.2f", self.iteration, *result.values())
            for key, value in result.items():
                self._scalar(f"val/{key}", value)
            if improved:
                checkpointing.save_best(self.work_dir, self.state(), self.iteration)
        return result

    def _scalar(self, tag: str, value: float) -> None:
        """Record a scalar in TensorBoard and in ``scalars.jsonl`` (one JSON object per line)."""
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.iteration)
        if self.dist.is_main:
            with open(self.work_dir / "scalars.jsonl", "a") as log:
                log.write(json.dumps({"iter": self.iteration, "tag": tag, "value": value}) + "\n")

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimisation step; returns the loss averaged over processes."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        value = optimisation_step(
            self.objective, self.optimizer, self.scaler, images, labels, self.amp_dtype, self.cfg["optim"]["clip_grad"],
            self.model.parameters(),
        )  # fmt: skip
        self.scheduler.step()
        if self.dist.enabled:
            torch.distributed.all_reduce(value)
            value /= self.dist.world_size
        return float(value)

    def train(self) -> Path | None:
        """Run to ``schedule.max_iters``; returns the last checkpoint written."""
        from tqdm import tqdm

        train_cfg = self.cfg["train"]
        max_iters = self.cfg["schedule"]["max_iters"]
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            (self.work_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg, sort_keys=False))
            self.writer = self._tensorboard.SummaryWriter(str(self.work_dir / "tensorboard"))
        data = batches(
            AugmentedDataset(self.train_set, self.augment, train_cfg["seed"], self.model.num_classes),
            self.cfg["data"]["batch_size"], self.cfg["data"]["workers"], self.iteration, self.dist.rank,
            self.dist.world_size,
        )  # fmt: skip
        bar = tqdm(total=max_iters, initial=self.iteration, unit="it", disable=not self.dist.is_main, file=sys.stderr)
        try:
            self._loop(data, bar)
        finally:  # an error message then starts on its own line, after the progress bar
            data.close()  # stops the loader's workers
            bar.close()
            if self.writer is not None:
                self.writer.close()
            if self._lock is not None:
                self._lock.release()
        return self.last_checkpoint

    def _loop(self, data, bar) -> None:
        """Iterations until ``schedule.max_iters``: step, log, validate, checkpoint, callbacks."""
        train_cfg = self.cfg["train"]
        max_iters = self.cfg["schedule"]["max_iters"]
        window: list[tuple[float, float, float]] = []
        start = time.perf_counter()
        while self.iteration < max_iters:
            tick = time.perf_counter()
            images, labels = next(data)
            data_time = time.perf_counter() - tick
            lr = self.optimizer.param_groups[0]["lr"]
            loss = self.train_step(images, labels)
            self._nonfinite = 0 if math.isfinite(loss) else self._nonfinite + 1
            # fp16: the grad scaler skips steps with inf/nan gradients; only a streak is divergence
            if self._nonfinite > (FP16_NONFINITE_TOLERANCE if self.amp_dtype == torch.float16 else 0):
                raise TrainingDiverged(
                    f"the loss is {loss} at iteration {self.iteration + 1}; stopping. The last good checkpoint is "
                    f"{self.last_checkpoint or '(none written yet)'}. Lower optim.lr, or try train.amp=bf16 / null."
                )
            self.iteration += 1
            window.append((loss, data_time, time.perf_counter() - tick))
            bar.update(1)
            if self.iteration % train_cfg["log_interval"] == 0 or self.iteration == max_iters:
                self._log(window, lr, start, bar)
                window = []
            if self.val_set is not None and (
                self.iteration % train_cfg["val_interval"] == 0 or self.iteration == max_iters
            ):
                self.validate()
            if self.iteration % train_cfg["checkpoint_interval"] == 0 or self.iteration == max_iters:
                self.save_checkpoint()
            for callback in self.callbacks:
                callback(self)

    def _log(self, window: list[tuple[float, float, float]], lr: float, start: float, bar) -> None:
        if not self.dist.is_main or not window:
            return
        loss = sum(w[0] for w in window) / len(window)
        data_time = sum(w[1] for w in window) / len(window)
        step_time = sum(w[2] for w in window) / len(window)
        remaining = (self.cfg["schedule"]["max_iters"] - self.iteration) * step_time
        memory = peak_memory_mb(self.device)
        bar.write(
            f"iter {self.iteration}/{self.cfg['schedule']['max_iters']}  lr {lr:.3e}  loss {loss:.4f}  "
            f"data {data_time:.3f}s  step {step_time:.3f}s  eta {datetime.timedelta(seconds=int(remaining))}  "
            f"mem {memory:.0f}MB",
            file=sys.stderr,
        )
        for tag, value in (("train/loss", loss), ("train/lr", lr), ("train/step_time", step_time)):
            self._scalar(tag, value)


def _tuples(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
