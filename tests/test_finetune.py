"""Self-describing checkpoints (a trained checkpoint drives predict / eval / export alone) and
fine-tuning to another class count (only the classifier is re-initialised, and said so)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import lrformer
from lrformer.cli.main import main
from lrformer.data import synthetic
from lrformer.engine.config import load_config
from lrformer.engine.trainer import Trainer

from .helpers import error_line

TINY = {"embed_dims": [16, 32, 80, 64], "depths": [1, 1, 2, 1], "head_channels": 32}
SETTINGS = [
    "data.resize.scale=[128,64]", "data.crop_size=[64,64]", "data.batch_size=2", "data.workers=0",
    "train.device=cpu", "train.val_interval=0", "train.checkpoint_interval=2", "schedule.max_iters=2",
    "schedule.warmup_iters=0", "test.scale=[96,64]", f"model.overrides={json.dumps(TINY)}",
]  # fmt: skip


def train_args(spec: Path, root: Path, work: Path, *extra: str) -> list[str]:
    demo = Path(lrformer.__file__).parent / "configs" / "demo.yaml"
    sets = [f"data.dataset={spec}", f"data.root={root}", *SETTINGS, *extra]
    return ["train", str(demo), "--work-dir", str(work), *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 5-class synthetic dataset and a 2-iteration run on it: ``(root, spec, checkpoint)``."""
    root = tmp_path_factory.mktemp("shapes")
    spec = synthetic.generate(root, train=6, val=3, size=64)
    work = root / "work"
    assert main(train_args(spec, root, work)) == 0
    return root, spec, work / "iter_2.pth"


def test_the_checkpoint_describes_model_classes_palette_and_test_settings(trained):
    root, spec, checkpoint = trained
    model = lrformer.create_model(checkpoint)  # no variant name, no class count
    assert model.config["name"] == "lrformer_t" and model.num_classes == 5
    assert model.config["embed_dims"] == TINY["embed_dims"]
    assert model.config["classes"] == list(synthetic.CLASSES)
    assert model.config["palette"] == [list(c) for c in synthetic.PALETTE]
    assert lrformer.Predictor(model).config.scale == (96, 64)  # the run's test settings
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_predict_eval_and_export_take_the_checkpoint_alone(trained, tmp_path, capsys):
    root, spec, checkpoint = trained
    images = root / "images" / "val"
    assert main(["predict", "--weights", str(checkpoint), str(images), "--out", str(tmp_path / "o"),
                 "--workers", "0", "--no-overlay"]) == 0  # fmt: skip
    label = Image.open(next((tmp_path / "o").glob("*.png")))
    assert label.getpalette()[:15] == [v for color in synthetic.PALETTE for v in color]  # the dataset's colours
    assert main(["eval", "--weights", str(checkpoint), "--data", str(spec), "--data-root", str(root),
                 "--workers", "0", "--json", str(tmp_path / "m.json")]) == 0  # fmt: skip
    assert list(json.loads((tmp_path / "m.json").read_text())["IoU"]) == list(synthetic.CLASSES)
    assert main(["export", "--weights", str(checkpoint), "--size", "64", "64", "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_weights_alone_need_a_description(trained, tmp_path, tiny_checkpoint, capsys):
    images = trained[0] / "images" / "val"
    assert main(["predict", "--weights", str(tiny_checkpoint), str(images), "--out", str(tmp_path / "o")]) == 2
    assert "holds weights but no model description" in error_line(capsys)


def seven_class_spec(root: Path, spec: Path) -> Path:
    """The synthetic images under a 7-class dataset description (labels 0..4 are valid 7-class labels)."""
    description = yaml.safe_load(spec.read_text())
    description["classes"] += ["cone", "star"]
    description["palette"] += [[10, 20, 30], [40, 50, 60]]
    seven = root / "seven.yaml"
    seven.write_text(yaml.safe_dump(description))
    return seven


def test_fine_tuning_to_seven_classes_resets_only_the_classifier(trained, tmp_path, caplog):
    root, spec, checkpoint = trained
    seven = seven_class_spec(root, spec)
    config = load_config(
        Path(lrformer.__file__).parent / "configs" / "demo.yaml",
        [f"data.dataset={seven}", f"data.root={root}", *SETTINGS, f"model.pretrained={checkpoint}"],
    )
    with caplog.at_level(logging.WARNING), Trainer(config, tmp_path / "work") as trainer:
        pass
    source = torch.load(checkpoint, weights_only=True)["state_dict"]
    tuned = trainer.model.state_dict()
    reset = {"decode_head.conv_seg.weight", "decode_head.conv_seg.bias"}
    assert tuned["decode_head.conv_seg.weight"].shape == (7, 32, 1, 1)
    assert all(torch.equal(tuned[k], v) for k, v in source.items() if k not in reset)  # bit-equal
    assert not torch.equal(tuned["decode_head.conv_seg.weight"][:5], source["decode_head.conv_seg.weight"])
    assert (
        "re-initialised decode_head.conv_seg.bias [5] -> [7], decode_head.conv_seg.weight [5, 32, 1, 1] -> "
        "[7, 32, 1, 1]; every other weight is loaded" in caplog.text
    )


def test_fine_tuning_from_the_command_line_names_the_reset_keys(trained, tmp_path, caplog):
    root, spec, checkpoint = trained
    seven = seven_class_spec(root, spec)
    with caplog.at_level(logging.WARNING):
        assert main(train_args(seven, root, tmp_path / "w", f"model.pretrained={checkpoint}")) == 0
    assert "fine-tuning to 7 classes" in caplog.text and "decode_head.conv_seg.weight [5, 32, 1, 1]" in caplog.text
    assert lrformer.create_model(tmp_path / "w" / "iter_2.pth").config["classes"][-2:] == ["cone", "star"]


def test_any_other_mismatch_stays_an_error_unless_strict_is_off(trained, tmp_path, capsys, caplog):
    root, spec, checkpoint = trained
    other = [f"model.pretrained={checkpoint}", 'model.overrides={"embed_dims": [16, 32, 80, 64], '
             '"depths": [1, 1, 2, 1], "head_channels": 48}']  # fmt: skip
    assert main(train_args(spec, root, tmp_path / "a", *other)) == 2
    assert "does not match the model (lrformer_t)" in error_line(capsys)
    with caplog.at_level(logging.WARNING):
        assert main(train_args(spec, root, tmp_path / "b", *other, "model.strict=false")) == 0
    assert "key(s) with a different shape" in caplog.text


def test_predict_refuses_another_class_count_instead_of_resetting(trained, tmp_path, capsys):
    root, spec, checkpoint = trained
    images = root / "images" / "val"
    args = ["predict", "--weights", str(checkpoint), str(images), "--out", str(tmp_path / "o"), "--num-classes", "7"]
    assert main(args) == 2
    assert "does not match the model" in error_line(capsys)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_create_model_takes_the_class_count_of_a_released_checkpoint(tmp_path, tiny_cases, tiny_checkpoint):
    model = lrformer.create_model(
        "lrformer_t", pretrained=tiny_checkpoint, **{**tiny_cases["config"], "num_classes": None}
    )
    assert model.num_classes == 5  # read from decode_head.conv_seg
    tuned = lrformer.create_model(
        "lrformer_t", pretrained=tiny_checkpoint, **{**tiny_cases["config"], "num_classes": 9}
    )
    assert tuned.num_classes == 9
    for key, value in model.state_dict().items():
        if not key.startswith("decode_head.conv_seg."):
            np.testing.assert_array_equal(tuned.state_dict()[key].numpy(), value.numpy())
