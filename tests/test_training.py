"""The trainer: schedule, parameter groups, exact resume, divergence, distributed equivalence."""

from __future__ import annotations

import copy
import json
import os
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import cv2
import numpy as np
import pytest
import torch

import lrformer
from lrformer.cli.main import main
from lrformer.data import synthetic
from lrformer.data.augment import RandomChoiceResize
from lrformer.data.datasets import load_spec
from lrformer.engine.config import load_config
from lrformer.engine.optim import build_optimizer, build_scheduler, lr_factor
from lrformer.engine.trainer import Trainer, TrainingDiverged
from lrformer.models.mask2former import Mask2FormerCriterion

from .helpers import run_bounded

TINY = {"embed_dims": [16, 32, 80, 64], "depths": [1, 1, 2, 1], "head_channels": 32}


def test_learning_rate_at_key_iterations():
    """mmengine's iteration schedulers span end - begin - 1 steps: LinearLR(1e-6, 0..1500) reaches
    the full rate at 1499, PolyLR(power 1, 1500..160000) reaches 0 at 159999."""
    cfg = load_config(None)
    model = lrformer.create_model("lrformer_t", num_classes=2, **TINY)
    optimizer = build_optimizer(model, cfg["optim"])
    scheduler = build_scheduler(optimizer, cfg["schedule"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(6e-5 * 1e-6)  # iteration 0
    expected = {
        0: 6e-11,
        1: 6e-5 * (1e-6 + (1 - 1e-6) / 1499),
        750: 6e-5 * (1e-6 + (1 - 1e-6) * 750 / 1499),
        1499: 6e-5,
        1500: 6e-5,
        1501: 6e-5 * (1 - 1 / 158499),
        80000: 6e-5 * (1 - 78500 / 158499),
        159999: 0.0,
        160000: 0.0,
    }
    for t, lr in expected.items():
        assert 6e-5 * lr_factor(t, cfg["schedule"]) == pytest.approx(lr, rel=1e-12, abs=1e-20), t
    plus = {**cfg["schedule"], "warmup_iters": 0, "power": 0.9}  # the LRFormer+ PolyLR(power 0.9, 0..160000)
    assert lr_factor(0, plus) == 1.0 and lr_factor(159999, plus) == 0.0
    assert lr_factor(80000, plus) == pytest.approx((1 - 80000 / 159999) ** 0.9, rel=1e-12)
    for _ in range(1499):
        optimizer.step()
        scheduler.step()
    lrs = {g["lr_mult"]: g["lr"] for g in optimizer.param_groups}
    assert lrs[1.0] == pytest.approx(6e-5) and lrs[10.0] == pytest.approx(6e-4)


def test_parameter_groups_follow_mmengine_custom_keys():
    cfg = load_config(None)
    with torch.device("meta"):
        model = lrformer.create_model("lrformer_xl")
        model.decode_head = lrformer.create_model("lrformer_t").decode_head
    groups = build_optimizer(model, cfg["optim"]).param_groups
    where = {name: (round(g["lr"], 12), g["weight_decay"]) for g in groups for name in g["names"]}
    base, head, no_decay = (6e-5, 0.01), (6e-4, 0.01), (6e-5, 0.0)
    assert where["decode_head.fuse_block1.norm1.weight"] == head  # 'head' wins over 'norm'
    assert where["decode_head.conv_seg.bias"] == head
    assert where["backbone.block1.0.norm1.weight"] == no_decay
    assert where["backbone.block2.0.attn.norm.bias"] == no_decay
    assert where["backbone.block3.7.pre_norm.weight"] == no_decay
    assert where["backbone.patch_embed2.norm.weight"] == no_decay
    assert where["backbone.patch_embed1.conv1.1.weight"] == base  # a stem BatchNorm: no 'norm' in its name
    assert where["backbone.block1.0.attn.q.0.weight"] == base
    assert where["backbone.block3.0.layer_scale_1"] == base
    assert sum(len(g["names"]) for g in groups) == len(list(model.parameters()))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, synthetic.generate(root, train=12, val=3, size=64)


def _config(tiny_data, **changes):
    root, spec = tiny_data
    overrides = [
        f"data.dataset={spec}", f"data.root={root}", "data.resize.scale=[128,64]", "data.crop_size=[64,64]",
        "data.batch_size=2", "data.workers=0", "train.device=cpu", "train.log_interval=1",
        "train.val_interval=3", "train.val_max_images=2", "train.checkpoint_interval=3", "train.keep_checkpoints=2",
        "schedule.max_iters=6", "schedule.warmup_iters=2", "optim.lr=1e-3", "model.drop_path_rate=0.2",
        f"model.overrides={json.dumps(TINY)}",
    ]  # fmt: skip
    return load_config(None, overrides + [f"{k}={v}" for k, v in changes.items()])


class _Kill(Exception):
    pass


def test_resume_is_exact(tmp_path, tiny_data):
    full = Trainer(_config(tiny_data), tmp_path / "full")
    full.train()

    def kill_at_3(trainer):
        if trainer.iteration == 3:
            raise _Kill

    with pytest.raises(_Kill):
        Trainer(_config(tiny_data), tmp_path / "cut", callbacks=[kill_at_3]).train()
    assert sorted(p.name for p in (tmp_path / "cut").glob("*.pth")) == ["best_mIoU_iter_3.pth", "iter_3.pth"]
    resumed = Trainer(_config(tiny_data), tmp_path / "cut", resume=True)
    assert resumed.iteration == 3
    resumed.train()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    # the trainer's checkpoints load with load_checkpoint and the CLIs (keep_checkpoints=2: 3 and 6)
    assert sorted(p.name for p in (tmp_path / "cut").glob("iter_*.pth")) == ["iter_3.pth", "iter_6.pth"]
    model = lrformer.create_model("lrformer_t", num_classes=5, **TINY)
    lrformer.load_checkpoint(model, tmp_path / "cut" / "iter_6.pth")
    for key, value in model.state_dict().items():
        assert torch.equal(value, full.model.state_dict()[key])


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_checkpoint(tmp_path, tiny_data, monkeypatch):
    original = Trainer.train_step

    def step(self, images, labels):
        loss = original(self, images, labels)
        return float("nan") if self.iteration == 4 else loss  # the 5th iteration

    monkeypatch.setattr(Trainer, "train_step", step)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at iteration 5.*iter_3\.pth"):
        Trainer(_config(tiny_data), tmp_path).train()
    assert (tmp_path / "iter_3.pth").is_file() and not (tmp_path / "iter_6.pth").exists()


def test_only_a_better_validation_replaces_the_best_checkpoint(tmp_path, tiny_data, monkeypatch):
    scores = iter([0.30, 0.20, 0.40])  # validations at iterations 1, 2, 3

    def fake_evaluate(*args, **kwargs):
        return SimpleNamespace(mIoU=next(scores), aAcc=0.9, mAcc=0.5)

    monkeypatch.setattr("lrformer.engine.trainer.evaluate", fake_evaluate)
    trainer = Trainer(_config(tiny_data), tmp_path)
    best = []
    for iteration in (1, 2, 3):
        trainer.iteration = iteration
        trainer.validate()
        best.append(sorted(p.name for p in tmp_path.glob("best_mIoU_iter_*.pth")))
    assert best == [["best_mIoU_iter_1.pth"], ["best_mIoU_iter_1.pth"], ["best_mIoU_iter_3.pth"]]
    assert trainer.best_miou == pytest.approx(40.0)


def test_a_bad_label_value_stops_training_naming_the_file(tmp_path, capsys):
    spec = synthetic.generate(tmp_path / "data", train=4, val=1, size=64)
    bad = tmp_path / "data" / "annotations" / "train" / "00002.png"
    label = cv2.imread(str(bad), cv2.IMREAD_UNCHANGED)
    label[10, 20] = 7  # 5 classes (0-4) and ignore 255: 7 is neither
    cv2.imwrite(str(bad), label)
    overrides = [f"data.dataset={spec}", f"data.root={tmp_path / 'data'}", "data.resize.scale=[128,64]",
                 "data.crop_size=[64,64]", "data.batch_size=2", "data.workers=1", "train.device=cpu",
                 "train.val_interval=0", "schedule.max_iters=4", f"model.overrides={json.dumps(TINY)}"]  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  drop_path_rate: 0.0\n")
    argv = ["train", str(config), "--work-dir", str(tmp_path / "work")] + [a for o in overrides for a in ("--set", o)]
    assert main(argv) == 2
    assert (
        f"lrformer train: error: {bad}: label value 7 is not a class index (0..4) nor the ignore index 255; "
        "check the dataset's classes, reduce_zero_label and ignore_index (Cityscapes needs *_labelTrainIds.png: "
        "run `lrformer convert cityscapes`)"
    ) in capsys.readouterr().err.splitlines()


def test_unknown_config_key_names_the_closest(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("optim:\n  weight_decy: 0.1\n")
    assert main(["train", str(config)]) == 2
    assert "unknown config key 'optim.weight_decy'. Did you mean 'optim.weight_decay'?" in capsys.readouterr().err


SCRIPT = """
import json, sys, torch
from lrformer.engine.config import load_config
from lrformer.engine.trainer import Trainer
config = load_config(None, json.loads(sys.argv[1]))
trainer = Trainer(config, sys.argv[2])
trainer.model.decode_head.dropout.p = 0.0  # dropout draws differ between process layouts
trainer.train()
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
torch.save(trainer.model.state_dict(), f"{sys.argv[2]}/rank{rank}.pt")
"""


def test_two_process_torchrun_matches_one_process(tmp_path, tiny_data):
    root, spec = tiny_data
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    base = [f"data.dataset={spec}", f"data.root={root}", "data.resize.scale=[128,64]", "data.crop_size=[64,64]",
            "data.workers=0", "train.device=cpu", "train.log_interval=1", "train.val_interval=0",
            "train.checkpoint_interval=100", "schedule.max_iters=4", "schedule.warmup_iters=2", "optim.lr=1e-3",
            "model.drop_path_rate=0.0", f"model.overrides={json.dumps(TINY)}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two, official = tmp_path / "one", tmp_path / "two", tmp_path / "official"

    def torchrun(folder, *changes):
        run_bounded([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                     "29541", str(script), json.dumps(base + ["data.batch_size=2", *changes]), str(folder)],
                    check=True, env=env)  # fmt: skip

    run_bounded([sys.executable, str(script), json.dumps(base + ["data.batch_size=4"]), str(one)],
                check=True, env=env)  # fmt: skip
    torchrun(two, "train.sync_bn=all")  # every BatchNorm synchronised: 2 processes equal one
    torchrun(official)  # the official scope: the backbone's stem BatchNorms see each process's 2 images

    def losses(folder):
        rows = [json.loads(line) for line in (folder / "scalars.jsonl").read_text().splitlines()]
        return [r["value"] for r in rows if r["tag"] == "train/loss"]

    assert len(losses(one)) == 4
    np.testing.assert_allclose(losses(two), losses(one), rtol=2e-4)
    rank0, rank1 = torch.load(two / "rank0.pt"), torch.load(two / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # replicas identical
    single = torch.load(one / "rank0.pt")
    for key in single:  # Adam turns rounding noise of near-zero gradients into steps of up to lr
        if single[key].is_floating_point():
            torch.testing.assert_close(rank0[key], single[key], rtol=0, atol=3e-3)
    rank0, rank1 = torch.load(official / "rank0.pt"), torch.load(official / "rank1.pt")
    stem_stats = {k for k in rank0 if k.startswith("backbone.patch_embed1.conv1.") and "running" in k}
    assert stem_stats and not all(torch.equal(rank0[k], rank1[k]) for k in stem_stats)  # per-process statistics
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0 if k not in stem_stats)  # weights identical
    assert not np.allclose(losses(official), losses(one), rtol=2e-4, atol=0)


PLUS = {"embed_dims": [16, 32, 64, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 4], "feat_channels": 32,
        "num_queries": 8, "pixel_decoder_layers": 1, "pixel_decoder_heads": 4, "pixel_decoder_points": 2,
        "pixel_decoder_ffn": 64, "pixel_decoder_gn_groups": 8, "transformer_decoder_layers": 3,
        "transformer_decoder_heads": 4, "transformer_decoder_ffn": 64, "positional_encoding_num_feats": 16}  # fmt: skip


def test_trainer_runs_the_shipped_plus_recipe(tmp_path, tiny_data):
    """configs/lrformer_t_plus_ade20k.yaml reaches the trainer whole: resize, test pipeline, groups, clipping."""
    root, spec = tiny_data
    overrides = [f"data.dataset={spec}", f"data.root={root}", "data.crop_size=[64,64]", "data.workers=0",
                 "train.device=cpu", "train.val_interval=0", "schedule.max_iters=2", f"model.overrides={json.dumps(PLUS)}"]  # fmt: skip
    trainer = Trainer(load_config(Path(__file__).parent.parent / "configs" / "lrformer_t_plus_ade20k.yaml", overrides),
                      tmp_path)  # fmt: skip
    scales = tuple(int(512 * x * 0.1) for x in range(5, 21))  # the official short sides
    assert trainer.augment.resize == RandomChoiceResize(scales, 2048)
    assert trainer.test_config == replace(load_spec(spec).test, pipeline="pad")  # the dataset's scale, "+" pipeline
    assert {(g["lr_mult"], g["decay_mult"]) for g in trainer.optimizer.param_groups} == {
        (0.1, 1.0), (0.1, 0.0), (1.0, 1.0), (1.0, 0.0)
    }  # fmt: skip
    clipped = []
    original = torch.nn.utils.clip_grad_norm_
    with mock.patch.object(torch.nn.utils, "clip_grad_norm_", lambda p, n: clipped.append(n) or original(p, n)):
        trainer.train()
    assert clipped == [0.01, 0.01] and trainer.iteration == 2


def test_plus_model_trains_with_the_mask2former_objective(tmp_path, tiny_data):
    plus = PLUS
    config = _config(tiny_data)
    config["model"].update(name="lrformer_t_plus", overrides=plus, drop_path_rate=0.0)
    config["schedule"]["max_iters"] = 3
    config["train"]["val_interval"] = 3
    trainer = Trainer(config, tmp_path)
    first: dict = {}
    step = trainer.train_step

    def recorded_step(images, labels):  # what the first step starts from: weights, batch, random state
        if not first:
            first.update(state=copy.deepcopy(trainer.model.state_dict()), rng=torch.get_rng_state(),
                         images=images.clone(), labels=labels.clone())  # fmt: skip
        return step(images, labels)

    trainer.train_step = recorded_step
    trainer.train()
    losses = [json.loads(line) for line in (tmp_path / "scalars.jsonl").read_text().splitlines()]
    logged = [r["value"] for r in losses if r["tag"] == "train/loss"]
    assert [r["iter"] for r in losses if r["tag"] == "train/loss"] == [1, 2, 3]
    assert any(r["tag"] == "val/mIoU" for r in losses)
    model = lrformer.create_model("lrformer_t_plus", num_classes=5, **plus)
    assert lrformer.load_checkpoint(model, tmp_path / "iter_3.pth").ok
    # the first logged loss is the Mask2Former criterion, called directly on the network's outputs
    model = lrformer.create_model("lrformer_t_plus", num_classes=5, **plus, drop_path_rate=0.0).train()
    model.load_state_dict(first["state"])
    torch.set_rng_state(first["rng"])
    class_logits, mask_logits = model.decode_head(model.backbone(first["images"]))
    direct = Mask2FormerCriterion(5)(
        [c.float() for c in class_logits], [m.float() for m in mask_logits], first["labels"]
    )
    assert logged[0] == pytest.approx(direct["loss"].item(), rel=1e-6) and 5 < logged[0] < 100
