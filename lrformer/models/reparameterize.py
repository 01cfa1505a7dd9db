"""The inference fast path: fold what eval mode makes constant into the adjacent convolutions.

``reparameterize_model(model)`` returns an eval-only copy whose outputs equal the original's up
to float rounding (tested: max abs logit difference ≤ 1e-4 in float32). Modules opt in with a
``reparameterize()`` method (the timm convention):

- ``ConvStem``: the three BatchNorms folded into the convs before them;
- ``ConcatConvBNReLU`` (LRHead squeezes): BN folded into the 1×1 conv, which is then applied to each
  input at its own resolution before the bilinear resize (conv and resize commute), so the
  stride-16/32 features are projected at 1/4 and 1/16 of the pixels and no concatenated
  high-resolution map is built;
- ``LRBlock``: layer scales folded into ``attn.proj`` and ``mlp.fc2``; a BatchNorm ``norm2``
  (LRHead) folded into ``mlp.fc1``;
- ``IRB``: hidden maps above 64 MB computed in bands of rows (bounded memory at high resolution).

Both paths share what is exact for training too: channels-last maps, copy-free token views, the
identity of ``x + D(x)`` folded into the depth-wise kernel, in-place residual adds without autograd.

The copy is for inference only: its parameters no longer follow the released layout (BatchNorms
are gone), so keep the original model for training and for saving checkpoints.

Design notes: ``docs/design.md``, section 6 (the test pipelines: the fast path).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Eval-only copy of ``model`` (or ``model`` itself with ``inplace=True``) with the folds above.

    The result is in eval mode with ``requires_grad`` off and ``is_reparameterized`` set; ``model``
    is left untouched by default. A model that is already reparameterized is returned as it is.
    """
    if getattr(model, "is_reparameterized", False):
        return model
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    model.requires_grad_(False)
    for module in list(model.modules()):
        if hasattr(module, "reparameterize"):
            module.reparameterize()
    model.is_reparameterized = True
    return model


@torch.no_grad()
def fold_input_affine(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make a 1×1 ``conv`` compute ``conv(x * scale + shift)`` (per input channel) from ``x``, in place.

    ``conv(x·s + t) = (W·s) x + (W t + b)``; exact for 1×1 convs (no padding to disturb).
    """
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError("fold_input_affine needs a dense 1×1 convolution")
    weight = conv.weight
    bias = conv.bias if conv.bias is not None else weight.new_zeros(weight.shape[0])
    conv.bias = nn.Parameter(bias + weight.flatten(1) @ shift, requires_grad=False)
    conv.weight = nn.Parameter(weight * scale.view(1, -1, 1, 1), requires_grad=False)


def batch_norm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of an eval-mode BatchNorm: ``bn(x) = x * scale + shift`` per channel."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def scale_output_channels(layer: nn.Linear | nn.Conv2d, scale: torch.Tensor) -> None:
    """Make ``layer`` compute ``layer(x) * scale`` (per output channel), in place."""
    layer.weight.mul_(scale.view(-1, *([1] * (layer.weight.ndim - 1))))
    if layer.bias is not None:
        layer.bias.mul_(scale)
