"""LRHead, the LRFormer decode head: two LRSA fuse blocks on 1/8-resolution features.

Design notes: ``docs/design.md``, section 4 (decode heads).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import ConfigError
from .activation_checkpointing import checkpoint_module
from .backbone import init_weights
from .block import LRBlock
from .decode_head import DecodeHead
from .layers import resize
from .lrsa import HeadLRSA


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy of logits ``(B, C, h, w)`` (e.g. LRHead's at stride 8) resized (bilinear, in
    float32) to the labels ``(B, H, W)``, averaged over **all** pixels: ignored ones add 0 but count
    (mmseg's ``avg_non_ignore=False``)."""
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none").mean()


class ConcatConvBNReLU(nn.Module):
    """mmcv's ``ConvModule`` (1×1 ``conv`` without bias → ``bn`` → ReLU; parameter names kept) applied
    to the channel concatenation of maps bilinearly resized to one size.

    ``forward(maps, size)``: maps ``(B, C_i, H_i, W_i)``, the first already at ``size``, →
    ``(B, out_channels, *size)``.
    After :meth:`reparameterize` (inference only) BN is folded into the conv, and the conv is
    applied to each map at its own resolution before the resize: ``W · cat(resize(m_i)) =
    Σ resize(W_i · m_i)``, as conv and bilinear resize are both linear and per-pixel/per-channel.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    @property
    def projects_before_resize(self) -> bool:
        """True after :meth:`reparameterize`: the inputs are best passed at their own resolutions."""
        return self.bn is None

    def forward(self, maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        if self.bn is not None:
            return self.activate(self.bn(self.conv(torch.cat([resize(m, size) for m in maps], dim=1))))
        weights = self.conv.weight.split([m.shape[1] for m in maps], dim=1)
        x = F.conv2d(maps[0], weights[0], self.conv.bias)
        for m, weight in zip(maps[1:], weights[1:]):
            x = x + resize(F.conv2d(m, weight), size)
        return self.activate(x)

    def reparameterize(self) -> None:
        """Fold ``bn`` into ``conv`` (eval statistics); see the class docstring."""
        self.conv = fuse_conv_bn_eval(self.conv, self.bn)
        self.bn = None


class LRHead(DecodeHead):
    """Decode head on backbone features 2, 3, 4 (strides 8, 16, 32), a :class:`~.decode_head.DecodeHead`.

    1. resize the three to the stride-8 size; ``squeeze1`` on their concatenation;
    2. ``fuse_block1``; ``squeeze2`` on ``cat(x, stride-32 feature)``; ``fuse_block2``;
    3. dropout, ``conv_seg`` → logits ``(B, num_classes, ⌈H/8⌉, ⌈W/8⌉)``.

    Fuse blocks are LRFormer blocks with BatchNorm norms, layer scale, 8 heads, MLP ratio 4 and
    an LRSA with query size ``q_pooled_size`` (32) and no pyramid convs.

    Args:
        in_channels: channels of the three input features (strides 8, 16, 32).
        channels: width of the head.
        num_classes: output classes.
        num_heads: LRSA heads of the fuse blocks.
        q_pooled_size: LRSA query size of the fuse blocks.
        mlp_ratio: IRB width of the fuse blocks.
        dropout_ratio: ``Dropout2d`` before ``conv_seg`` (training only).

    Attributes:
        grad_checkpointing: activation checkpointing of the fuse blocks in training
            (:meth:`set_grad_checkpointing`); off by default.
    """

    in_index = (1, 2, 3)

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 256,
        num_classes: int = 150,
        num_heads: int = 8,
        q_pooled_size: int = 32,
        mlp_ratio: float = 4,
        dropout_ratio: float = 0.1,
        layer_scale_init: float = 1e-6,
    ) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ConfigError(
                f"LRHead takes the stride-8/16/32 features: give 3 in_channels (e.g. embed_dims[1:]), got {in_channels}"
            )
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.squeeze1 = ConcatConvBNReLU(sum(in_channels), channels)
        self.fuse_block1 = self._fuse_block(channels, num_heads, q_pooled_size, mlp_ratio, layer_scale_init)
        self.squeeze2 = ConcatConvBNReLU(channels + in_channels[-1], channels)
        self.fuse_block2 = self._fuse_block(channels, num_heads, q_pooled_size, mlp_ratio, layer_scale_init)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.apply(init_weights)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)

    @staticmethod
    def _fuse_block(dim: int, heads: int, q_size: int, mlp_ratio: float, ls_init: float) -> LRBlock:
        return LRBlock(
            dim,
            HeadLRSA(dim, heads, q_size),
            mlp_ratio=mlp_ratio,
            norm_layer=nn.BatchNorm2d,
            layer_scale=True,
            layer_scale_init=ls_init,
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint ``fuse_block1`` and ``fuse_block2`` in training (timm's API): each keeps only
        its input ``(B, channels, H_8, W_8)`` and is run again in the backward pass; their
        BatchNorm statistics are still updated once per step. See :mod:`lrformer.models.activation_checkpointing`."""
        self.grad_checkpointing = enable

    def attention_elements(self, height: int, width: int) -> int:
        """Attention-matrix entries per image of a fuse block on an ``H×W`` stride-8 map."""
        return self.fuse_block1.attn.attention_elements(height, width)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Four backbone features → logits ``(B, num_classes, H_8, W_8)`` at the stride-8 size (the
        official decode-head output, what :meth:`loss` takes)."""
        inputs = [features[i] for i in self.in_index]
        size = inputs[0].shape[-2:]
        if not self.squeeze1.projects_before_resize:  # resize once, for both squeezes
            inputs = [resize(x, size) for x in inputs]
        x = checkpoint_module(self.fuse_block1, self.squeeze1(inputs, size), enabled=self.grad_checkpointing)
        x = checkpoint_module(self.fuse_block2, self.squeeze2([x, inputs[-1]], size), enabled=self.grad_checkpointing)
        return self.conv_seg(self.dropout(x))

    def predict(self, features: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Class scores ``(B, num_classes, *size)``: the stride-8 logits in float32 resized to ``size``
        (bilinear, ``align_corners=False``, as mmseg's ``encode_decode``)."""
        return resize(self(features).float(), size)

    def loss(self, output: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> dict[str, torch.Tensor]:
        """``loss_ce``: :func:`segmentation_loss` of the stride-8 logits ``output`` against ``labels``
        ``(B, H, W)``; ``loss`` is the same value."""
        loss = segmentation_loss(output, labels, ignore_index)
        return {"loss": loss, "loss_ce": loss}
