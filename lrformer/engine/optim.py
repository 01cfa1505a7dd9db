"""Optimiser, parameter groups and learning-rate schedule of the official recipe (SPEC §11)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def custom_key_for(name: str, custom_keys: dict[str, dict[str, float]]) -> str | None:
    """mmengine's rule: the first custom key contained in the full parameter name, trying keys
    longest first, then alphabetically; only that key applies."""
    for key in sorted(custom_keys, key=lambda k: (-len(k), k)):
        if key in name:
            return key
    return None


NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    custom_keys: dict[str, dict[str, float]],
    norm_decay_mult: float | None = None,
) -> list[dict[str, Any]]:
    """One optimiser group per distinct (lr_mult, decay_mult), parameters named as in the checkpoint.

    As mmengine: a parameter matched by a custom key takes that key's multipliers only; otherwise
    ``norm_decay_mult`` (when given) applies to the parameters of normalisation layers.
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = custom_key_for(name, custom_keys)
        settings = custom_keys.get(key, {}) if key else {}
        lr_mult, decay_mult = settings.get("lr_mult", 1.0), settings.get("decay_mult", 1.0)
        if key is None and norm_decay_mult is not None and id(param) in norm_params:
            decay_mult = norm_decay_mult
        group = groups.setdefault(
            (lr_mult, decay_mult),
            {"params": [], "names": [], "lr": lr * lr_mult, "weight_decay": weight_decay * decay_mult,
             "lr_mult": lr_mult, "decay_mult": decay_mult},
        )  # fmt: skip
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) over the recipe's parameter groups."""
    groups = param_groups(model, cfg["lr"], cfg["weight_decay"], cfg["custom_keys"], cfg["norm_decay_mult"])
    return torch.optim.AdamW(
        groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"], weight_decay=cfg["weight_decay"]
    )


def lr_factor(iteration: int, cfg: dict[str, Any]) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based).

    Linear warm-up ``r + (1 − r)·t / warmup`` for ``t < warmup``, then poly decay
    ``(1 − (t − warmup) / (max_iters − warmup))^power`` down to ``min_lr``.
    """
    warmup, ratio = cfg["warmup_iters"], cfg["warmup_ratio"]
    if iteration < warmup:
        return ratio + (1.0 - ratio) * iteration / warmup
    span = max(cfg["max_iters"] - warmup, 1)
    progress = min(max(iteration - warmup, 0) / span, 1.0)
    return (1.0 - progress) ** cfg["power"]


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict[str, Any]) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule; ``min_lr`` is an absolute floor of the decayed base lr (eta_min)."""
    bases = [g["lr"] for g in optimizer.param_groups]

    def factor_for(base: float):
        def factor(t: int) -> float:
            f = lr_factor(t, cfg)
            if t >= cfg["warmup_iters"] and cfg["min_lr"]:
                f = f * (1 - cfg["min_lr"] / base) + cfg["min_lr"] / base
            return f

        return factor

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(b) for b in bases])
