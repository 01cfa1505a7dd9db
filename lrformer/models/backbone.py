"""The LRFormer backbone: a convolutional stem and four stages at strides 4/8/16/32.

Design notes: ``docs/design.md``, section 3 (backbone and blocks).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .block import LRBlock
from .layers import LayerNorm2d, ResidualDepthwiseConv
from .lrsa import LRSA

MIN_INPUT_SIZE = 32
XL_PRE_NORM_BLOCKS = (7, 15)
"""Stage-3 blocks that carry the extra ``pre_norm`` BatchNorm when stage 3 has more than 20 blocks (LRFormer-XL)."""


def check_input(x: torch.Tensor) -> None:
    """Raise a clear error for inputs the network cannot take."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(
            f"LRFormer expects a (B, 3, H, W) image batch, got shape {tuple(x.shape)}; "
            "add a batch dimension with x[None] or convert the image to 3 channels."
        )
    if min(x.shape[-2:]) < MIN_INPUT_SIZE:
        raise ValueError(
            f"input {tuple(x.shape[-2:])} is too small: LRFormer needs H, W >= {MIN_INPUT_SIZE} "
            "(four stride-2 stages); resize or pad the image first."
        )


class ConvStem(nn.Module):
    """``patch_embed1``: four 3×3 convs (strides 2, 1, 2, 1) with BN + GELU between, then LayerNorm.

    ``(B, 3, H, W)`` → ``(B, C0, ⌈H/4⌉, ⌈W/4⌉)``.
    """

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        mid = embed_dim // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, mid, 3, 2, 1), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, embed_dim, 3, 2, 1), nn.BatchNorm2d(embed_dim), nn.GELU(),
            nn.Conv2d(embed_dim, embed_dim, 3, 1, 1),
        )  # fmt: skip
        self.norm = LayerNorm2d(embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv1(x))

    def reparameterize(self) -> None:
        """Fold the three BatchNorms into the convs before them (inference only)."""
        for i, layer in enumerate(self.conv1):
            if isinstance(layer, nn.BatchNorm2d):
                self.conv1[i - 1] = fuse_conv_bn_eval(self.conv1[i - 1], layer)
                self.conv1[i] = nn.Identity()


class PatchEmbed(nn.Module):
    """``patch_embed2..4``: 3×3 stride-2 conv then LayerNorm. ``(B, Cin, H, W)`` → ``(B, C, ⌈H/2⌉, ⌈W/2⌉)``."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, 3, 2, 1)
        self.norm = LayerNorm2d(embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class Stage(NamedTuple):
    """The modules of one backbone stage (registered as ``patch_embed{s}``, ``block{s}``, ``d_convs{s}``)."""

    patch_embed: nn.Module
    blocks: nn.ModuleList
    d_convs: nn.ModuleList


class LRFormer(nn.Module):
    """LRFormer backbone.

    Stage ``s`` (1..4) is ``patch_embed{s}`` followed by the blocks ``block{s}.*``; all blocks of a
    stage share the four pyramid depth-wise convs ``d_convs{s}.0..3``. Layer scale exists in
    stages 3 and 4 only.

    Args:
        embed_dims, depths, num_heads, mlp_ratios, q_pooled_sizes: per-stage hyper-parameters.
        qkv_bias: bias in the LRSA query/key/value projections.
        drop_path_rate: stochastic depth, linear from 0 to this value over all blocks.
        layer_scale_init: initial layer-scale value when training from scratch.
    """

    def __init__(
        self,
        embed_dims: Sequence[int] = (48, 96, 240, 384),
        depths: Sequence[int] = (2, 2, 6, 3),
        num_heads: Sequence[int] = (2, 4, 10, 16),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        q_pooled_sizes: Sequence[int] = (16, 16, 16, 16),
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        hparams = (embed_dims, depths, num_heads, mlp_ratios, q_pooled_sizes)
        if any(len(v) != 4 for v in hparams):
            raise ValueError(
                "embed_dims, depths, num_heads, mlp_ratios and q_pooled_sizes need 4 entries each "
                f"(one per stage), got {[list(v) for v in hparams]}"
            )
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        total = sum(depths)
        rates = torch.linspace(0, drop_path_rate, total, device="cpu").tolist()  # float32 steps, as the official code
        norm_layer = partial(LayerNorm2d, eps=1e-6)
        in_dim = in_chans
        for s in range(4):
            dim = embed_dims[s]
            embed = ConvStem(in_dim, dim) if s == 0 else PatchEmbed(in_dim, dim)
            self.add_module(f"patch_embed{s + 1}", embed)
            pre_norm_blocks = XL_PRE_NORM_BLOCKS if s == 2 and depths[2] > 20 else ()
            blocks = nn.ModuleList(
                LRBlock(
                    dim,
                    LRSA(dim, num_heads[s], q_pooled_sizes[s], qkv_bias=qkv_bias),
                    mlp_ratio=mlp_ratios[s],
                    norm_layer=norm_layer,
                    layer_scale=s >= 2,
                    layer_scale_init=layer_scale_init,
                    pre_norm=i in pre_norm_blocks,
                    drop_path=rates[sum(depths[:s]) + i],
                )
                for i in range(depths[s])
            )
            self.add_module(f"block{s + 1}", blocks)
            self.add_module(f"d_convs{s + 1}", nn.ModuleList(ResidualDepthwiseConv(dim) for _ in range(4)))
            in_dim = dim
        self.apply(init_weights)

    def stages(self) -> list[Stage]:
        """The four stages in order; the released parameter names stay ``patch_embed{s}.*`` etc."""
        modules = dict(self.named_children())
        return [Stage(modules[f"patch_embed{s}"], modules[f"block{s}"], modules[f"d_convs{s}"]) for s in range(1, 5)]

    @staticmethod
    def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
        """Sizes of the four features for an ``H×W`` input (each k3/s2/p1 conv gives ``⌈n/2⌉``)."""
        sizes = []
        height, width = math.ceil(height / 2), math.ceil(width / 2)  # first stem conv
        for _ in range(4):
            height, width = math.ceil(height / 2), math.ceil(width / 2)
            sizes.append((height, width))
        return sizes

    def attention_elements(self, height: int, width: int) -> int:
        """Largest LRSA attention matrix (entries per image) over the stages for an ``H×W`` input."""
        return max(
            stage.blocks[0].attn.attention_elements(*size)
            for stage, size in zip(self.stages(), self.feature_sizes(height, width))
            if len(stage.blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` with H, W >= 32 → four features ``(B, C_s, H_s, W_s)`` at strides 4, 8, 16, 32.

        Sizes follow the real convolution outputs (``H_s = ⌈H_{s-1} / 2⌉``), so H and W need not be
        multiples of 32.
        """
        check_input(x)
        x = x.contiguous(memory_format=torch.channels_last)
        features = []
        for stage in self.stages():
            x = stage.patch_embed(x)
            for block in stage.blocks:
                x = block(x, stage.d_convs)
            features.append(x)
        return features


def init_weights(module: nn.Module) -> None:
    """Official initialisation for training from scratch: truncated normal (std 0.02) for Linear,
    fan-out normal for convs, ones/zeros for norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
