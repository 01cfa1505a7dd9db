"""load_checkpoint: every released form loads, and mismatches are reported key by key."""

from __future__ import annotations

import pytest
import torch

import lrformer
from lrformer.errors import CheckpointError
from lrformer.models.weight_loading import CheckpointMismatchError

from .conftest import DATA


@pytest.fixture()
def released_state():
    return torch.load(DATA / "tiny_released_layout.pth", weights_only=True)["state_dict"]


def _fresh(tiny_cases):
    return lrformer.create_model("lrformer_t", **tiny_cases["config"]).eval()


def _assert_same_weights(model, state):
    own = model.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(own[key], value.to(own[key].dtype), rtol=0, atol=0)


def test_wrong_shape_missing_and_extra_key_are_all_named(tmp_path, tiny_cases, released_state):
    state = dict(released_state)
    state["decode_head.conv_seg.weight"] = torch.zeros(7, 32, 1, 1, dtype=torch.float16)
    del state["backbone.block2.0.cpe.bias"]
    state["backbone.block9.0.extra.weight"] = torch.zeros(3, 4)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        lrformer.load_checkpoint(_fresh(tiny_cases), path)
    message = str(info.value)
    assert "decode_head.conv_seg.weight: checkpoint [7, 32, 1, 1] vs model [5, 32, 1, 1]" in message
    assert "missing" in message and "backbone.block2.0.cpe.bias [32]" in message
    assert "unexpected" in message and "backbone.block9.0.extra.weight [3, 4]" in message
    assert str(path) in message


def test_non_strict_load_reports_and_loads_the_rest(tmp_path, tiny_cases, released_state):
    state = dict(released_state)
    del state["backbone.block2.0.cpe.bias"]
    state["junk"] = torch.ones(2)
    model = _fresh(tiny_cases)
    report = lrformer.load_checkpoint(model, state, strict=False)
    assert list(report.missing) == ["backbone.block2.0.cpe.bias"]
    assert list(report.unexpected) == ["junk"]
    _assert_same_weights(model, {k: v for k, v in state.items() if k != "junk"})


def test_fp16_module_prefixed_model_wrapped_file_loads(tmp_path, tiny_cases, released_state):
    path = tmp_path / "wrapped.pth"
    torch.save(
        {
            "model": {f"module.{k}": v.half() if v.is_floating_point() else v for k, v in released_state.items()},
            "meta": {"iter": 3},
        },
        path,
    )
    model = _fresh(tiny_cases)
    assert lrformer.load_checkpoint(model, path).ok
    _assert_same_weights(model, released_state)
    assert model.backbone.patch_embed1.conv1[0].weight.dtype == torch.float32


def test_bare_state_dict_loads(tmp_path, tiny_cases, released_state):
    path = tmp_path / "bare.pth"
    torch.save(released_state, path)
    model = _fresh(tiny_cases)
    lrformer.load_checkpoint(model, path)
    _assert_same_weights(model, released_state)


def test_backbone_only_checkpoint_loads_into_segmentor_and_backbone(tmp_path, tiny_cases, released_state):
    backbone = {k[len("backbone.") :]: v for k, v in released_state.items() if k.startswith("backbone.")}
    backbone["head.weight"] = torch.zeros(1000, 64)  # an ImageNet classifier, ignored
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": backbone}, path)
    model = _fresh(tiny_cases)
    head_before = model.decode_head.conv_seg.weight.clone()
    report = lrformer.load_checkpoint(model, path)
    assert report.ok and report.ignored == ["head.weight"]
    _assert_same_weights(model.backbone, {k: v for k, v in backbone.items() if k != "head.weight"})
    assert torch.equal(model.decode_head.conv_seg.weight, head_before)
    # a segmentor checkpoint into a bare backbone
    bare = lrformer.LRFormer(
        **{k: tiny_cases["config"][k] for k in ("embed_dims", "depths", "num_heads", "mlp_ratios", "q_pooled_sizes")}
    )
    lrformer.load_checkpoint(bare, DATA / "tiny_released_layout.pth")
    _assert_same_weights(
        bare, {k[len("backbone.") :]: v for k, v in released_state.items() if k.startswith("backbone.")}
    )


def test_mismatch_message_names_the_variant_the_file_looks_like(tmp_path):
    with torch.device("meta"):
        small = lrformer.create_model("lrformer_s", num_classes=19)
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in small.state_dict().items()}
    model = lrformer.create_model("lrformer_t", num_classes=19)
    with pytest.raises(CheckpointMismatchError, match=r"looks like lrformer_s with 19 classes"):
        lrformer.load_checkpoint(model, state)


def test_unreadable_and_missing_files_give_clear_errors(tmp_path, tiny_cases):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*bad.pth"):
        lrformer.load_checkpoint(_fresh(tiny_cases), bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lrformer.load_checkpoint(_fresh(tiny_cases), tmp_path / "nope.pth")


def test_numpy_metadata_in_mmengine_style_checkpoints_is_accepted(tmp_path, tiny_cases, released_state):
    import numpy as np

    path = tmp_path / "mm.pth"
    torch.save(
        {"state_dict": released_state, "meta": {"hook_msgs": {"best_score": np.float64(0.4)}, "x": np.arange(2)}}, path
    )
    model = _fresh(tiny_cases)
    assert lrformer.load_checkpoint(model, path).ok


def test_imagenet_file_into_a_bare_backbone_ignores_the_classifier(tmp_path, tiny_cases, released_state):
    backbone = {k[len("backbone.") :]: v for k, v in released_state.items() if k.startswith("backbone.")}
    path = tmp_path / "in1k.pth"
    torch.save({"model": {**backbone, "head.weight": torch.zeros(1000, 64), "head.bias": torch.zeros(1000)}}, path)
    model = _fresh(tiny_cases)
    report = lrformer.load_checkpoint(model.backbone, path)
    assert report.ok and sorted(report.ignored) == ["head.bias", "head.weight"]
    _assert_same_weights(model.backbone, backbone)


def test_the_former_name_of_model_description_still_imports():
    from lrformer.models.factory import describe, model_description

    assert describe is model_description  # checkpoint-writing code outside the package may import it
