"""int8 export (NNCF on the OpenVINO IR) of a briefly trained tiny model: the held-out check it prints
equals one computed here, it keeps the float model's labels, runs at sizes it was not calibrated at,
says how it was quantised; and the calibration sources and their bad inputs."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import lrformer
from lrformer.cli.export import calibration_images
from lrformer.cli.main import main
from lrformer.data import synthetic
from lrformer.data.datasets import SegmentationDataset, load_spec
from lrformer.deploy import calibration
from lrformer.deploy.openvino import compile_cpu, read_description, read_model
from lrformer.deploy.runtimes import load_network

from .helpers import error_line

pytest.importorskip("openvino")
pytest.importorskip("nncf")

TINY = {"embed_dims": [16, 32, 80, 64], "depths": [1, 1, 2, 1], "head_channels": 32}
AGREEMENT_BOUND = 0.98
"""Least fraction of held-out pixels the int8 model labels as the float model does (measured: 0.99+)."""


def run(*args: str) -> tuple[int, str]:
    printout = io.StringIO()
    with contextlib.redirect_stdout(printout):
        code = main(list(args))
    return code, printout.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A synthetic dataset and a tiny LRFormer trained on it for 40 iterations: ``(root, spec, checkpoint)``."""
    root = tmp_path_factory.mktemp("shapes")
    spec = synthetic.generate(root, train=24, val=8, size=64)
    demo = Path(lrformer.__file__).parent / "configs" / "demo.yaml"
    settings = [
        f"data.dataset={spec}", f"data.root={root}", "data.resize.scale=[128,64]", "data.crop_size=[64,64]",
        "data.batch_size=4", "data.workers=0", "data.photometric=false", "train.device=cpu", "train.val_interval=0", "optim.lr=0.01",
        "train.checkpoint_interval=40", "schedule.max_iters=40", "schedule.warmup_iters=0", "test.scale=[96,64]",
        f"model.overrides={json.dumps(TINY)}",
    ]  # fmt: skip
    work = root / "work"
    assert main(["train", str(demo), "--work-dir", str(work), *[a for s in settings for a in ("--set", s)]]) == 0
    return root, spec, work / "iter_40.pth"


@pytest.fixture(scope="module")
def int8_export(trained):
    """``lrformer export --int8`` (dynamic, calibrated on 16 training images), run once: (code, printout, .xml)."""
    root, spec, checkpoint = trained
    out = root / "export" / "int8.xml"
    code, printout = run("export", "--weights", str(checkpoint), "--dynamic", "--size", "64", "64", "--out", str(out),
                         "--int8", "--calib", str(spec), "--data-root", str(root), "--calib-size", "16")  # fmt: skip
    return code, printout, out


def test_the_printed_check_is_the_agreement_and_miou_on_the_held_out_images(int8_export, trained):
    code, printout, out = int8_export
    assert code == 0, printout
    found = re.search(r"pixel agreement with the float model ([\d.]+)% on (\d+) held-out images; "
                      r"mIoU ([\d.]+) float, ([\d.]+) int8", printout)  # fmt: skip
    assert found, printout
    agreement, count, miou_float, miou_int8 = float(found[1]), int(found[2]), float(found[3]), float(found[4])
    root, spec, checkpoint = trained
    dataset = SegmentationDataset(load_spec(spec), root, "val")
    assert count == len(dataset) == 8  # the validation split, none of it calibrated on
    float_predictor = lrformer.Predictor(lrformer.create_model(checkpoint))
    int8_predictor = lrformer.Predictor(load_network(out, "cpu"))
    same = total = 0
    confusion = {"float": np.zeros((5, 5), np.int64), "int8": np.zeros((5, 5), np.int64)}
    for index, (image, _) in enumerate(dataset.samples):
        labels = {"float": float_predictor(image), "int8": int8_predictor(image)}
        same, total = same + int((labels["float"] == labels["int8"]).sum()), total + labels["float"].size
        truth = dataset.load_label(index)
        for name, label in labels.items():
            np.add.at(confusion[name], (truth.ravel(), label.ravel().astype(np.int64)), 1)
    assert agreement == pytest.approx(100 * same / total, abs=0.006)
    assert same / total >= AGREEMENT_BOUND
    for name, printed in (("float", miou_float), ("int8", miou_int8)):
        matrix = confusion[name]
        union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
        iou = np.diag(matrix)[union > 0] / union[union > 0]
        assert printed == pytest.approx(100 * iou.mean(), abs=0.006), name
    assert (confusion["float"].sum(0) > 0).sum() >= 3  # the float model draws several classes: no formality


def test_the_int8_ir_says_how_it_was_quantised(int8_export):
    description = read_description(int8_export[2])
    export = description["export"]
    assert export["precision"] == "int8" and export["runtime"] == "openvino" and export["input_size"] is None
    quantization = export["quantization"]
    assert quantization["tool"] == "nncf" and quantization["calibration_images"] == 16
    assert quantization["float_modules"] and description["classes"] == list(synthetic.CLASSES)


def test_the_int8_ir_runs_at_sizes_it_was_not_calibrated_at(int8_export, trained):
    """Activation ranges are per tensor: a per-channel one placed by NNCF across the LayerNorm2d
    transposes would take the height of the calibration maps for channels, and fail at other sizes."""
    run_int8 = compile_cpu(read_model(int8_export[2]))
    model = lrformer.reparameterize_model(lrformer.create_model(trained[2]))
    for height, width in [(96, 160), (40, 200)]:
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(width))
        scores = run_int8(x.numpy())
        assert scores.shape == (1, 5, height, width) and np.isfinite(scores).all()
        with torch.no_grad():
            assert (scores.argmax(1) == model(x).argmax(1).numpy()).mean() > 0.9


def test_fixed_size_int8_from_a_folder_of_images(trained):
    """A fixed-size export calibrates on inputs resized to its size; a folder has no labels, so
    only the pixel agreement is printed, on the images not calibrated on."""
    root, _, checkpoint = trained
    out = root / "export" / "fixed_int8.xml"
    code, printout = run("export", "--weights", str(checkpoint), "--size", "64", "64", "--out", str(out), "--int8",
                         "--calib", str(root / "images" / "val"), "--calib-size", "6")  # fmt: skip
    assert code == 0, printout
    found = re.search(r"pixel agreement with the float model ([\d.]+)% on 2 held-out images\n", printout)
    assert found and float(found[1]) >= 100 * AGREEMENT_BOUND, printout
    assert list(read_model(out).inputs[0].get_shape()) == [1, 3, 64, 64]
    assert read_description(out)["export"]["input_size"] == [64, 64]


def test_a_folder_is_divided_into_calibration_and_held_out_images(tmp_path):
    synthetic.generate(tmp_path, train=9, val=0, size=64)
    folder = tmp_path / "images" / "train"
    (folder / "broken.png").write_bytes(b"not a png")
    images = calibration.from_folder(folder, size=6)
    assert len(images.calibration) == 6 and len(images.held_out) == 3
    assert not set(images.calibration) & set(images.held_out)
    assert len(images.notes) == 1 and "broken.png" in images.notes[0]
    few = calibration.from_folder(folder, size=300)  # fewer images than asked: a fifth is held out
    assert (len(few.calibration), len(few.held_out)) == (8, 1) and few.label is None


def test_a_training_config_names_the_calibration_dataset(trained, tmp_path):
    root, spec, _ = trained
    config = tmp_path / "train.yaml"
    config.write_text(f"data:\n  dataset: {spec}\n  root: {root}\n")
    args = argparse.Namespace(calib=str(config), data_root=None, calib_size=5)
    images = calibration_images(args)
    assert len(images.calibration) == 5 and all("train" in p.parts for p in images.calibration)
    assert len(images.held_out) == 8 and all("val" in p.parts for p in images.held_out)
    assert images.label(0).shape == (64, 64)


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda folder: None, [], "holds no images"),
        (lambda folder: (folder / "a.png").write_bytes(b"broken"), [], "none of its 1 images can be read"),
        (lambda folder: None, ["--data-root", "x"], "drop --data-root"),
    ],
)
def test_bad_calibration_folders_are_one_line_and_write_nothing(
    tmp_path, tiny_model_file, capsys, make, extra, message
):
    folder = tmp_path / "calib"
    folder.mkdir()
    make(folder)
    out = tmp_path / "m.xml"
    args = ["export", "--model", str(tiny_model_file), "--size", "64", "64", "--out", str(out), "--int8", "--calib"]
    assert main([*args, str(folder), *extra]) == 2
    assert message in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "tiny.json"]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--int8"], "--int8 needs --calib SOURCE"),
        (["--calib", "data"], "--calib is for --int8"),
        (["--int8", "--calib", "data", "--format", "onnx"], "an onnx export is written to a .onnx file"),
        (["--int8", "--calib", "ade20k"], "give the folder holding it with --data-root"),
        (["--int8", "--calib", "nowhere/"], "--calib nowhere/ does not exist"),
    ],
)
def test_int8_option_mistakes(tmp_path, tiny_model_file, capsys, options, message):
    out = tmp_path / "m.xml"
    assert main(["export", "--model", str(tiny_model_file), "--size", "64", "64", "--out", str(out), *options]) == 2
    assert message in error_line(capsys) and not out.exists()


def test_int8_onnx_is_refused(tmp_path, tiny_model_file, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(tiny_model_file), "--size", "64", "64", "--out", str(out), "--int8",
                 "--calib", str(tmp_path)]) == 2  # fmt: skip
    assert "--int8 writes an OpenVINO IR" in error_line(capsys) and not out.exists()
