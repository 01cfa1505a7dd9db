"""``lrformer demo`` end to end (a few iterations; the full run is the README's main command)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

import lrformer
from lrformer.cli.main import main
from lrformer.data import synthetic
from lrformer.engine.config import load_config
from lrformer.engine.optim import build_optimizer


def test_synthetic_data_is_deterministic(tmp_path):
    a, b = synthetic.generate(tmp_path / "a", train=3, val=1), synthetic.generate(tmp_path / "b", train=3, val=1)
    for rel in ("images/train/00002.png", "annotations/val/00000.png"):
        assert np.array_equal(cv2.imread(str(a.parent / rel)), cv2.imread(str(b.parent / rel)))
    label = cv2.imread(str(a.parent / "annotations/train/00000.png"), cv2.IMREAD_UNCHANGED)
    assert label.ndim == 2 and set(np.unique(label)) <= set(range(len(synthetic.CLASSES)))


def test_demo_runs_offline(tmp_path, capsys):
    rc = main(["demo", "--work-dir", str(tmp_path / "work"), "--data-dir", str(tmp_path / "data"), "--iters", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "validation mIoU" in out and "| ring" in out
    overlays = sorted((tmp_path / "work" / "overlays").glob("*.png"))
    assert len(overlays) == 8
    picture = cv2.imread(str(overlays[0]))
    assert picture.shape[0] == 128 and picture.shape[1] > 3 * 128  # image | prediction | ground truth | legend
    image = cv2.imread(str(tmp_path / "data" / "images" / "val" / overlays[0].name))
    np.testing.assert_array_equal(picture[:, :128], image)
    truth = cv2.imread(str(tmp_path / "data" / "annotations" / "val" / overlays[0].name), cv2.IMREAD_UNCHANGED)
    palette = np.asarray(synthetic.PALETTE, dtype=np.uint8)[:, ::-1]
    np.testing.assert_array_equal(picture[:, 256:384], palette[truth])
    assert (tmp_path / "work" / "iter_2.pth").is_file()


def test_demo_recipe_is_a_plain_lr_for_every_parameter():
    """demo.yaml replaces the default custom keys (`_delete_`): no 10x head, no decay on norms."""
    config = load_config(
        Path(lrformer.__file__).parent / "configs" / "demo.yaml", ["data.dataset=d.yaml", "data.root=."]
    )
    with torch.device("meta"):
        model = lrformer.create_model("lrformer_t", num_classes=5)
    groups = build_optimizer(model, config["optim"]).param_groups
    assert sorted((g["lr"], g["weight_decay"]) for g in groups) == [(1e-3, 0.0), (1e-3, 0.01)]
