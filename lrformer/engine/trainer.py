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
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml

from ..data.augment import AugmentConfig
from ..data.datasets import SegmentationDataset, load_spec
from ..devices import check_device, set_cudnn_autotuning
from ..errors import CheckpointError, LRFormerError
from ..evaluation import evaluate
from ..image.pipeline import InferenceConfig
from ..inference.predictor import model_defaults
from ..models import create_model
from ..models.factory import model_description
from ..models.weight_loading import load_checkpoint
from ..utils import peak_memory_mb, require_extra
from . import training_checkpoints, workdir
from .data import AugmentedDataset, batches
from .distributed import (
    broadcast_from_main,
    device_for,
    init_distributed,
    process_group_exists,
    run_id,
    shutdown,
)
from .losses import TrainingObjective
from .optim import build_optimizer, build_scheduler, optimisation_step
from .settings import TrainingConfig
from .sync_bn import synchronise_batchnorm

logger = logging.getLogger("lrformer.train")

# DDP's hint for depth-wise (C, 1, 3, 3) weights, whose channels-last gradients it copies into its buckets
warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides", UserWarning)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""``train.amp`` → the autocast dtype (``null``: full precision)."""

FP16_NONFINITE_TOLERANCE = 20
"""Consecutive non-finite fp16 losses (steps the grad scaler skips) tolerated before stopping."""


class TrainingDiverged(LRFormerError, RuntimeError):
    """The loss became NaN or infinite (the message names the iteration and the last good checkpoint)."""


class Trainer:
    """Trains a segmentation model from a training config (see :mod:`lrformer.engine.config`).

    Building it joins the process group (under torchrun), builds the datasets, the model, the
    optimiser and the training objective, locks the work dir and resumes. Use it as a context
    manager, or call :meth:`close`, to release the lock (and the process group it created) even
    when training stops early; :meth:`train` releases the lock itself when it returns::

        with Trainer(load_config("demo"), "work_dirs/demo") as trainer:
            trainer.train()

    Args:
        config: the config (a :class:`~lrformer.engine.settings.TrainingConfig`, or its plain-dict
            form as checkpoints hold it); checked again here.
        work_dir: where checkpoints, ``config.yaml`` and TensorBoard logs go.
        resume: ``True`` for the newest readable checkpoint in ``work_dir``, or a checkpoint path.
        callbacks: functions called with the trainer after every iteration.
        force: delete the checkpoints of an earlier run in ``work_dir`` and start over (without it,
            and without ``resume``, such a work dir is refused; see :mod:`lrformer.engine.workdir`).
    """

    def __init__(
        self,
        config: TrainingConfig | Mapping[str, Any],
        work_dir: str | Path,
        resume: bool | str | Path | None = None,
        callbacks: list[Callable[[Trainer], None]] = (),
        force: bool = False,
    ) -> None:
        self.cfg = TrainingConfig.from_dict(config)
        self.work_dir = Path(work_dir)
        self.callbacks = list(callbacks)
        self.iteration = 0
        self.best_miou = -1.0
        self.last_checkpoint: Path | None = None
        self.writer = None
        self._rng_states: list | None = None  # every rank's RNG state, gathered when checkpointing
        self._nonfinite = 0
        self._lock: workdir.WorkDirLock | None = None
        self._owns_process_group = False
        try:
            self._require_extras()
            self._join_process_group()
            self._build_data()
            self._build_model()
            self._build_optimizer()
            self._build_objective()
            self._claim_work_dir(resume, force)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ build steps, in order
    def _require_extras(self) -> None:
        """The training extra, asked for before anything is written."""
        self._tensorboard = require_extra(
            "torch.utils.tensorboard", "train", "training (TensorBoard logs)", package="tensorboard"
        )
        if str(self.cfg.model.name).endswith("_plus"):
            require_extra("scipy", "train", "training LRFormer+ (Hungarian matching)")

    def _join_process_group(self) -> None:
        """The process group torchrun describes (none for one process), this process's device and seed."""
        device = self.cfg.train.device
        check_device(device, "train.device", "--set train.device=cpu")  # before joining a process group
        existed = process_group_exists()
        self.dist = init_distributed(device)
        self._owns_process_group = process_group_exists() and not existed  # close() then destroys it
        self.device = device_for(device, self.dist)
        torch.manual_seed(self.cfg.train.seed + self.dist.rank)

    def _build_data(self) -> None:
        """The dataset description, the training and validation sets, the training augmentation."""
        data = self.cfg.data
        self.spec = load_spec(data.dataset)
        self.train_set = SegmentationDataset(self.spec, data.root, data.train_split)
        self.val_set = (
            SegmentationDataset(self.spec, data.root, data.val_split) if self.cfg.train.val_interval else None
        )
        if self.val_set is not None and self.cfg.train.val_max_images:
            self.val_set.samples = self.val_set.samples[: self.cfg.train.val_max_images]
        self.augment = AugmentConfig.from_data_config(data, self.spec.ignore_index)

    def _build_model(self) -> None:
        """The model with its initial weights, its validation settings and its description, on the device."""
        model, train = self.cfg.model, self.cfg.train
        self.model = create_model(
            model.name, num_classes=model.num_classes or len(self.spec.classes), pretrained=model.pretrained,
            strict=model.strict, drop_path_rate=model.drop_path_rate, **model.overrides,
        ).train()  # fmt: skip
        # validation as the official test pipeline of the model (LRFormer+: resize and pad; L: its
        # 640 scale) on top of the dataset's settings, then the config's `test` section
        self.test_config = InferenceConfig.from_dict(self.cfg.test, base=model_defaults(self.model, self.spec.test))
        # what every checkpoint carries so that it can be used on its own (predict / eval / export)
        self.description = model_description(self.model, self.spec.classes, self.spec.palette, asdict(self.test_config))
        if model.backbone_checkpoint:  # ImageNet weights, or the backbone of a segmentation checkpoint
            load_checkpoint(self.model.backbone, model.backbone_checkpoint, strict=model.strict)
        if train.grad_checkpoint:  # blocks recompute their activations in the backward pass
            self.model.set_grad_checkpointing(True)
        self.model.to(self.device)
        set_cudnn_autotuning(self.device, train.cudnn_benchmark)
        if self.dist.enabled:
            self.model = synchronise_batchnorm(self.model, self.device, train.sync_bn)

    def _build_optimizer(self) -> None:
        """AdamW over the recipe's parameter groups (logged), the schedule, the fp16 grad scaler."""
        self.optimizer = build_optimizer(self.model, self.cfg.optim)
        if self.dist.is_main:
            for group in self.optimizer.param_groups:
                logger.info(
                    "parameter group: %d tensors, lr %.3g (x%g), weight decay %.3g (x%g)", len(group["params"]),
                    group["lr"], group["lr_mult"], group["weight_decay"], group["decay_mult"],
                )  # fmt: skip
        self.scheduler = build_scheduler(self.optimizer, self.cfg.schedule)
        self.amp_dtype = AMP_DTYPES.get(self.cfg.train.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def _build_objective(self) -> None:
        """The loss of the model (DDP-wrapped under torchrun, compiled when asked)."""
        self.objective: torch.nn.Module = TrainingObjective(self.model, self.spec.ignore_index)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # mmengine's wrapper: no buffer broadcast, so per-process BatchNorm statistics stay each rank's own
            # (torch 2.13 deprecates the argument, but says to keep it for rank-local buffers)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
                self.objective = torch.nn.parallel.DistributedDataParallel(
                    self.objective, device_ids=ids, broadcast_buffers=False
                )
        if self.cfg.train.compile:
            self.objective = torch.compile(self.objective)

    def _claim_work_dir(self, resume: bool | str | Path | None, force: bool) -> None:
        """The main process locks the work dir (stale temporaries removed, earlier runs refused) and
        chooses the checkpoint to resume; every process loads that one."""
        path, state = None, None
        if self.dist.is_main:
            restart = training_checkpoints.restart_checkpoint(self.work_dir)  # torchrun restarted the group
            if restart is not None:  # continue this run, delete nothing
                resume, force = restart[0], False
            self._lock = workdir.claim(self.work_dir, bool(resume), force)
            if restart is not None:
                path, state = restart
            elif resume:
                path, state = training_checkpoints.checkpoint_to_resume(self.work_dir, resume, self.cfg.schedule.max_iters)
        path = broadcast_from_main(path)
        if path is not None:
            self._load_state(state or training_checkpoints.read_training_state(path), path)

    # ------------------------------------------------------------------ release
    def close(self) -> None:
        """Release the work-dir lock, and destroy the process group if this trainer created it.
        Safe to call more than once; the model, optimiser and state stay usable."""
        if self._lock is not None:
            self._lock.release()
        if self._owns_process_group:
            shutdown()
            self._owns_process_group = False

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "rng": self._rng_states if self._rng_states is not None else [training_checkpoints.rng_state(self.device)],
            "config": self.cfg.to_dict(),
            "lrformer": self.description,
            "elastic_run": run_id(),  # torchrun's run id: a restarted attempt resumes only its own run's files
        }

    def _load_state(self, state: dict[str, Any], path: Path) -> None:
        load_checkpoint(self.model, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when the run that saved it did not use fp16
            self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.best_miou = state["iteration"], state["best_miou"]
        if len(state["rng"]) == self.dist.world_size:
            training_checkpoints.set_rng_state(state["rng"][self.dist.rank], self.device)
        else:
            logger.warning(
                "the checkpoint holds the RNG states of %d process(es), this run has %d: reseeding, so "
                "stochastic depth and dropout draws will differ from an uninterrupted run",
                len(state["rng"]), self.dist.world_size,
            )  # fmt: skip
            torch.manual_seed(self.cfg.train.seed + self.dist.rank + self.iteration)
        self.last_checkpoint = path
        logger.info("resumed from %s at iteration %d", path, self.iteration)

    def save_checkpoint(self) -> None:
        self._rng_states = training_checkpoints.gather_rng_states(self.device)  # collective: on every rank
        if self.dist.is_main:
            path = self.work_dir / f"iter_{self.iteration}.pth"
            try:
                training_checkpoints.save(path, self.state())
            except CheckpointError as exc:
                raise CheckpointError(
                    f"{exc} The last good checkpoint is {self.last_checkpoint or '(none yet)'}: free space and "
                    "rerun with --resume"
                ) from exc
            training_checkpoints.prune(self.work_dir, self.cfg.train.keep_checkpoints, up_to=self.iteration)
            self.last_checkpoint = path

    # ------------------------------------------------------------------ loop
    def validate(self) -> dict[str, float]:
        metrics = evaluate(
            self.model, self.val_set, self.test_config, 1, self.cfg.data.workers, self.device, progress=False
        )
        self.model.train()
        result = {"mIoU": metrics.mIoU * 100, "aAcc": metrics.aAcc * 100, "mAcc": metrics.mAcc * 100}
        improved = result["mIoU"] > self.best_miou  # the metrics are all-reduced: the same on every rank
        if improved:
            self.best_miou = result["mIoU"]
            # every rank's RNG state (a collective), so that resuming from the best checkpoint is exact too
            self._rng_states = training_checkpoints.gather_rng_states(self.device)
        if self.dist.is_main:
            logger.info("iter %d validation: mIoU %.2f  aAcc %.2f  mAcc %.2f", self.iteration, *result.values())
            for key, value in result.items():
                self._scalar(f"val/{key}", value)
            if improved:
                training_checkpoints.save_best(self.work_dir, self.state(), self.iteration)
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
            self.objective, self.optimizer, self.scaler, images, labels, self.amp_dtype, self.cfg.optim.clip_grad,
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

        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            (self.work_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            self.writer = self._tensorboard.SummaryWriter(str(self.work_dir / "tensorboard"))
        data = batches(
            AugmentedDataset(self.train_set, self.augment, self.cfg.train.seed, self.model.num_classes),
            self.cfg.data.batch_size, self.cfg.data.workers, self.iteration, self.dist.rank, self.dist.world_size,
        )  # fmt: skip
        max_iters = self.cfg.schedule.max_iters
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
        train_cfg = self.cfg.train
        max_iters = self.cfg.schedule.max_iters
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
            if self.iteration % train_cfg.log_interval == 0 or self.iteration == max_iters:
                self._log(window, lr, start, bar)
                window = []
            if self.val_set is not None and (
                self.iteration % train_cfg.val_interval == 0 or self.iteration == max_iters
            ):
                self.validate()
            if self.iteration % train_cfg.checkpoint_interval == 0 or self.iteration == max_iters:
                self.save_checkpoint()
            for callback in self.callbacks:
                callback(self)

    def _log(self, window: list[tuple[float, float, float]], lr: float, start: float, bar) -> None:
        if not self.dist.is_main or not window:
            return
        loss = sum(w[0] for w in window) / len(window)
        data_time = sum(w[1] for w in window) / len(window)
        step_time = sum(w[2] for w in window) / len(window)
        remaining = (self.cfg.schedule.max_iters - self.iteration) * step_time
        memory = peak_memory_mb(self.device)
        bar.write(
            f"iter {self.iteration}/{self.cfg.schedule.max_iters}  lr {lr:.3e}  loss {loss:.4f}  "
            f"data {data_time:.3f}s  step {step_time:.3f}s  eta {datetime.timedelta(seconds=int(remaining))}  "
            f"mem {memory:.0f}MB",
            file=sys.stderr,
        )
        for tag, value in (("train/loss", loss), ("train/lr", lr), ("train/step_time", step_time)):
            self._scalar(tag, value)
