"""Feature backbones for other frameworks: create_model(features_only=True, out_indices=...), feature_info,
pruned stages and strict checkpoint loading into them."""

from __future__ import annotations

import math
import re

import pytest
import torch

import lrformer
from lrformer.errors import ConfigError
from lrformer.models.registry import BACKBONE_KEYS, variant_layout
from lrformer.models.weight_loading import CheckpointMismatchError

from .conftest import DATA

STAGE_MODULES = ("patch_embed", "block", "d_convs")


@pytest.fixture(scope="module")
def released_state():
    return torch.load(DATA / "tiny_released_layout.pth", weights_only=True)["state_dict"]


@pytest.fixture()
def backbone_config(tiny_cases):
    return {k: v for k, v in tiny_cases["config"].items() if k in BACKBONE_KEYS}


@pytest.fixture(scope="module")
def full_features(tiny_cases):
    """An input that is not a multiple of 32 and the four features of the full tiny backbone for it."""
    model = lrformer.create_model("lrformer_t", **tiny_cases["config"], pretrained=DATA / "tiny_released_layout.pth")
    x = torch.randn(1, 3, 100, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x, model.backbone(x)


def _features(backbone_config, **kwargs):
    return lrformer.create_model("lrformer_t", features_only=True, **backbone_config, **kwargs)


def _stage_of(key: str) -> int:
    """1-based stage of a backbone key (``block3.0.cpe.weight`` → 3)."""
    return int(re.match(r"(?:patch_embed|block|d_convs)(\d)\.", key)[1])


def _backbone_part(state):
    return {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}


def _assert_same_weights(model, state):
    own = model.state_dict()
    assert set(own) <= set(state)
    for key, value in own.items():
        assert torch.equal(value, state[key].to(value.dtype)), key


@pytest.mark.parametrize(
    "out_indices, stages", [((1, 2, 3), [1, 2, 3]), ((3, 0), [3, 0]), ((2,), [2]), ((-1,), [3]), ((-3, -2), [1, 2])]
)
def test_features_equal_the_full_backbone_and_agree_with_feature_info(
    backbone_config, full_features, tiny_checkpoint, out_indices, stages
):
    model = _features(backbone_config, out_indices=out_indices, pretrained=tiny_checkpoint)
    assert not model.training and model.out_indices == tuple(stages)
    x, full = full_features
    with torch.no_grad():
        features = model(x)
    info = model.feature_info
    assert len(features) == len(info) == len(stages) and info.out_indices == tuple(stages)
    assert info.channels() == [backbone_config["embed_dims"][s] for s in stages]
    assert info.reduction() == [4 * 2**s for s in stages]
    assert info.module_name() == [f"block{s + 1}" for s in stages]
    for feature, stage, channels, stride in zip(features, stages, info.channels(), info.reduction(), strict=True):
        assert feature.shape == (1, channels, math.ceil(100 / stride), math.ceil(150 / stride))
        assert torch.equal(feature, full[stage])  # bit-equal
    assert model.config == {
        "name": "lrformer_t",
        **{k: backbone_config.get(k, lrformer.models.VARIANTS["lrformer_t"][k]) for k in BACKBONE_KEYS},
        "features_only": True,
        "out_indices": stages,
        "pretrained": str(tiny_checkpoint),
    }


def test_the_segmentor_backbone_describes_its_four_features(tiny_model):
    info = tiny_model.backbone.feature_info
    assert info.channels() == [16, 32, 80, 64] and info.reduction() == [4, 8, 16, 32]
    assert info.module_name() == ["block1", "block2", "block3", "block4"]
    assert list(info)[2] == {"num_chs": 80, "reduction": 16, "module": "block3", "index": 2}
    assert info.channels(1) == 32 and info.reduction([0, 3]) == [4, 32]
    assert info.get_dicts(keys=("num_chs",), idx=3) == {"num_chs": 64}
    assert tiny_model.backbone.pruned_prefixes == ()


def test_pruned_stages_have_no_parameters_and_every_parameter_gets_a_gradient(backbone_config):
    full = _features(backbone_config, drop_path_rate=0.0)
    model = _features(backbone_config, drop_path_rate=0.0, out_indices=(0, 1))
    assert {_stage_of(k) for k in model.state_dict()} == {1, 2}
    assert not any(name.startswith(("patch_embed3", "block3", "d_convs4")) for name, _ in model.named_modules())
    assert model.pruned_prefixes == tuple(f"{m}{s}." for s in (3, 4) for m in STAGE_MODULES)
    expected = sum(p.numel() for name, p in full.named_parameters() if _stage_of(name) <= 2)
    assert sum(p.numel() for p in model.parameters()) == expected
    model.train()
    sum(f.mean() for f in model(torch.randn(2, 3, 64, 64))).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []  # DDP without find_unused


@pytest.mark.parametrize("name", lrformer.list_models())
def test_every_variant_gives_the_backbone_layout_of_its_released_model(name):
    layout = {k: v for k, v in variant_layout(name).items() if k.startswith("backbone.")}
    with torch.device("meta"):
        model = lrformer.create_model(name, features_only=True)
        first = lrformer.create_model(name, features_only=True, out_indices=(0,))
    assert {f"backbone.{k}": tuple(v.shape) for k, v in model.state_dict().items()} == layout
    assert model.feature_info.channels() == lrformer.models.VARIANTS[name]["embed_dims"]
    assert {f"backbone.{k}" for k in first.state_dict()} == {k for k in layout if _stage_of(k[9:]) == 1}


def test_segmentation_imagenet_and_own_checkpoints_load_strictly(tmp_path, backbone_config, released_state, tiny_cases):
    backbone = _backbone_part(released_state)
    pruned = [k for k in backbone if _stage_of(k) == 4]
    # a released segmentation checkpoint: decode head and stage 4 ignored, under their names in the file
    model = _features(backbone_config, out_indices=(0, 1, 2))
    report = lrformer.load_checkpoint(model, DATA / "tiny_released_layout.pth")
    assert report.ok
    decode_head = [k for k in released_state if k.startswith("decode_head.")]
    assert sorted(report.ignored) == sorted(decode_head + [f"backbone.{k}" for k in pruned])
    _assert_same_weights(model, backbone)
    # an ImageNet backbone-only file with its classifier
    imagenet = tmp_path / "in1k.pth"
    torch.save({"model": {**backbone, "head.weight": torch.zeros(1000, 64), "head.bias": torch.zeros(1000)}}, imagenet)
    model = _features(backbone_config, out_indices=(1, 2))
    report = lrformer.load_checkpoint(model, imagenet)
    assert report.ok and sorted(report.ignored) == sorted(["head.bias", "head.weight", *pruned])
    _assert_same_weights(model, backbone)
    # our own checkpoint names its variant and head; the head settings are not used
    segmentor = lrformer.create_model(
        "lrformer_t", **tiny_cases["config"], pretrained=DATA / "tiny_released_layout.pth"
    )
    own = tmp_path / "own.pth"
    description = lrformer.models.factory.model_description(segmentor, list("abcde"))
    torch.save({"state_dict": segmentor.state_dict(), "lrformer": description}, own)
    model = lrformer.create_model(own, features_only=True, out_indices=(-1,))
    assert model.config["name"] == "lrformer_t" and "num_classes" not in model.config
    _assert_same_weights(model, backbone)


def test_a_wrong_checkpoint_still_fails_strictly(tmp_path, backbone_config, released_state):
    state = dict(released_state)
    del state["backbone.block2.0.cpe.bias"]
    state["backbone.block1.0.norm1.weight"] = torch.zeros(3)
    state["backbone.block4.0.cpe.weight"] = torch.zeros(1)  # a pruned stage: not checked
    model = _features(backbone_config, out_indices=(1, 2))
    with pytest.raises(CheckpointMismatchError) as info:
        lrformer.load_checkpoint(model, state)
    message = str(info.value)
    assert "block1.0.norm1.weight: checkpoint [3] vs model [16]" in message
    assert "missing" in message and "block2.0.cpe.bias [32]" in message
    assert "block4" not in message and "features_only, out_indices=(1, 2)" in message
    with pytest.raises(CheckpointMismatchError, match=r"different shape"):  # another stage-4 width
        _features({**backbone_config, "embed_dims": [16, 32, 80, 128]}, pretrained=DATA / "tiny_released_layout.pth")


@pytest.mark.parametrize(
    "out_indices, match",
    [
        ((0, 4), r"has 4, but LRFormer has 4 stages .*use integers in -4\.\.3"),
        ((-5,), r"has -5, but"),
        ((1, 1), r"names stage 1 twice: give each stage once"),
        ((3, -1), r"names stage 3 twice"),
        ((), r"out_indices is empty: name at least one stage"),
        (3, r"must be a tuple of stage indices"),
        ((1.0, 2), r"has 1\.0, but"),
    ],
)
def test_bad_out_indices_are_one_line_errors(out_indices, match):
    with pytest.raises(ConfigError, match=match) as info:
        lrformer.create_model("lrformer_t", features_only=True, out_indices=out_indices)
    assert "\n" not in str(info.value)


def test_head_arguments_and_out_indices_alone_are_refused():
    with pytest.raises(ConfigError, match=r"add features_only=True, e\.g\. create_model\('lrformer_t', features_only"):
        lrformer.create_model("lrformer_t", out_indices=(1, 2, 3))
    for kwargs in ({"num_classes": 19}, {"reset_classifier": True}, {"head_channels": 64}):
        with pytest.raises(ConfigError, match=f"without decode head or classifier: drop {next(iter(kwargs))}"):
            lrformer.create_model("lrformer_t", features_only=True, **kwargs)


def test_model_file_as_name_and_reparameterized_features(tiny_model_file, full_features):
    model = lrformer.create_model(tiny_model_file, features_only=True, out_indices=(1, 2, 3))  # head keys unused
    fast = lrformer.reparameterize_model(model)
    assert fast.is_reparameterized and fast.feature_info.channels() == [32, 80, 64]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # the stem's BNs are folded
    x, full = full_features
    with torch.no_grad():
        for ours, reference in zip(fast(x), full[1:], strict=True):
            torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
