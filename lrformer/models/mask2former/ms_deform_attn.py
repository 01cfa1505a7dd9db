"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch, with ``grid_sample``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Sample every level at its locations bilinearly and sum with the attention weights.

    Args:
        value: ``(B, ΣHW, heads, d)`` values of all levels, concatenated.
        spatial_shapes: ``(H, W)`` of each level.
        sampling_locations: ``(B, Q, heads, levels, points, 2)`` normalised ``(x, y)`` in [0, 1].
        attention_weights: ``(B, Q, heads, levels, points)``.

    Returns:
        ``(B, Q, heads·d)``.
    """
    batch, _, heads, dims = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (height, width) in enumerate(spatial_shapes):
        value_l = values[level].flatten(2).transpose(1, 2).reshape(batch * heads, dims, height, width)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (B·heads, Q, points, 2)
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return output.view(batch, heads * dims, queries).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """mmcv's ``MultiScaleDeformableAttention`` (batch first, residual included), parameters
    ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``."""

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 3, num_points: int = 4,
                 dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        if embed_dims % num_heads:
            raise ConfigError(f"embed_dims {embed_dims} must be divisible by num_heads {num_heads}")
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets pointing in 8 directions, growing with the point index."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        for i in range(self.num_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """``query`` ``(B, Q, C)`` attends to itself (the flattened levels) → ``(B, Q, C)`` (with the residual).

        ``reference_points``: ``(B, Q, levels, 2)`` normalised ``(x, y)``.
        """
        batch, queries, _ = query.shape
        value = self.value_proj(query).view(batch, queries, self.num_heads, -1)
        q = query + query_pos
        offsets = self.sampling_offsets(q).view(batch, queries, self.num_heads, self.num_levels, self.num_points, 2)
        weights = self.attention_weights(q).view(batch, queries, self.num_heads, self.num_levels * self.num_points)
        weights = weights.softmax(-1).view(batch, queries, self.num_heads, self.num_levels, self.num_points)
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        output = multi_scale_deformable_attention(value, spatial_shapes, locations, weights)
        return query + self.dropout(self.output_proj(output))
