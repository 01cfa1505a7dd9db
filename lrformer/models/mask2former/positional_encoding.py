"""Sine positional encoding of 2-D feature maps (DETR / mmdet ``SinePositionalEncoding``)."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionalEncoding(nn.Module):
    """``(B, 2·num_feats, H, W)`` encoding of the pixel positions of an unpadded ``H×W`` map.

    With ``normalize`` the 1-based row/column indices are scaled to ``(0, 2π]``; channels hold the
    y encodings then the x encodings, each as interleaved (sin, cos) pairs at frequencies
    ``temperature^(2⌊i/2⌋ / num_feats)``.
    """

    def __init__(self, num_feats: int = 128, temperature: int = 10000, normalize: bool = True,
                 scale: float = 2 * math.pi, eps: float = 1e-6) -> None:  # fmt: skip
        super().__init__()
        self.num_feats, self.temperature, self.normalize, self.scale, self.eps = (
            num_feats,
            temperature,
            normalize,
            scale,
            eps,
        )

    def forward(self, batch: int, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
        y_embed = (
            torch.arange(1, height + 1, dtype=torch.float32, device=device).view(1, -1, 1).expand(batch, height, width)
        )
        x_embed = (
            torch.arange(1, width + 1, dtype=torch.float32, device=device).view(1, 1, -1).expand(batch, height, width)
        )
        if self.normalize:
            y_embed = y_embed / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
