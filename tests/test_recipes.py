"""The shipped training configs against the official recipes, as mmengine / mmseg / mmdet build them.

Expectations come from ``tests/data/official_recipes.json.gz`` (see tests/data/README.md): every
parameter's learning rate and weight decay from mmengine's optimizer constructor on the official
model and config, the learning rate of mmengine's stepped schedulers, and the recipe fields of the
official config files.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import lrformer
from lrformer.data.augment import RandomChoiceResize, RandomResize, build_resize
from lrformer.data.datasets import load_spec
from lrformer.engine.config import load_config
from lrformer.engine.losses import TrainingObjective
from lrformer.engine.optim import build_optimizer, build_scheduler, expand_custom_keys
from lrformer.image.transforms import MEAN, STD
from lrformer.inference.predictor import model_defaults

CONFIGS = Path(__file__).parent.parent / "configs"
DATA = Path(__file__).parent / "data" / "official_recipes.json.gz"

OFFICIAL = {
    "lrformer_t_ade20k.yaml": ["lrformer-t-160k_ade20k"],
    "lrformer_s_ade20k.yaml": ["lrformer-s-160k_ade20k"],
    "lrformer_b_ade20k.yaml": ["lrformer-b-160k_ade20k"],
    "lrformer_l_ade20k.yaml": ["lrformer-l-160k_ade20k"],
    "lrformer_t_plus_ade20k.yaml": ["lrformer-t-plus-160k_ade20k-512x512"],
    "lrformer_s_plus_ade20k.yaml": ["lrformer-s-plus-160k_ade20k-512x512"],
    "lrformer_b_plus_ade20k.yaml": ["lrformer-b-plus-160k_ade20k-512x512"],
    "lrformer_l_plus_ade20k.yaml": ["lrformer-l-plus-160k_ade20k-512x512"],
    "lrformer_l_plus_ade20k_640.yaml": [
        "lrformer-l-plus-160k_ade20k-640x640",
        "lrformer-l-plus-in22k-160k_ade20k-640x640",  # the same recipe with the ImageNet-22K backbone
    ],
    "lrformer_xl_plus_ade20k_640.yaml": ["lrformer-xl-plus-in22k-160k_ade20k-640x640"],
}
"""Shipped config → the official config file(s) it reproduces."""

NOT_OFFICIAL = {"ade20k_base.yaml", "plus_ade20k_base.yaml", "plus_ade20k_640_base.yaml",
                "lrformer_t_cityscapes.yaml", "lrformer_t_cocostuff.yaml"}  # fmt: skip
"""Bases, and recipes the official release has no config file for (Cityscapes, COCO-Stuff)."""

PAIRS = [(ours, official) for ours, officials in OFFICIAL.items() for official in officials]


@pytest.fixture(scope="module")
def expected():
    with gzip.open(DATA, "rt") as f:
        return json.load(f)


def _meta_model(config):
    with torch.device("meta"):
        return lrformer.create_model(
            config["model"]["name"], num_classes=150, drop_path_rate=config["model"]["drop_path_rate"]
        )


def test_every_shipped_config_is_classified():
    demo = {"demo.yaml"}  # the config of `lrformer demo` shares the folder; tests/test_demo.py checks it
    assert {p.name for p in CONFIGS.glob("*.yaml")} == set(OFFICIAL) | NOT_OFFICIAL | demo


@pytest.mark.parametrize("ours, official", PAIRS)
def test_every_parameter_gets_mmengines_lr_and_weight_decay(ours, official, expected):
    config = load_config(CONFIGS / ours)
    model = _meta_model(config)
    groups = build_optimizer(model, config["optim"]).param_groups
    got = {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}
    want = {}
    for key, names in expected["param_groups"][official].items():
        lr, wd = map(float, key.split("|"))
        want.update({name: (lr, wd) for name in names})
    assert set(got) == set(want) == {n for n, _ in model.named_parameters()}
    wrong = [(n, got[n], want[n]) for n in want if got[n] != pytest.approx(want[n], rel=1e-12, abs=0)]
    assert not wrong, f"{len(wrong)} of {len(want)} parameters differ, e.g. {wrong[:3]}"


@pytest.mark.parametrize("ours, official", PAIRS)
def test_learning_rate_follows_mmengines_stepped_schedulers(ours, official, expected):
    config = load_config(CONFIGS / ours)
    schedule = expected["schedules"][official]
    assert config["optim"]["lr"] == schedule["base_lr"]
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=config["optim"]["lr"])
    scheduler = build_scheduler(optimizer, config["schedule"])
    for t, lr in schedule["lr"].items():
        assert scheduler.lr_lambdas[0](int(t)) * config["optim"]["lr"] == pytest.approx(lr, rel=1e-6, abs=1e-15), t
    for t in range(3):  # the scheduler as the trainer steps it: once after every iteration
        assert optimizer.param_groups[0]["lr"] == pytest.approx(schedule["lr"][str(t)], rel=1e-6)
        optimizer.step()
        scheduler.step()


def _schedule_of(param_scheduler: list[dict]) -> dict:
    """Our schedule settings for the official ``[LinearLR,] PolyLR`` list."""
    by_type = {s["type"]: s for s in param_scheduler}
    assert set(by_type) <= {"LinearLR", "PolyLR"} and not any(s["by_epoch"] for s in param_scheduler)
    poly, linear = by_type["PolyLR"], by_type.get("LinearLR")
    if linear:
        assert linear["begin"] == 0 and linear["end"] == poly["begin"] and linear.get("end_factor", 1.0) == 1.0
    else:
        assert poly["begin"] == 0
    return {
        "max_iters": poly["end"], "warmup_iters": poly["begin"], "power": poly["power"], "min_lr": poly["eta_min"],
        **({"warmup_ratio": linear["start_factor"]} if linear else {}),
    }  # fmt: skip


def _resize_of(step: dict):
    if step["type"] == "RandomResize":
        assert step["keep_ratio"]
        return RandomResize(tuple(step["scale"]), tuple(step["ratio_range"]))
    assert step["type"] == "RandomChoiceResize" and step["resize_type"] == "ResizeShortestEdge"
    return RandomChoiceResize(tuple(step["scales"]), step["max_size"])


def _custom_keys(keys: dict) -> dict:
    return {k: (v.get("lr_mult", 1.0), v.get("decay_mult", 1.0)) for k, v in keys.items()}


@pytest.mark.parametrize("ours, official", PAIRS)
def test_every_recipe_field_equals_the_official_config(ours, official, expected):
    recipe, config = expected["recipes"][official], load_config(CONFIGS / ours)
    optim, schedule, train, data = config["optim"], config["schedule"], config["train"], config["data"]
    model = _meta_model(config)

    # optimiser, parameter-group rules, clipping, schedule
    opt = recipe["optimizer"]
    assert opt["type"] == "AdamW"
    assert (optim["lr"], optim["weight_decay"], optim["betas"]) == (opt["lr"], opt["weight_decay"], opt["betas"])
    assert optim["eps"] == opt.get("eps", 1e-8)  # torch's AdamW default where the config sets none
    assert recipe["clip_grad"]["norm_type"] == 2 and optim["clip_grad"] == recipe["clip_grad"]["max_norm"]
    paramwise = recipe["paramwise_cfg"]
    ours_keys = expand_custom_keys(optim["custom_keys"], model.backbone.depths)
    assert _custom_keys(ours_keys) == _custom_keys(paramwise["custom_keys"])
    assert optim["norm_decay_mult"] == paramwise.get("norm_decay_mult")
    assert {k: schedule[k] for k in _schedule_of(recipe["param_scheduler"])} == _schedule_of(recipe["param_scheduler"])
    assert schedule["max_iters"] == recipe["max_iters"]
    assert (
        train["val_interval"] == recipe["val_interval"]
        and train["checkpoint_interval"] == recipe["checkpoint"]["interval"]
    )

    # model
    backbone = recipe["backbone"]
    assert (model.backbone.embed_dims, model.backbone.depths) == (backbone["embed_dims"], backbone["depths"])
    assert config["model"]["drop_path_rate"] == backbone["drop_path_rate"]
    head = recipe["decode_head"]
    assert model.num_classes == head["num_classes"] == len(load_spec(data["dataset"]).classes)
    assert recipe["sync_bn"] is None and train["sync_bn"] == "decode_head"  # only the head's norm_cfg is SyncBN
    if head["type"] == "LRHead":
        assert head["norm_cfg"]["type"] == "SyncBN" and head["dropout_ratio"] == model.decode_head.dropout.p
        assert recipe["loss_decode"] == {"type": "CrossEntropyLoss", "use_sigmoid": False, "loss_weight": 1.0}
    else:
        _check_mask2former(recipe["mask2former"], model)

    # data: images per GPU, train pipeline, padding, test pipeline
    assert data["batch_size"] == recipe["batch_size"]
    steps = {s["type"]: s for s in recipe["train_pipeline"]}
    types = [s["type"] for s in recipe["train_pipeline"]]  # our pipeline's order: resize, crop, flip, photometric
    assert types[0] == "LoadAnnotations" and types[2:] == ["RandomCrop", "RandomFlip", "PhotoMetricDistortion"]
    spec = load_spec(data["dataset"])
    assert steps["LoadAnnotations"]["reduce_zero_label"] == spec.reduce_zero_label
    assert build_resize(data["resize"]) == _resize_of(recipe["train_pipeline"][1])
    assert data["crop_size"] == steps["RandomCrop"]["crop_size"] == recipe["data_preprocessor"]["size"]
    assert data["cat_max_ratio"] == steps["RandomCrop"]["cat_max_ratio"]
    assert data["flip_prob"] == steps["RandomFlip"]["prob"] and data["photometric"] is True
    pre = recipe["data_preprocessor"]
    assert (tuple(pre["mean"]), tuple(pre["std"]), pre["bgr_to_rgb"]) == (MEAN, STD, True)
    assert (pre["pad_val"], pre["seg_pad_val"]) == (0, spec.ignore_index)
    test = replace(model_defaults(model, spec.test), **{k: tuple(v) for k, v in config["test"].items()})
    resize = recipe["test_pipeline"][0]
    assert test.mode == "whole" and not test.is_tta and test.scale == tuple(resize["scale"]) and resize["keep_ratio"]
    if resize["type"] == "AlignResize":
        assert test.pipeline == "align" and test.size_divisor == resize["size_divisor"]
    else:
        assert resize["type"] == "Resize" and test.pipeline == "pad"
        assert test.size_divisor == pre["test_cfg"]["size_divisor"]


def _check_mask2former(official: dict, model) -> None:
    criterion = TrainingObjective(model).criterion
    costs = {c["type"]: c for c in official["train_cfg"]["assigner"]["match_costs"]}
    assert official["loss_cls"]["loss_weight"] == costs["mmdet.ClassificationCost"]["weight"] == criterion.class_weight
    assert (
        official["loss_mask"]["loss_weight"] == costs["mmdet.CrossEntropyLossCost"]["weight"] == criterion.mask_weight
    )
    assert official["loss_dice"]["loss_weight"] == costs["mmdet.DiceCost"]["weight"] == criterion.dice_weight
    assert official["loss_cls"]["class_weight"] == [1.0, criterion.no_object_weight]
    assert official["loss_dice"]["naive_dice"] and official["loss_dice"]["eps"] == costs["mmdet.DiceCost"]["eps"] == 1.0
    assert official["loss_mask"]["use_sigmoid"] and not official["loss_cls"]["use_sigmoid"]
    sampling = official["train_cfg"]
    assert (sampling["num_points"], sampling["oversample_ratio"], sampling["importance_sample_ratio"]) == (
        criterion.num_points, criterion.oversample_ratio, criterion.importance_sample_ratio)  # fmt: skip
    assert official["num_queries"] == model.decode_head.query_embed.num_embeddings


def test_mmengine_rule_first_matching_key_longest_first():
    """Hand-made names against the rules the official configs rely on."""
    cfg = load_config(CONFIGS / "lrformer_xl_plus_ade20k_640.yaml")["optim"]
    with torch.device("meta"):
        model = lrformer.create_model("lrformer_xl_plus")
    where = {
        n: (round(g["lr"], 12), g["weight_decay"]) for g in build_optimizer(model, cfg).param_groups for n in g["names"]
    }
    backbone, backbone_norm, head, head_no_decay = (1e-5, 0.05), (1e-5, 0.0), (1e-4, 0.05), (1e-4, 0.0)
    assert where["backbone.block3.21.norm2.weight"] == backbone_norm  # backbone.block3.21.norm
    assert where["backbone.block3.21.attn.norm.bias"] == backbone_norm
    assert where["backbone.block3.7.pre_norm.weight"] == backbone_norm  # XL+ only
    assert where["backbone.patch_embed4.norm.weight"] == backbone_norm
    assert where["backbone.patch_embed1.conv1.1.weight"] == backbone  # stem BN: 'backbone' matched first
    assert where["backbone.block3.21.layer_scale_1"] == backbone
    assert where["decode_head.query_embed.weight"] == head_no_decay
    assert where["decode_head.transformer_decoder.post_norm.weight"] == head_no_decay  # norm_decay_mult
    assert where["decode_head.pixel_decoder.level_encoding.weight"] == head  # not 'level_embed'
    assert where["decode_head.cls_embed.weight"] == head


@pytest.mark.parametrize("name", sorted(NOT_OFFICIAL))
def test_configs_without_an_official_file_build_the_lrformer_recipe(name):
    """Bases and the Cityscapes / COCO-Stuff configs: the LRFormer rules, checked on named parameters."""
    plus = name.startswith("plus")  # the LRFormer+ bases set no model
    config = load_config(CONFIGS / name, ["model.name=lrformer_t_plus"] if plus else [])
    model = _meta_model(config)
    optimizer = build_optimizer(model, config["optim"])
    where = {n: (round(g["lr"], 12), g["weight_decay"]) for g in optimizer.param_groups for n in g["names"]}
    scheduler = build_scheduler(optimizer, config["schedule"])
    end = config["schedule"]["max_iters"] - 1
    if plus:  # backbone lr x0.1, its norms without decay, no warm-up
        assert where["backbone.block1.0.norm1.weight"] == (1e-5, 0.0)
        assert where["backbone.block1.0.attn.q.0.weight"] == (1e-5, 0.05)
        assert where["decode_head.query_feat.weight"] == (1e-4, 0.0)
        assert scheduler.lr_lambdas[0](0) == 1.0 and scheduler.lr_lambdas[0](end) == 0.0
        return
    assert where["decode_head.conv_seg.weight"] == where["decode_head.fuse_block1.norm1.weight"] == (6e-4, 0.01)
    assert where["backbone.block1.0.norm1.weight"] == where["backbone.patch_embed2.norm.bias"] == (6e-5, 0.0)
    assert where["backbone.block1.0.attn.q.0.weight"] == where["backbone.patch_embed1.conv1.1.weight"] == (6e-5, 0.01)
    assert scheduler.lr_lambdas[0](0) == 1e-6 and scheduler.lr_lambdas[0](1499) == 1.0
    assert scheduler.lr_lambdas[0](end) == 0.0 and scheduler.lr_lambdas[0](end - 1) > 0
