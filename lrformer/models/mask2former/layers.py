"""Layers shared by the Mask2Former pixel decoder and transformer decoder (mmcv names kept)."""

from __future__ import annotations

import torch
from torch import nn


class ConvGN(nn.Module):
    """mmcv ``ConvModule`` with GroupNorm: ``conv`` → ``gn`` → optional ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, groups: int, bias: bool, relu: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.gn = nn.GroupNorm(groups, out_channels)
        self.activate = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.gn(self.conv(x)))


class FFN(nn.Module):
    """mmcv ``FFN``: ``x + Linear(ReLU(Linear(x)))`` (``layers.0.0`` and ``layers.1``)."""

    def __init__(self, embed_dims: int, feedforward_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.ReLU(inplace=True), nn.Dropout(dropout)),
            nn.Linear(feedforward_channels, embed_dims),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)
