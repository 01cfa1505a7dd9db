"""Model behaviour beyond parity: any input size >= 32 against the official structure, pooled-size
arithmetic, create_model, gradients, and the decode-head contract (``model(x)``, ``predict``, ``loss``)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import lrformer
from lrformer.engine.losses import TrainingObjective
from lrformer.errors import ConfigError
from lrformer.models import DecodeHead
from lrformer.models.layers import pooled_size, pyramid_sizes

from .test_official_reference import load_reference


def test_pooled_size_hand_values():
    assert pooled_size(64, 64, 16) == (16, 16)
    assert pooled_size(48, 64, 16) == (16, 21)  # 21.333 → 21
    assert pooled_size(64, 40, 16) == (26, 16)  # 25.6 → 26
    assert pooled_size(32, 36, 8) == (8, 9)  # exactly 9.0
    assert pooled_size(20, 30, 11) == (11, 17)  # 16.5 + 0.001 → 17 (not banker's 16)
    assert pooled_size(40, 900, 16) == (16, 360)  # extreme aspect ratios keep their shape
    assert pyramid_sizes(16) == [11, 8, 6, 4]
    assert pyramid_sizes(32) == [22, 16, 12, 8]


@pytest.fixture(scope="module")
def official_tiny(tiny_cases, tiny_checkpoint):
    """The official-structure reference (``benchmarks/official_reference.py``) with the tiny weights."""
    state = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    model = load_reference().EncoderDecoder({**tiny_cases["config"], "name": "lrformer_t"})
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (45, 130), (101, 37)])
def test_any_size_at_least_32_equals_the_official_structure(tiny_model, official_tiny, size):
    """Odd sizes and aspect ratios: features, stride-8 logits and class scores equal the official
    structure's, computed by its own code (tokens, written-out attention, its own pooled sizes)."""
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.no_grad():
        features = tiny_model.forward_features(x)
        logits = tiny_model.forward_head(features)
        scores = tiny_model(x)
        official_features = official_tiny.backbone(x)
        official_logits = official_tiny.decode_head(official_features)
        official_scores = official_tiny(x)
    h, w = math.ceil(size[0] / 2), math.ceil(size[1] / 2)  # first stem conv
    for ours, official in zip(features, official_features, strict=True):
        h, w = math.ceil(h / 2), math.ceil(w / 2)  # every stage halves with a k3 s2 p1 conv: ceil(n / 2)
        assert ours.shape[-2:] == official.shape[-2:] == (h, w)
        torch.testing.assert_close(ours, official, rtol=0, atol=1e-4)
    assert logits.shape == (1, 5, math.ceil(size[0] / 8), math.ceil(size[1] / 8))
    torch.testing.assert_close(logits, official_logits, rtol=0, atol=1e-4)
    assert scores.shape == (1, 5, *size) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, official_scores, rtol=0, atol=1e-4)


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


def test_training_gradients_equal_finite_differences(tiny_cases):
    """Backward through the whole train-mode network (stochastic depth, dropout and BatchNorm batch
    statistics, replayed by seeding) equals central differences in float64: along a random direction
    of all parameters at once, and element by element in the stem, a stage-2 LRSA and the head. No
    parameter is cut off from the loss."""
    config = {**tiny_cases["config"], "q_pooled_sizes": [8, 8, 8, 8], "head_q_pooled_size": 8}  # cheaper LRSAs
    model = lrformer.create_model("lrformer_t", **config, drop_path_rate=0.2).double().train()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 48, 64, generator=generator, dtype=torch.float64)
    weights = torch.randn(2, 5, 6, 8, generator=generator, dtype=torch.float64)

    def loss() -> torch.Tensor:
        torch.manual_seed(3)  # the same drop-path and dropout masks at every call
        return (model.forward_head(model.forward_features(x)) * weights).sum()

    loss().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"{name} gets no gradient"

    def central_difference(steps: list[tuple[torch.Tensor, torch.Tensor]], eps: float = 1e-6) -> float:
        """``(L(θ + ε·v) − L(θ − ε·v)) / 2ε`` for the parameter steps ``v``."""
        with torch.no_grad():
            for parameter, step in steps:
                parameter.add_(step, alpha=eps)
            up = loss().item()
            for parameter, step in steps:
                parameter.add_(step, alpha=-2 * eps)
            down = loss().item()
            for parameter, step in steps:
                parameter.add_(step, alpha=eps)
        return (up - down) / (2 * eps)

    parameters = dict(model.named_parameters())
    direction = [(p, torch.randn(p.shape, generator=generator, dtype=p.dtype)) for p in parameters.values()]
    analytic = sum((p.grad * v).sum().item() for p, v in direction)
    assert analytic == pytest.approx(central_difference(direction), rel=1e-5)
    for name in ["backbone.patch_embed1.conv1.0.weight", "backbone.block2.0.attn.kv.0.weight",
                 "decode_head.squeeze1.bn.weight"]:  # fmt: skip
        parameter = parameters[name]
        element = torch.zeros_like(parameter).view(-1)
        element[parameter.grad.abs().argmax()] = 1
        numeric = central_difference([(parameter, element.view(parameter.shape))])
        assert parameter.grad.flatten()[element.bool()].item() == pytest.approx(numeric, rel=1e-5), name


def test_model_output_is_the_head_prediction_at_the_input_size(tiny_model):
    """``model(x)`` = ``decode_head.predict(features, (H, W))`` = the stride-8 logits of
    ``forward_head`` resized bilinearly (mmseg's ``encode_decode``); ``predict`` honours any size."""
    x = torch.randn(2, 3, 75, 101, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = tiny_model.forward_features(x)
        logits = tiny_model.forward_head(features)
        scores = tiny_model(x)
        torch.testing.assert_close(logits, tiny_model.decode_head(tiny_model.backbone(x)), rtol=0, atol=0)
        torch.testing.assert_close(scores, tiny_model.decode_head.predict(features, (75, 101)), rtol=0, atol=0)
        other = tiny_model.decode_head.predict(features, (50, 33))
    assert isinstance(tiny_model.decode_head, DecodeHead)
    assert logits.shape == (2, 5, 10, 13) and scores.shape == (2, 5, 75, 101) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, F.interpolate(logits, (75, 101), mode="bilinear"), rtol=0, atol=1e-6)
    torch.testing.assert_close(other, F.interpolate(logits, (50, 33), mode="bilinear"), rtol=0, atol=1e-6)


def test_lrhead_loss_is_the_cross_entropy_over_all_pixels(tiny_model):
    """``LRHead.loss`` and the training objective: cross-entropy of the logits resized to the labels,
    summed over labelled pixels and divided by **all** pixels (mmseg's ``avg_non_ignore=False``)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 64, 72, generator=generator)
    labels = torch.randint(0, 5, (2, 64, 72), generator=generator)
    labels[0, :10] = 255
    with torch.no_grad():
        logits = tiny_model.forward_head(tiny_model.forward_features(x))
        terms = tiny_model.decode_head.loss(logits, labels)
        loss, logged = TrainingObjective(tiny_model)(x, labels)  # eval mode: no dropout, the same logits
    log_p = F.interpolate(logits.double(), (64, 72), mode="bilinear").log_softmax(1)
    labelled = labels != 255
    picked = log_p.gather(1, labels.clamp(max=4)[:, None])[:, 0]
    expected = -(picked * labelled).sum() / labels.numel()
    assert set(terms) == {"loss", "loss_ce"} and set(logged) == {"loss_ce"}
    assert terms["loss"].item() == terms["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == logged["loss_ce"].item() == terms["loss"].item() and not logged["loss_ce"].requires_grad
    relabelled = torch.where(labels == 255, 7, labels)
    assert tiny_model.decode_head.loss(logits, relabelled, ignore_index=7)["loss"].item() == terms["loss"].item()


def test_a_segmentor_without_decode_head_gives_features_not_scores():
    model = lrformer.create_model("lrformer_xl", depths=[1, 1, 1, 1]).eval()
    assert model.decode_head is None and model.num_classes is None
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ConfigError, match=r"lrformer_xl has no decode head.*model\.forward_features\(x\)"):
        model(x)
    with torch.no_grad():
        features = model.forward_features(x)
    assert [f.shape[1] for f in features] == [128, 256, 640, 768]
    assert model.attention_elements(64, 64) == model.backbone.attention_elements(64, 64) > 0
    model.set_grad_checkpointing(True)
    assert model.backbone.grad_checkpointing


def test_the_contract_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        DecodeHead()
