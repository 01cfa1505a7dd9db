"""Small building blocks shared by the LRFormer backbone and the LRHead decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pooled_size(height: int, width: int, target: int) -> tuple[int, int]:
    """Aspect-kept size of a pooled grid (every LRSA pooling uses it).

    The short side becomes ``target``; the long side is scaled with the aspect ratio, rounded
    with Python's ``round`` after adding 0.001 (exactly as the official code does).
    """
    if width >= height:
        return target, round(width * target / height + 0.001)
    return round(height * target / width + 0.001), target


def pyramid_sizes(q_pooled_size: int, ratios: tuple[int, ...] = (11, 8, 6, 4)) -> list[int]:
    """Key/value pyramid targets for a query size: ``round(t * q / 16 + 0.001)``.

    ``q = 16`` gives ``[11, 8, 6, 4]`` (backbone), ``q = 32`` gives ``[22, 16, 12, 8]`` (LRHead).
    """
    return [round(t * q_pooled_size / 16 + 0.001) for t in ratios]


def add_residual(x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``x + update``, written into ``x`` when autograd is off (inference: one map fewer, one pass
    less). ``x`` must be a temporary the caller owns."""
    return x + update if torch.is_grad_enabled() else x.add_(update)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` map → ``(B, H·W, C)`` tokens in row-major order (a view for channels-last maps)."""
    return x.flatten(2).transpose(1, 2)


def to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, H·W, C)`` tokens → ``(B, C, H, W)`` map; a channels-last view for contiguous tokens."""
    return tokens.unflatten(1, (height, width)).permute(0, 3, 1, 2)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (parameters named like ``nn.LayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or with ``drop_prob == 0``)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ResidualDepthwiseConv(nn.Conv2d):
    """``x + D(x)`` for a 3×3 depth-wise conv ``D`` with bias and padding 1 (``cpe``, ``mlp.conv``, ``d_convs``).

    The identity is folded into the centre tap of the kernel, so the residual costs no extra pass
    over the map: ``x + D(x) = conv(x, w + δ)``, exact in forward and backward (the gradient of
    ``w`` is unchanged). Parameters are those of the plain ``nn.Conv2d`` (``weight``, ``bias``).
    ``(B, C, H, W)`` → ``(B, C, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, padding=1, groups=channels)
        identity = torch.zeros(channels, 1, 3, 3)
        identity[:, 0, 1, 1] = 1.0
        self.register_buffer("identity", identity, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight + self.identity, self.bias)


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=False`` (identity when the size already matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
