"""Small building blocks shared by the LRFormer backbone and the LRHead decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pooled_size(height: int, width: int, target: int) -> tuple[int, int]:
    """Aspect-kept size of a pooled grid (every LRSA pooling uses it).

    The short side becomes ``target``; the long side is scaled with the aspect ratio, rounded
    with Python's ``round`` after adding 0.001 (exactly as the official code does). Symbolic sizes
    (``torch.SymInt``, while exporting with dynamic shapes) take :func:`traceable_pooled_size`,
    which gives the same integers without floats or branches.
    """
    if is_symbolic(height, width):
        return traceable_pooled_size(height, width, target)
    if width >= height:
        return target, round(width * target / height + 0.001)
    return round(height * target / width + 0.001), target


def traceable_pooled_size(height, width, target: int):
    """:func:`pooled_size` in integer arithmetic, so that a traced graph computes it for any input size.

    ``round_ratio(a, b, t) = round(a·t/b + 0.001)`` is at most ``t`` when ``a <= b``, so the short
    side is ``max(t, round_ratio(short, long)) = t`` and the long side ``max(t, round_ratio(long,
    short))``. Neither size is compared with the other: export adds no guard on the aspect ratio.
    """
    return torch.sym_max(target, round_ratio(height, width, target)), torch.sym_max(
        target, round_ratio(width, height, target)
    )


def round_ratio(a, b, target: int):
    """``round(a·t/b + 0.001)`` for positive integers, in integer arithmetic (ints, ``SymInt``s, int arrays).

    Python rounds half to even. With ``z = a·t/b + 0.001 + 1/2 = (1000·a·t + 501·b) / (1000·b)``,
    that is ``⌊z/2⌋ + ⌈(z−1)/2⌉``: ``⌊z⌋`` except when ``z`` is an odd integer (a tie), then ``z − 1``.
    Only non-negative operands (ONNX's integer ``Div`` truncates) and two floor divisions (few
    symbolic terms: the export stays fast). Equal to the float form for every size tested
    (``tests/test_export.py``; ties need a side that is a multiple of 1000).
    """
    numerator, denominator = 1000 * a * target + 501 * b, 1000 * b
    return numerator // (2 * denominator) + (numerator + denominator - 1) // (2 * denominator)


def is_symbolic(*sizes) -> bool:
    """True when a size is a ``torch.SymInt`` (tracing or exporting with dynamic shapes)."""
    return any(isinstance(size, torch.SymInt) for size in sizes)


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


_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # torch < 2.5 has no such query


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (parameters named like ``nn.LayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _is_exporting():
            return self._forward_channels(x)
        x = x.permute(0, 2, 3, 1)  # a free view on channels-last maps
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)

    def _forward_channels(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalisation written over axis 1, for exported graphs: the permutes are free
        in eager PyTorch but become two transposes per norm in ONNX, which cost OpenVINO a layout
        reorder each (a fifth of an int8 LRFormer-T at 512×512); this form converts to one MVN."""
        centred = x - x.mean(1, keepdim=True)
        variance = (centred * centred).mean(1, keepdim=True)
        x = centred * torch.rsqrt(variance + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


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
    """Bilinear resize with ``align_corners=False`` (identity when the size already matches).

    With symbolic sizes the resize is always done (an identity there: same-size bilinear weights
    are exactly 1 and 0), so export adds no guard that two sizes differ.
    """
    if not is_symbolic(*x.shape[-2:], *size) and tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
