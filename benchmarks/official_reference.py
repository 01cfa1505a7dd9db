"""A stand-in for the official LRFormer implementation, for side-by-side timing.

The official repository (an mmsegmentation 0.x/1.x fork) cannot be installed here, so this file
transcribes the structure of its code: the backbone and LRHead computation, written the way the
official modules are written (P2T lineage):

- backbone blocks work on tokens ``(B, N, C)`` and convert to maps and back around every
  convolution (``transpose(1, 2).reshape(B, C, H, W)``: a copy each time);
- LayerNorm on tokens, ``x + D(x)`` as two passes, layer scale as a separate multiply;
- attention written out: ``softmax(q @ kᵀ · scale) @ v`` with the full attention matrix;
- the decode head uses mmcv-style ``ConvModule`` (conv → BN → ReLU, no folding) and fuse blocks on
  maps with BatchNorm norms.

It loads the released checkpoint layout (the same state dict as ``lrformer``), and it is checked
against the parity files like the package (``benchmarks/compare_official.py --check``, and in the
test suite by ``tests/test_official_reference.py``). It is not
part of the package and is not used by it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _pooled(height: int, width: int, target: int) -> tuple[int, int]:
    if width >= height:
        return target, round(width * target / height + 0.001)
    return round(height * target / width + 0.001), target


class PoolingAttention(nn.Module):
    def __init__(self, dim, num_heads, q_pooled_size, query_conv=False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q_pooled_size = q_pooled_size
        self.pool_sizes = [round(t * q_pooled_size / 16 + 0.001) for t in (11, 8, 6, 4)]
        self.q = nn.Conv2d(dim, dim, 1) if query_conv else nn.Sequential(nn.Linear(dim, dim))
        self.kv = nn.Linear(dim, dim * 2) if query_conv else nn.Sequential(nn.Linear(dim, dim * 2))
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x_, d_convs=None):  # x_: (B, C, H, W)
        B, C, H, W = x_.shape
        qh, qw = _pooled(H, W, self.q_pooled_size)
        q = F.adaptive_avg_pool2d(x_, (qh, qw))
        if isinstance(self.q, nn.Conv2d):
            q = self.q(q).reshape(B, C, -1).permute(0, 2, 1)
        else:
            q = self.q(q.reshape(B, C, -1).permute(0, 2, 1))
        q = q.reshape(B, -1, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        pools = []
        for j, size in enumerate(self.pool_sizes):
            pool = F.adaptive_avg_pool2d(x_, _pooled(H, W, size))
            if d_convs is not None:
                pool = pool + d_convs[j](pool)
            pools.append(pool.view(B, C, -1))
        pools = self.norm(torch.cat(pools, dim=2).permute(0, 2, 1))
        kv = self.kv(pools).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).contiguous().reshape(B, -1, C)
        x = self.proj(x)
        x = x.permute(0, 2, 1).reshape(B, C, qh, qw)
        return F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)


class IRB(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.conv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):  # maps
        x = self.act(self.fc1(x))
        x = x + self.conv(x)
        return self.fc2(x)


class Block(nn.Module):
    """Backbone block on tokens ``(B, N, C)``."""

    def __init__(self, dim, num_heads, mlp_ratio, q_pooled_size, layer_scale, pre_norm=False):
        super().__init__()
        if pre_norm:
            self.pre_norm = nn.BatchNorm2d(dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PoolingAttention(dim, num_heads, q_pooled_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = IRB(dim, int(dim * mlp_ratio))
        self.cpe = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        if layer_scale:
            self.layer_scale_1 = nn.Parameter(torch.ones(dim))
            self.layer_scale_2 = nn.Parameter(torch.ones(dim))
        self.layer_scale = layer_scale

    def _map(self, x, H, W):
        B, N, C = x.shape
        return x.transpose(1, 2).reshape(B, C, H, W)

    def forward(self, x, H, W, d_convs):
        if hasattr(self, "pre_norm"):
            x = self.pre_norm(self._map(x, H, W)).flatten(2).transpose(1, 2)
        x = x + self.cpe(self._map(x, H, W)).flatten(2).transpose(1, 2)
        a = self.attn(self._map(self.norm1(x), H, W), d_convs).flatten(2).transpose(1, 2)
        x = x + (self.layer_scale_1 * a if self.layer_scale else a)
        m = self.mlp(self._map(self.norm2(x), H, W)).flatten(2).transpose(1, 2)
        return x + (self.layer_scale_2 * m if self.layer_scale else m)


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_chans, dim, stem):
        super().__init__()
        if stem:
            mid = dim // 2
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, mid, 3, 2, 1), nn.BatchNorm2d(mid), nn.GELU(),
                nn.Conv2d(mid, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.GELU(),
                nn.Conv2d(mid, dim, 3, 2, 1), nn.BatchNorm2d(dim), nn.GELU(),
                nn.Conv2d(dim, dim, 3, 1, 1),
            )  # fmt: skip
        else:
            self.proj = nn.Conv2d(in_chans, dim, 3, 2, 1)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.conv1(x) if hasattr(self, "conv1") else self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class Backbone(nn.Module):
    def __init__(self, embed_dims, depths, num_heads, mlp_ratios, q_pooled_sizes, **_):
        super().__init__()
        in_chans = 3
        for s in range(4):
            setattr(self, f"patch_embed{s + 1}", OverlapPatchEmbed(in_chans, embed_dims[s], stem=s == 0))
            pre = (7, 15) if s == 2 and depths[2] > 20 else ()
            blocks = [
                Block(embed_dims[s], num_heads[s], mlp_ratios[s], q_pooled_sizes[s], s >= 2, i in pre)
                for i in range(depths[s])
            ]
            setattr(self, f"block{s + 1}", nn.ModuleList(blocks))
            convs = [nn.Conv2d(embed_dims[s], embed_dims[s], 3, 1, 1, groups=embed_dims[s]) for _ in range(4)]
            setattr(self, f"d_convs{s + 1}", nn.ModuleList(convs))
            in_chans = embed_dims[s]

    def forward(self, x):
        outs = []
        B = x.shape[0]
        for s in range(1, 5):
            x, H, W = getattr(self, f"patch_embed{s}")(x)
            for blk in getattr(self, f"block{s}"):
                x = blk(x, H, W, getattr(self, f"d_convs{s}"))
            x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


class ConvModule(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class FuseBlock(nn.Module):
    """Decode-head block on maps ``(B, C, H, W)`` with BatchNorm norms."""

    def __init__(self, dim, num_heads, q_pooled_size, mlp_ratio=4):
        super().__init__()
        self.layer_scale_1 = nn.Parameter(torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(torch.ones(dim))
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = PoolingAttention(dim, num_heads, q_pooled_size, query_conv=True)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = IRB(dim, dim * mlp_ratio)
        self.cpe = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x):
        x = x + self.cpe(x)
        x = x + self.layer_scale_1.view(1, -1, 1, 1) * self.attn(self.norm1(x))
        return x + self.layer_scale_2.view(1, -1, 1, 1) * self.mlp(self.norm2(x))


class LRHead(nn.Module):
    def __init__(self, in_channels, channels, num_classes, num_heads, q_pooled_size):
        super().__init__()
        self.squeeze1 = ConvModule(sum(in_channels), channels)
        self.fuse_block1 = FuseBlock(channels, num_heads, q_pooled_size)
        self.squeeze2 = ConvModule(channels + in_channels[-1], channels)
        self.fuse_block2 = FuseBlock(channels, num_heads, q_pooled_size)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs):
        inputs = inputs[1:]
        size = inputs[0].shape[2:]
        inputs = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in inputs]
        x = self.fuse_block1(self.squeeze1(torch.cat(inputs, dim=1)))
        x = self.fuse_block2(self.squeeze2(torch.cat([x, inputs[-1]], dim=1)))
        return self.conv_seg(x)


class EncoderDecoder(nn.Module):
    """``backbone`` + ``decode_head``; ``forward`` is mmseg's ``encode_decode``: the stride-8 logits
    ``decode_head(backbone(x))`` (what the parity files store) resized to the input size."""

    def __init__(self, config: dict):
        super().__init__()
        self.backbone = Backbone(**config)
        self.decode_head = LRHead(
            config["embed_dims"][1:],
            config["head_channels"],
            config["num_classes"],
            config["head_num_heads"],
            config["head_q_pooled_size"],
        )

    def forward(self, x):
        logits = self.decode_head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
