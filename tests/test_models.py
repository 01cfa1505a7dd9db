"""Model behaviour beyond parity: any input size >= 32, pooled-size arithmetic, create_model."""

from __future__ import annotations

import json
import math

import pytest
import torch

import lrformer
from lrformer.models.layers import pooled_size, pyramid_sizes


def test_pooled_size_hand_values():
    assert pooled_size(64, 64, 16) == (16, 16)
    assert pooled_size(48, 64, 16) == (16, 21)  # 21.333 → 21
    assert pooled_size(64, 40, 16) == (26, 16)  # 25.6 → 26
    assert pooled_size(32, 36, 8) == (8, 9)  # exactly 9.0
    assert pooled_size(20, 30, 11) == (11, 17)  # 16.5 + 0.001 → 17 (not banker's 16)
    assert pooled_size(40, 900, 16) == (16, 360)  # extreme aspect ratios keep their shape
    assert pyramid_sizes(16) == [11, 8, 6, 4]
    assert pyramid_sizes(32) == [22, 16, 12, 8]


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (97, 250), (250, 61)])
def test_any_size_at_least_32_runs(tiny_model, size):
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        features = tiny_model.backbone(x)
        logits = tiny_model(x)
    h, w = math.ceil(size[0] / 2), math.ceil(size[1] / 2)  # first stem conv
    for f in features:  # every stage halves with a k3 s2 p1 conv: ceil(n / 2)
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        assert f.shape[-2:] == (h, w)
    assert logits.shape == (1, 5, math.ceil(size[0] / 8), math.ceil(size[1] / 8))
    assert torch.isfinite(logits).all()


def test_small_and_malformed_inputs_are_rejected(tiny_model):
    with pytest.raises(ValueError, match=r"too small.*H, W >= 32"):
        tiny_model(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tiny_model(torch.randn(3, 64, 64))


def test_batch_elements_are_independent(tiny_model):
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        both = tiny_model(x)
        first = tiny_model(x[:1])
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=0)


def test_create_model_from_yaml_and_json(tmp_path, tiny_cases, tiny_checkpoint, tiny_model):
    cfg = dict(tiny_cases["config"], name="lrformer_t", pretrained=str(tiny_checkpoint))
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    import yaml

    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = tiny_model(x)
        for path in (tmp_path / "m.json", tmp_path / "m.yaml"):
            model = lrformer.create_model(path)
            assert not model.training and model.num_classes == 5
            torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_unknown_names_and_keys_suggest_the_closest(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'lrformer_s'"):
        lrformer.create_model("lrformer_ss")
    with pytest.raises(ValueError, match="Did you mean 'embed_dims'"):
        lrformer.create_model("lrformer_t", embed_dim=[1, 2, 3, 4])
    (tmp_path / "m.yaml").write_text("name: lrformer_t\nnum_clases: 3\n")
    with pytest.raises(ValueError, match="Did you mean 'num_classes'"):
        lrformer.create_model(tmp_path / "m.yaml")


def test_overrides_and_drop_path(tiny_cases):
    model = lrformer.create_model("lrformer_s", num_classes=19, drop_path_rate=0.3, depths=[1, 1, 2, 1])
    assert model.decode_head.conv_seg.out_channels == 19
    rates = [b.drop_path.drop_prob for s in range(1, 5) for b in getattr(model.backbone, f"block{s}")]
    assert rates == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3])


def test_training_forward_backward(tiny_cases):
    model = lrformer.create_model("lrformer_t", **tiny_cases["config"], drop_path_rate=0.2).train()
    logits = model(torch.randn(2, 3, 64, 64))
    logits.mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "pre_norm" not in n)
