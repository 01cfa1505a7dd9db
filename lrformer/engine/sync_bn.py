"""Synchronised BatchNorm for multi-process training on every device.

CUDA uses ``torch.nn.SyncBatchNorm``; PyTorch has no CPU implementation, so CPU (gloo) runs use
:class:`CPUSyncBatchNorm`, which all-reduces the per-channel sums with the differentiable
``torch.distributed.nn.all_reduce``. Both keep the parameter and buffer names of ``BatchNorm2d``.

Which BatchNorms are synchronised follows the official models by default (:func:`synchronise_batchnorm`).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed.nn as dist_nn
from torch import nn

from ..errors import ConfigError


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed over the batches of all processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not torch.distributed.is_initialized():
            return super().forward(x)
        dtype, x = x.dtype, x.float()  # statistics in float32, also under autocast
        channels = x.shape[1]
        local = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), x.new_tensor([x.numel() / channels])])
        with warnings.catch_warnings():  # the differentiable all_reduce is marked deprecated, not replaced
            warnings.simplefilter("ignore", FutureWarning)
            total = dist_nn.all_reduce(local)
        count = total[-1]
        mean = total[:channels] / count
        var = total[channels : 2 * channels] / count - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            unbiased = var.detach() * count / (count - 1).clamp(min=1)
            self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        x = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        return (x * self.weight[None, :, None, None] + self.bias[None, :, None, None]).to(dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every ``BatchNorm2d`` with its synchronised version for ``device``, weights kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = CPUSyncBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, device)
    return module


SYNC_BN_SCOPES = ("decode_head", "all", "none")
"""Values of ``train.sync_bn``: which BatchNorms multi-process training synchronises."""


def synchronise_batchnorm(model: nn.Module, device: torch.device, scope: str = "decode_head") -> nn.Module:
    """Synchronise the BatchNorms of ``model`` in ``scope`` across processes.

    ``decode_head`` (the official recipe): the official LRHead builds its BatchNorms
    (``squeeze*.bn``, the fuse blocks' ``norm1/norm2``) from the head's ``norm_cfg``, which is
    ``SyncBN``, while the backbone's (the stem's, XL's ``pre_norm``) are plain ``BatchNorm2d`` and
    no global ``sync_bn`` conversion is configured: they normalise with each process's own batch
    (2-4 images rather than 16). The Mask2Former head has no BatchNorm. ``all``: every BatchNorm
    (mmengine's ``sync_bn``; one process then equals many). ``none``: none.
    """
    if scope not in SYNC_BN_SCOPES:
        raise ConfigError(f"train.sync_bn must be one of {', '.join(SYNC_BN_SCOPES)}, got {scope!r}")
    if scope == "all":
        return convert_sync_batchnorm(model, device)
    if scope == "decode_head" and getattr(model, "decode_head", None) is not None:
        model.decode_head = convert_sync_batchnorm(model.decode_head, device)
    return model
