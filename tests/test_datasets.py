"""Dataset readers for every layout, converters, and lrformer eval (single and 2-process)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lrformer import Predictor, create_model
from lrformer.cli.main import main
from lrformer.data.convert import convert
from lrformer.data.datasets import SegmentationDataset, load_spec

from .helpers import run_bounded, synthetic_photo


def _write_pairs(img_dir: Path, ann_dir: Path, names, img_suffix, ann_suffix, labels):
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i, (name, label) in enumerate(zip(names, labels)):
        cv2.imwrite(str(img_dir / f"{name}{img_suffix}"), synthetic_photo(*label.shape, seed=i))
        cv2.imwrite(str(ann_dir / f"{name}{ann_suffix}"), label.astype(np.uint8))


def test_ade20k_layout_reduces_zero_label(tmp_path):
    root = tmp_path / "ade" / "ADEChallengeData2016"
    label = np.array([[0, 1, 2], [150, 255, 3]] * 20)
    _write_pairs(root / "images/validation", root / "annotations/validation", ["ADE_val_1"], ".jpg", ".png", [label])
    for data_root in (tmp_path / "ade", root):  # the parent or ADEChallengeData2016 itself
        dataset = SegmentationDataset(load_spec("ade20k"), data_root, "val")
        assert len(dataset) == 1 and len(dataset.classes) == 150
        np.testing.assert_array_equal(dataset.load_label(0)[:2], [[255, 0, 1], [149, 255, 2]])


def test_cityscapes_and_cocostuff_layouts_and_converters(tmp_path):
    city = tmp_path / "city"
    raw = np.array([[7, 8, 0, 33, 26, 9]] * 40)
    _write_pairs(city / "leftImg8bit/val/aachen", city / "gtFine/val/aachen", ["aachen_0_0"], "_leftImg8bit.png",
                 "_gtFine_labelIds.png", [raw])  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no annotation"):
        SegmentationDataset(load_spec("cityscapes"), city, "val")
    assert convert("cityscapes", city, workers=1)[:2] == (1, 0)
    assert convert("cityscapes", city, workers=1)[:2] == (0, 1)  # idempotent
    dataset = SegmentationDataset(load_spec("cityscapes"), city, "val")
    np.testing.assert_array_equal(dataset.load_label(0)[0], [0, 1, 255, 18, 13, 255])
    assert dataset.spec.test.mode == "slide" and dataset.spec.test.crop == (1024, 1024)
    wide = city / "gtFine/val/aachen/aachen_0_1_gtFine_labelIds.png"  # a 16-bit map: no Cityscapes id
    cv2.imwrite(str(wide), np.full((4, 4), 300, np.uint16))
    converted, _, errors = convert("cityscapes", city, workers=1)  # the worker is a spawned process
    assert converted == 0 and errors == [f"{wide}: value 300 is not a Cityscapes label id"]

    coco = tmp_path / "coco"
    stuff = np.array([[0, 11, 12, 90, 91, 181, 255]] * 40)
    _write_pairs(coco / "images/val2017", coco / "annotations/val2017", ["000000000139"], ".jpg", ".png", [stuff])
    convert("cocostuff", coco, workers=1)
    dataset = SegmentationDataset(load_spec("cocostuff"), coco, "val")
    np.testing.assert_array_equal(dataset.load_label(0)[0], [0, 255, 11, 255, 80, 170, 255])


def test_missing_root_shows_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Expected layout for ade20k.*ADEChallengeData2016/images/validation"):
        SegmentationDataset(load_spec("ade20k"), tmp_path / "nope", "val")


def _generic_dataset(tmp_path, labels, orphan=False):
    root = tmp_path / "data"
    _write_pairs(root / "img", root / "ann", [f"im{i}" for i in range(len(labels))], ".png", "_seg.png", labels)
    if orphan:
        cv2.imwrite(str(root / "ann" / "lonely_seg.png"), labels[0].astype(np.uint8))
    spec = tmp_path / "data.yaml"
    spec.write_text(
        "img_dir: img\nann_dir: ann\nimg_suffix: .png\nseg_map_suffix: _seg.png\n"
        "classes: [sky, road, car, tree, house]\nreduce_zero_label: false\nignore_index: 255\n"
        "test: {scale: [256, 64]}\n"
    )
    return root, spec


def _expected(tmp_path, tiny_model_file, root, labels):
    """Independent confusion sums from the predictor's label maps."""
    predictor = Predictor(create_model(tiny_model_file), scale=(256, 64))
    inter, union, area = np.zeros(5), np.zeros(5), np.zeros(5)
    for i, label in enumerate(labels):
        pred = predictor(root / "img" / f"im{i}.png").astype(int)
        valid = label != 255
        p, g = pred[valid], label[valid]
        for c in range(5):
            inter[c] += ((p == c) & (g == c)).sum()
            union[c] += ((p == c) | (g == c)).sum()
            area[c] += (g == c).sum()
    with np.errstate(invalid="ignore"):
        return {"aAcc": inter.sum() / area.sum(), "mIoU": np.nanmean(inter / union), "mAcc": np.nanmean(inter / area)}


@pytest.fixture()
def generic(tmp_path):
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 5, (48, 64)) for _ in range(3)] + [np.full((40, 40), 255)]
    labels[0][:10] = 255
    return labels


def test_eval_generic_layout_matches_hand_computed(tmp_path, tiny_model_file, generic, capsys):
    root, spec = _generic_dataset(tmp_path, generic, orphan=True)
    out = tmp_path / "m.json"
    rc = main(["eval", "--model", str(tiny_model_file), "--data", str(spec),
               "--data-root", str(root), "--json", str(out), "--workers", "0"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    expected = _expected(tmp_path, tiny_model_file, root, generic)
    for key in ("aAcc", "mIoU", "mAcc"):
        assert result[key] == round(expected[key] * 100, 2)
    assert f"mIoU: {result['mIoU']:.2f}" in printed and "| house" in printed
    assert set(result["IoU"]) == {"sky", "road", "car", "tree", "house"}


def test_eval_bad_label_and_class_count(tmp_path, tiny_model_file, generic, capsys):
    generic[1][5, 5] = 9
    root, spec = _generic_dataset(tmp_path, generic)
    model = str(tiny_model_file)
    args = ["eval", "--model", model, "--data", str(spec), "--data-root", str(root), "--workers", "0"]
    assert main(args) == 2
    assert "im1_seg.png: label value 9 is not a class index (0..4)" in capsys.readouterr().err
    spec.write_text(spec.read_text().replace("house]", "house, boat]"))
    assert main(args) == 2
    assert "the model predicts 5 classes but data has 6" in capsys.readouterr().err


def test_torchrun_two_processes_equal_one(tmp_path, tiny_model_file, generic):
    root, spec = _generic_dataset(tmp_path, generic)
    model = str(tiny_model_file)
    common = ["--model", model, "--data", str(spec), "--data-root", str(root), "--workers", "0"]
    assert main(["eval", *common, "--json", str(tmp_path / "one.json")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "lrformer", "eval", *common, "--json", str(tmp_path / "two.json")]  # fmt: skip
    done = run_bounded(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads((tmp_path / "two.json").read_text()) == json.loads((tmp_path / "one.json").read_text())


def test_palette_and_16bit_annotations_read_as_indices(tmp_path):
    from PIL import Image

    from lrformer.data.datasets import read_label

    indices = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.uint8)
    paletted = Image.fromarray(indices, mode="L")
    paletted.putpalette([7, 7, 7, 200, 0, 0, 0, 200, 0, 0, 0, 200, 90, 90, 90] + [0] * (768 - 15))
    paletted.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label(tmp_path / "p.png"), indices)
    deep = np.array([[0, 300]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    np.testing.assert_array_equal(read_label(tmp_path / "d.png"), deep)
