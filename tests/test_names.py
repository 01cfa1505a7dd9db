"""Names that say what they do: ``count_macs`` (with its former name), a backbone of another input
channel count, the IRB's banded inference switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrformer
from lrformer.models import IRB, LRFormer


def test_count_macs_counts_multiply_accumulates_and_keeps_its_former_name():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False))
    result = lrformer.count_macs(model, (8, 8))
    assert result.macs == 8 * 8 * 4 * 3  # one MAC per weight per output pixel
    assert lrformer.count_flops is lrformer.count_macs
    assert lrformer.FlopCount is lrformer.MacCount


def test_a_segmentor_is_counted_without_the_final_resize_to_the_input_size():
    model = lrformer.create_model("lrformer_t", num_classes=19)
    whole = lrformer.count_macs(model, (64, 96)).macs
    features = lrformer.count_macs(model.backbone, (64, 96)).macs
    head_inputs = model.forward_features(torch.zeros(1, 3, 64, 96))
    head = lrformer.count_macs(_HeadOnly(model.decode_head, head_inputs), (64, 96)).macs
    assert whole == features + head


class _HeadOnly(nn.Module):
    """Runs the decode head on fixed features, whatever the input (to count the head alone)."""

    def __init__(self, head: nn.Module, features: list[torch.Tensor]) -> None:
        super().__init__()
        self.head, self.features = head, features

    def forward(self, x: torch.Tensor):
        return self.head(self.features)


def test_a_backbone_takes_the_channel_count_it_was_built_for():
    torch.manual_seed(0)
    backbone = LRFormer(in_chans=4, embed_dims=(16, 32, 64, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 4)).eval()
    features = backbone(torch.randn(2, 4, 64, 96))
    assert [f.shape[1:] for f in features] == [(16, 16, 24), (32, 8, 12), (64, 4, 6), (64, 2, 3)]
    assert backbone.patch_embed1.conv1[0].weight.shape[1] == 4
    with pytest.raises(ValueError, match=r"expects a \(B, 4, H, W\) image batch, got shape \(1, 3, 64, 64\)"):
        backbone(torch.randn(1, 3, 64, 64))


def test_the_irb_computes_in_bands_only_when_asked():
    irb = IRB(4, 16)
    assert irb.max_band_elements is None
    irb.compute_in_bands()
    assert irb.max_band_elements == IRB.BAND_ELEMENTS
    irb.compute_in_bands(0)
    assert irb.max_band_elements is None
    fast = lrformer.reparameterize_model(lrformer.create_model("lrformer_t", num_classes=5))
    assert {m.max_band_elements for m in fast.modules() if isinstance(m, IRB)} == {IRB.BAND_ELEMENTS}
