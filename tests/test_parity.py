"""The tiny parity cases: official features, logits and class scores reproduced in float32 on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lrformer

from .conftest import DATA, SHARED_PARITY

TOLERANCE = 1e-4


def _case_files():
    files = [DATA / "tiny_cases.pt"]
    if (SHARED_PARITY / "tiny_cases.pt").is_file():
        files.append(SHARED_PARITY / "tiny_cases.pt")
    return files


@pytest.mark.parametrize("cases_file", _case_files(), ids=lambda p: p.parent.name)
def test_tiny_parity(cases_file, tiny_checkpoint):
    data = torch.load(cases_file, weights_only=True)
    model = lrformer.create_model("lrformer_t", **data["config"], pretrained=tiny_checkpoint)
    assert not model.training
    with torch.no_grad():
        for case in data["cases"]:
            x = case["input"].float()
            features = model.forward_features(x)
            if case["features"] is not None:
                for ours, official in zip(features, case["features"], strict=True):
                    assert ours.shape == official.shape
                    assert (ours - official).abs().max().item() < TOLERANCE
            logits = model.forward_head(features)  # the official decode-head output, at stride 8
            assert logits.shape == case["logits"].shape
            assert (logits - case["logits"]).abs().max().item() < TOLERANCE
            # model(x): the official encode_decode, logits resized to the input size
            expected = F.interpolate(case["logits"].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
            assert (model(x) - expected).abs().max().item() < TOLERANCE


def test_fp16_weights_are_cast_to_the_model_dtype(tiny_model, tiny_cases):
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    model64 = lrformer.create_model("lrformer_t", **tiny_cases["config"]).double()
    lrformer.load_checkpoint(model64, DATA / "tiny_released_layout.pth")
    assert all(p.dtype == torch.float64 for p in model64.parameters())
    torch.testing.assert_close(model64.backbone.block1[0].cpe.weight.float(), tiny_model.backbone.block1[0].cpe.weight)
