"""The inference fast path (``reparameterize_model``) against the plain model and the parity files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrformer
from lrformer.models.block import IRB
from lrformer.models.layers import ResidualDepthwiseConv

TOLERANCE = 1e-4


def _randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and layer scales, so that every fold is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
        for name, param in model.named_parameters():
            if "layer_scale" in name:
                param.copy_(torch.rand(param.shape, generator=generator) + 0.25)


def _assert_same_logits(out: torch.Tensor, plain: torch.Tensor) -> None:
    """1e-4 absolute for logits of order one (the parity weights); relative for the random models,
    whose logits grow to thousands over 20+ blocks (float32 rounding grows with them)."""
    assert out.shape == plain.shape
    assert (out - plain).abs().max().item() <= TOLERANCE * max(1.0, plain.abs().max().item())


def _small_model(**overrides) -> nn.Module:
    torch.manual_seed(0)
    args = dict(embed_dims=[16, 32, 40, 64], depths=[1, 1, 2, 1], head_channels=32, num_classes=7)
    model = lrformer.create_model("lrformer_t", **{**args, **overrides}).eval()
    _randomize_norms(model)
    return model


def test_fast_path_reproduces_the_official_logits(tiny_model, tiny_cases):
    fast = lrformer.reparameterize_model(tiny_model)
    with torch.no_grad():
        for case in tiny_cases["cases"]:
            x = case["input"].float()
            assert (fast.forward_head(fast.forward_features(x)) - case["logits"]).abs().max().item() < TOLERANCE
            assert (fast(x) - tiny_model(x)).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("shape", [(2, 3, 97, 161), (1, 3, 64, 200), (1, 3, 33, 45)])
def test_fast_path_matches_the_plain_model_on_any_size(shape):
    model = _small_model()
    fast = lrformer.reparameterize_model(model)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain, out = model.forward_head(model.forward_features(x)), fast.forward_head(fast.forward_features(x))
        plain_scores, scores = model(x), fast(x)
    assert plain.shape == (shape[0], 7, -(-shape[2] // 8), -(-shape[3] // 8))
    _assert_same_logits(out, plain)
    assert plain_scores.shape == (shape[0], 7, *shape[2:])
    _assert_same_logits(scores, plain_scores)
    assert plain.abs().max().item() > 0.1  # not a vacuous comparison


def test_fast_path_with_xl_pre_norm_blocks():
    xl_like = _small_model(depths=[1, 1, 21, 1])
    assert xl_like.backbone.block3[7].pre_norm is not None
    fast = lrformer.reparameterize_model(xl_like)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        _assert_same_logits(fast(x), xl_like(x))


def test_reparameterize_leaves_the_model_untouched_and_trainable():
    model = _small_model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = lrformer.reparameterize_model(model)
    assert fast is not model and fast.is_reparameterized and not fast.training
    assert lrformer.reparameterize_model(fast) is fast
    assert model.training and not hasattr(model, "is_reparameterized")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # the fast copy has no BatchNorm left in the stem / squeezes and no layer scales
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.backbone.patch_embed1.modules())
    assert fast.decode_head.squeeze1.bn is None and fast.decode_head.fuse_block1.layer_scale_1 is None
    assert not any(p.requires_grad for p in fast.parameters())
    # the original still trains: gradients reach every parameter
    out = model(torch.randn(2, 3, 64, 64))
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("batch,height,width,rows", [(1, 37, 23, 1), (2, 20, 9, 3), (1, 16, 16, 16)])
def test_irb_in_bands_equals_the_whole_map(batch, height, width, rows):
    torch.manual_seed(0)
    irb = IRB(8, 32).eval()
    x = torch.randn(batch, 8, height, width)
    whole = irb(x)  # autograd on: the plain path
    irb.compute_in_bands(batch * 32 * width * rows)  # `rows` rows per band
    with torch.no_grad():
        banded = irb(x)
    torch.testing.assert_close(banded, whole, atol=1e-6, rtol=1e-5)


def test_fast_path_in_bands_matches_the_plain_model(monkeypatch):
    model = _small_model()
    monkeypatch.setattr(IRB, "BAND_ELEMENTS", 5_000)  # forces bands in every stage and in the head
    fast = lrformer.reparameterize_model(model)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        _assert_same_logits(fast(x), model(x))


def test_residual_depthwise_conv_is_x_plus_conv_in_forward_and_backward():
    torch.manual_seed(0)
    fused = ResidualDepthwiseConv(6)
    plain = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    plain.load_state_dict(fused.state_dict())
    assert set(fused.state_dict()) == {"weight", "bias"}  # the identity is not saved
    x = torch.randn(2, 6, 9, 11, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out, ref = fused(x), x2 + plain(x2)
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad)
    torch.testing.assert_close(x.grad, x2.grad)


def test_fast_path_compiles_without_graph_breaks(tiny_model, tiny_cases):
    fast = lrformer.reparameterize_model(tiny_model)
    x = tiny_cases["cases"][1]["input"].float()
    with torch.no_grad():
        explanation = torch._dynamo.explain(fast)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_fast_path_under_bfloat16_autocast(tiny_model, tiny_cases):
    fast = lrformer.reparameterize_model(tiny_model)
    x = tiny_cases["cases"][0]["input"].float()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast.forward_head(fast.forward_features(x))
        scores = fast(x)
    expected = tiny_cases["cases"][0]["logits"]
    assert out.dtype == torch.bfloat16 and scores.dtype == torch.float32  # class scores always in float32
    torch.testing.assert_close(scores, torch.nn.functional.interpolate(out.float(), x.shape[-2:], mode="bilinear"))
    assert (out.float() - expected).abs().max().item() < 0.05 * expected.abs().max().item()
    assert (out.float().argmax(1) == expected.argmax(1)).float().mean().item() > 0.95


def test_predictor_runs_the_fast_path_without_touching_the_model(tiny_model):
    tiny_model.train()
    fast = lrformer.Predictor(tiny_model)
    assert fast.model.is_reparameterized and fast.model is not tiny_model and tiny_model.training
    plain = lrformer.Predictor(tiny_model, fast=False)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    assert (fast.scores(x) - plain.scores(x)).abs().max().item() < TOLERANCE
