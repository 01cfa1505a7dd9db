"""Multiply-accumulates and parameters, counted with ``torch.utils.flop_counter``.

The convention is the one behind the paper's tables (fvcore / mmengine ``analysis``):
multiply-accumulates of convolutions, linear layers and attention matmuls, plus fvcore's
per-element estimates for normalisation, bilinear upsampling and adaptive average pooling.
``FlopCounterMode`` counts FLOPs (2 per MAC); the per-element ops are registered at twice their
weight so that halving gives the MAC convention everywhere.

Design notes: ``docs/design.md``, section 8 (FLOPs counting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils import flop_counter

aten = torch.ops.aten


@dataclass(frozen=True)
class MacCount:
    """Result of :func:`count_macs`.

    Attributes:
        macs: multiply-accumulates of one forward pass (the "FLOPs" of the paper's tables).
        params: elements of the state dict (parameters and BN buffers), as the released layouts count.
        learnable_params: elements of the trainable parameters only.
        by_module: MACs per top-level child module (e.g. ``backbone``, ``decode_head``).
    """

    macs: int
    params: int
    learnable_params: int
    by_module: dict[str, int]


def _per_input_element(macs_per_element: int) -> Callable[..., int]:
    def count(input_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return 2 * macs_per_element * math.prod(input_shape)

    return count


def _per_output_element(macs_per_element: int) -> Callable[..., int]:
    def count(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return 2 * macs_per_element * math.prod(out_shape)

    return count


def _sdpa_cpu(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    """Formulas for the ops ``flop_counter`` does not count, with fvcore's per-element weights:
    affine LayerNorm/GroupNorm/training BatchNorm 5, eval BatchNorm 2, bilinear upsampling 4
    (per output element), adaptive average pooling 1."""
    norm = _per_input_element(5)
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
        aten.native_layer_norm: norm,
        aten.native_group_norm: norm,
        aten.native_batch_norm: norm,
        aten._native_batch_norm_legit: norm,
        aten._native_batch_norm_legit_no_training: _per_input_element(2),
        aten.upsample_bilinear2d: _per_output_element(4),
        aten._adaptive_avg_pool2d: _per_input_element(1),
    }


def count_macs(model: nn.Module, size: tuple[int, int], batch_size: int = 1) -> MacCount:
    """Count the multiply-accumulates of one forward pass of ``model`` on a ``(batch_size, 3, H, W)``
    input, in eval mode.

    For a segmentor the pass is the network the paper counts: the backbone and the decode head's
    raw output (``model.forward_head(model.forward_features(x))``), without the resize of the class
    scores to the input size that ``model(x)`` adds. Any other module is counted as ``model(x)``.

    Args:
        model: any LRFormer model (segmentor or backbone), or any module taking images.
        size: input ``(H, W)``.
        batch_size: images per pass.
    """
    from .models.segmentor import LRFormerSegmentor

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(batch_size, 3, *size, dtype=param.dtype, device=param.device)
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    counted = _RawSegmentorPass(model) if isinstance(model, LRFormerSegmentor) else model
    try:
        with counter, torch.no_grad():
            counted(x)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()  # keyed by module path from the module called: "Root.child.grandchild"
    prefix = type(counted).__name__ + (".segmentor" if counted is not model else "")
    by_module = {name: sum(counts.get(f"{prefix}.{name}", {}).values()) // 2 for name, _ in model.named_children()}
    return MacCount(
        macs=counter.get_total_flops() // 2,
        params=sum(v.numel() for v in model.state_dict().values()),
        learnable_params=sum(p.numel() for p in model.parameters()),
        by_module=by_module,
    )


class _RawSegmentorPass(nn.Module):
    """The pass :func:`count_macs` counts for a segmentor, as a module call so that the counter names
    the segmentor's children: the features and, when there is a head, its raw output."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x: torch.Tensor) -> Any:
        features = self.segmentor.forward_features(x)
        return features if self.segmentor.decode_head is None else self.segmentor.forward_head(features)


count_flops = count_macs
"""Former name of :func:`count_macs` (it always counted multiply-accumulates, the paper's "FLOPs")."""

FlopCount = MacCount
"""Former name of :class:`MacCount`."""
