"""The MSDeformAttn pixel decoder of Mask2Former (mmdet ``MSDeformAttnPixelDecoder``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..activation_checkpointing import checkpoint_module
from .layers import FFN, ConvGN
from .ms_deform_attn import MultiScaleDeformableAttention
from .positional_encoding import SinePositionalEncoding


class DeformableEncoderLayer(nn.Module):
    """``self_attn`` (multi-scale deformable) → ``norms.0`` → ``ffn`` → ``norms.1`` (post-norm)."""

    def __init__(self, dims: int, heads: int, levels: int, points: int, ffn_dims: int) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dims, heads, levels, points)
        self.ffn = FFN(dims, ffn_dims)
        self.norms = nn.ModuleList([nn.LayerNorm(dims), nn.LayerNorm(dims)])

    def forward(self, query, query_pos, reference_points, spatial_shapes) -> torch.Tensor:
        query = self.norms[0](self.self_attn(query, query_pos, reference_points, spatial_shapes))
        return self.norms[1](self.ffn(query))


class DeformableEncoder(nn.Module):
    """``num_layers`` :class:`DeformableEncoderLayer`; each checkpointed in training when
    ``grad_checkpointing`` is set (by :meth:`MSDeformAttnPixelDecoder.set_grad_checkpointing`)."""

    def __init__(self, num_layers: int, **layer_args) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_args) for _ in range(num_layers))
        self.grad_checkpointing = False

    def forward(self, query, query_pos, reference_points, spatial_shapes) -> torch.Tensor:
        """``query`` ``(B, ΣHW, C)`` tokens of all levels → ``(B, ΣHW, C)``."""
        for layer in self.layers:
            query = checkpoint_module(
                layer, query, query_pos, reference_points, spatial_shapes, enabled=self.grad_checkpointing
            )
        return query


class MSDeformAttnPixelDecoder(nn.Module):
    """Backbone features (strides 4..32) → mask features (stride 4) and three memories (32, 16, 8).

    The three coarsest levels, projected by ``input_convs`` (``input_convs.0`` takes the coarsest),
    go through a deformable-attention encoder; the stride-4 feature is fused FPN-style
    (``lateral_convs.0`` + upsampled stride-8 memory → ``output_convs.0``) and projected by
    ``mask_feature``.

    Attributes:
        grad_checkpointing: activation checkpointing of the encoder layers in training
            (:meth:`set_grad_checkpointing`); off by default.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        feat_channels: int = 256,
        out_channels: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_channels: int = 1024,
        gn_groups: int = 32,
        pos_feats: int = 128,
        num_encoder_levels: int = 3,
    ) -> None:
        super().__init__()
        self.num_input_levels, self.num_encoder_levels = len(in_channels), num_encoder_levels
        self.input_convs = nn.ModuleList(
            ConvGN(in_channels[i], feat_channels, 1, gn_groups, bias=True, relu=False)
            for i in range(self.num_input_levels - 1, self.num_input_levels - num_encoder_levels - 1, -1)
        )
        self.encoder = DeformableEncoder(
            num_layers, dims=feat_channels, heads=num_heads, levels=num_encoder_levels, points=num_points,
            ffn_dims=ffn_channels,
        )  # fmt: skip
        self.positional_encoding = SinePositionalEncoding(pos_feats)  # no parameters
        self.level_encoding = nn.Embedding(num_encoder_levels, feat_channels)
        fpn_levels = range(self.num_input_levels - num_encoder_levels - 1, -1, -1)
        self.lateral_convs = nn.ModuleList(
            ConvGN(in_channels[i], feat_channels, 1, gn_groups, bias=False, relu=False) for i in fpn_levels
        )
        self.output_convs = nn.ModuleList(
            ConvGN(feat_channels, feat_channels, 3, gn_groups, bias=False, relu=True) for _ in fpn_levels
        )
        self.mask_feature = nn.Conv2d(feat_channels, out_channels, 1)
        self.init_weights()

    @property
    def grad_checkpointing(self) -> bool:
        """Whether the encoder layers are checkpointed in training."""
        return self.encoder.grad_checkpointing

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every deformable encoder layer in training (timm's API): each keeps only its
        query tokens ``(B, ΣHW, C)`` and is run again in the backward pass (same dropout masks).
        See :mod:`lrformer.models.activation_checkpointing`."""
        self.encoder.grad_checkpointing = enable

    def init_weights(self) -> None:
        """mmdet's initialisation: xavier-uniform input convs, caffe2-xavier FPN convs, N(0, 1)
        level encoding, xavier-normal encoder matrices, then Deformable DETR's attention init."""
        for conv in self.input_convs:
            nn.init.xavier_uniform_(conv.conv.weight)
            nn.init.zeros_(conv.conv.bias)
        for conv in [c.conv for c in self.lateral_convs] + [c.conv for c in self.output_convs] + [self.mask_feature]:
            caffe2_xavier_(conv)
        nn.init.normal_(self.level_encoding.weight, 0.0, 1.0)
        for param in self.encoder.parameters():
            if param.dim() > 1:
                nn.init.xavier_normal_(param)
        for layer in self.encoder.layers:
            layer.self_attn.reset_parameters()

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Four features → mask features ``(B, C, H/4, W/4)`` and memories at strides 32, 16, 8."""
        batch = feats[0].shape[0]
        inputs, positions, references, shapes = [], [], [], []
        for i in range(self.num_encoder_levels):
            feat = feats[self.num_input_levels - i - 1]
            height, width = feat.shape[-2:]
            pos = self.positional_encoding(batch, height, width, feat.device)
            pos = pos + self.level_encoding.weight[i].view(1, -1, 1, 1)
            inputs.append(self.input_convs[i](feat).flatten(2).transpose(1, 2))
            positions.append(pos.flatten(2).transpose(1, 2).to(feat.dtype))
            references.append(_reference_points(height, width, feat.device))
            shapes.append((height, width))
        reference_points = torch.cat(references)[None, :, None].expand(batch, -1, self.num_encoder_levels, -1)
        memory = self.encoder(
            torch.cat(inputs, 1), torch.cat(positions, 1), reference_points.to(feats[0].dtype), shapes
        )
        outs = [
            m.transpose(1, 2).reshape(batch, -1, h, w)
            for m, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        for j, i in enumerate(range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1)):
            lateral = self.lateral_convs[j](feats[i])
            up = F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(self.output_convs[j](lateral + up))
        return self.mask_feature(outs[-1]), outs[: self.num_encoder_levels]


def caffe2_xavier_(conv: nn.Conv2d) -> None:
    """Caffe2's "xavier" fill: kaiming-uniform with a = 1 (fan in), zero bias."""
    nn.init.kaiming_uniform_(conv.weight, a=1, mode="fan_in", nonlinearity="leaky_relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _reference_points(height: int, width: int, device) -> torch.Tensor:
    """Pixel centres ``((x + 0.5)/W, (y + 0.5)/H)`` in row-major order: ``(H·W, 2)``."""
    ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
