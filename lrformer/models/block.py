"""The LRFormer block and its inverted-residual MLP, shared by backbone and LRHead.

Design notes: ``docs/design.md``, section 3 (backbone and blocks).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .layers import DropPath, ResidualDepthwiseConv, add_residual
from .lrsa import LRSA
from .reparameterize import batch_norm_affine, fold_input_affine, scale_output_channels


class IRB(nn.Module):
    """Inverted residual MLP: ``fc1`` (1×1, C→rC) → GELU → ``h + conv(h)`` (3×3 depth-wise) → ``fc2`` (1×1, rC→C).

    Works on ``(B, C, H, W)`` maps. No activation after the depth-wise conv. After
    :meth:`compute_in_bands` (part of the inference fast path, see :meth:`LRBlock.reparameterize`), a
    hidden map larger than ``max_band_elements`` is computed in bands of rows at inference (eval mode,
    autograd off), each with a one-row halo for the 3×3 conv, so the ``rC``-channel map never exists
    whole: same result, bounded memory at high resolution.
    """

    BAND_ELEMENTS = 1 << 24
    """``max_band_elements`` of the fast path: hidden activations built at once, 64 MB in float32."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.conv = ResidualDepthwiseConv(hidden_dim)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.max_band_elements: int | None = None

    def compute_in_bands(self, max_elements: int | None = None) -> None:
        """At inference, compute hidden maps of more than ``max_elements`` (default
        :attr:`BAND_ELEMENTS`) activations in bands of rows; ``0`` turns banding off."""
        limit = self.BAND_ELEMENTS if max_elements is None else max_elements
        self.max_band_elements = limit or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        hidden_elements = batch * self.fc1.out_channels * height * width
        limit = self.max_band_elements
        if limit is None or self.training or torch.is_grad_enabled() or hidden_elements <= limit:
            return self.fc2(self.conv(self.act(self.fc1(x))))  # conv(h) is h + DW(h)
        return self._forward_in_bands(x)

    def _forward_in_bands(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        rows = max(1, self.max_band_elements // (batch * self.fc1.out_channels * width))
        out = torch.empty(
            (batch, self.fc2.out_channels, height, width),
            dtype=x.dtype,
            device=x.device,
            memory_format=torch.channels_last,
        )
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            first, last = max(top - 1, 0), min(bottom + 1, height)  # with the halo rows
            hidden = self.conv(self.act(self.fc1(x[:, :, first:last])))
            out[:, :, top:bottom] = self.fc2(hidden[:, :, top - first : bottom - first])
        return out


class LRBlock(nn.Module):
    """One LRFormer block on ``(B, C, H, W)`` maps::

        x = pre_norm(x)                    # optional BN (LRFormer-XL, stage 3, blocks 7 and 15)
        x = x + cpe(x)                     # 3×3 depth-wise positional conv
        x = x + ls1 * LRSA(norm1(x))
        x = x + ls2 * IRB(norm2(x))

    Args:
        dim: channels.
        attn: the LRSA module (``LRSA`` in the backbone, ``HeadLRSA`` in the LRHead).
        mlp_ratio: hidden width of the IRB relative to ``dim``.
        norm_layer: factory for ``norm1``/``norm2`` (LayerNorm2d eps 1e-6 or BatchNorm2d).
        layer_scale: whether ``layer_scale_1``/``layer_scale_2`` exist (otherwise factor 1).
        layer_scale_init: their initial value when training from scratch.
        pre_norm: add the XL ``pre_norm`` BatchNorm.
        drop_path: stochastic-depth rate of this block.
    """

    def __init__(
        self,
        dim: int,
        attn: LRSA,
        mlp_ratio: float,
        norm_layer: Callable[[int], nn.Module],
        layer_scale: bool,
        layer_scale_init: float = 1e-6,
        pre_norm: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.pre_norm = nn.BatchNorm2d(dim) if pre_norm else None
        self.cpe = ResidualDepthwiseConv(dim)
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.norm2 = norm_layer(dim)
        self.mlp = IRB(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        if layer_scale:
            self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init))
            self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        else:
            self.layer_scale_1 = self.layer_scale_2 = None

    def reparameterize(self) -> None:
        """Inference fast path: fold the layer scales into ``attn.proj`` / ``mlp.fc2`` and a BatchNorm
        ``norm2`` into ``mlp.fc1``, and let the IRB compute large hidden maps in bands of rows."""
        self.mlp.compute_in_bands()
        if self.layer_scale_1 is not None:
            scale_output_channels(self.attn.proj, self.layer_scale_1)
            scale_output_channels(self.mlp.fc2, self.layer_scale_2)
            self.layer_scale_1 = self.layer_scale_2 = None
        if isinstance(self.norm2, nn.BatchNorm2d):
            fold_input_affine(self.mlp.fc1, *batch_norm_affine(self.norm2))
            self.norm2 = nn.Identity()

    @staticmethod
    def _scale(x: torch.Tensor, layer_scale: torch.Tensor | None) -> torch.Tensor:
        return x if layer_scale is None else x * layer_scale.view(-1, 1, 1)

    def forward(self, x: torch.Tensor, d_convs: nn.ModuleList | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, C, H, W)``; ``d_convs`` are the stage's shared pyramid convs."""
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        x = self.cpe(x)  # x + cpe(x), the identity folded into the kernel
        x = add_residual(x, self.drop_path(self._scale(self.attn(self.norm1(x), d_convs), self.layer_scale_1)))
        return add_residual(x, self.drop_path(self._scale(self.mlp(self.norm2(x)), self.layer_scale_2)))
