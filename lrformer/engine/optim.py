"""Optimiser, learning-rate schedule and optimisation step of the official recipes.

AdamW over the parameter groups of :mod:`lrformer.engine.paramwise` (mmengine's ``paramwise_cfg``);
the schedule follows mmengine's iteration-based ``LinearLR`` warm-up and ``PolyLR`` decay, stepped
once per iteration.

Design notes: ``docs/design.md``, section 9 (training semantics).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .paramwise import (  # noqa: F401 (importable from here, as before)
    CUSTOM_KEY_FIELDS,
    NORM_TYPES,
    check_custom_keys,
    custom_key_for,
    expand_custom_keys,
    param_groups,
)
from .settings import OptimSettings, ScheduleSettings


def build_optimizer(model: nn.Module, cfg: OptimSettings | Mapping[str, Any]) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) over the recipe's parameter groups; ``cfg`` is the config's
    ``optim`` section (or a mapping of its keys, checked as a config is)."""
    cfg = OptimSettings.coerce(cfg)
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.custom_keys, cfg.norm_decay_mult)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_factor(iteration: int, cfg: ScheduleSettings | Mapping[str, Any]) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based), ``min_lr`` not applied.

    As mmengine's iteration-based schedulers, whose span is ``end − begin − 1`` iterations (the
    last iteration of a scheduler reaches its end value):

    * ``LinearLR(start_factor=r, begin=0, end=W)`` for ``t < W``: ``r + (1 − r)·t / (W − 1)``,
      so the full rate is reached at ``t = W − 1``;
    * ``PolyLR(power=p, begin=W, end=T)`` for ``t >= W``: ``(1 − (t − W) / (T − W − 1))^p``,
      which is 0 at ``t = T − 1`` (and stays 0).

    With ``W = warmup_iters``, ``T = max_iters``, ``r = warmup_ratio`` of ``cfg``, the config's
    ``schedule`` section (or a mapping of its keys).
    """
    cfg = ScheduleSettings.coerce(cfg)
    warmup, ratio = cfg.warmup_iters, cfg.warmup_ratio
    if iteration < warmup:
        return ratio + (1.0 - ratio) * iteration / (warmup - 1) if iteration else ratio
    span = cfg.max_iters - warmup - 1
    if span <= 0:  # a one-iteration decay: mmengine keeps the base rate
        return 1.0
    progress = min(iteration - warmup, span) / span
    return (1.0 - progress) ** cfg.power


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleSettings | Mapping[str, Any]
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule (:func:`lr_factor`) of ``cfg``, the config's ``schedule`` section (or
    a mapping of its keys); ``min_lr`` is PolyLR's ``eta_min``, an absolute floor for every group:
    ``lr = (base − min_lr)·factor + min_lr`` after the warm-up."""
    cfg = ScheduleSettings.coerce(cfg)
    bases = [g["lr"] for g in optimizer.param_groups]

    def factor_for(base: float):
        def factor(t: int) -> float:
            f = lr_factor(t, cfg)
            if t >= cfg.warmup_iters and cfg.min_lr and base:
                f = f * (1 - cfg.min_lr / base) + cfg.min_lr / base
            return f

        return factor

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(b) for b in bases])


def optimisation_step(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: torch.Tensor,
    labels: torch.Tensor,
    amp_dtype: torch.dtype | None = None,
    clip_grad: float | None = None,
    parameters: Iterable[torch.Tensor] = (),
) -> torch.Tensor:
    """One update of the recipe, without the schedule: the loss of ``objective(images, labels)``
    (``images`` ``(B, 3, H, W)``, ``labels`` ``(B, H, W)``) under autocast to ``amp_dtype`` (``None``:
    none), backward through ``scaler`` (fp16 loss scaling; a disabled scaler passes through), the
    global norm of the gradients of ``parameters`` clipped to ``clip_grad`` (mmengine's
    ``clip_grad=dict(max_norm=...)``) and the optimizer step. Returns the loss, detached."""
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss, _ = objective(images, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, clip_grad)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()
