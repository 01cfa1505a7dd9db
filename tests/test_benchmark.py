"""``lrformer benchmark`` runs and reports every size; ``--backend`` the PyTorch model and its
exports side by side; ``--train`` a step without and with activation checkpointing; ``--data`` the
data pipeline per worker count (timings themselves are not asserted)."""

from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from lrformer.cli.main import main
from lrformer.data import synthetic

from .helpers import error_line


def test_benchmark_cli_writes_a_row_per_size(tmp_path, tiny_model_file, capsys):
    out = tmp_path / "b.csv"
    rc = main(["benchmark", "--model", str(tiny_model_file), "--size", "64", "64", "--size", "64", "128",
               "--warmup", "1", "--iters", "2", "--csv", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["height"], r["width"]) for r in rows] == [("64", "64"), ("64", "128")]
    assert all(float(r["median_ms"]) > 0 and float(r["peak_mb"]) > 0 for r in rows)
    assert "64x128" in capsys.readouterr().out


def test_train_benchmark_writes_a_row_without_and_with_checkpointing(tmp_path, tiny_model_file, capsys):
    out = tmp_path / "train.csv"
    rc = main(["benchmark", "--train", "--model", str(tiny_model_file), "--size", "64", "64", "--batch", "2",
               "--device", "cpu", "--threads", "1", "--iters", "1", "--csv", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["grad_checkpointing"] for r in rows] == ["False", "True"]  # default: both
    for row in rows:
        assert (row["height"], row["width"], row["batch"], row["device"]) == ("64", "64", "2", "cpu")
        assert float(row["median_ms"]) > 0 and float(row["peak_mb"]) > float(row["added_mb"]) > 0, row
        assert float(row["baseline_mb"]) > 0 and row["note"] == ""
    printed = capsys.readouterr().out
    assert "checkpointing" in printed and "the added memory at" in printed


def test_data_benchmark_reports_a_row_per_worker_count(tmp_path, capsys):
    spec = synthetic.generate(tmp_path / "data", train=6, val=1, size=64)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"data:\n  dataset: {spec}\n  root: {tmp_path / 'data'}\n  crop_size: [64, 64]\n  batch_size: 2\n"
        "  resize: {type: RandomResize, scale: [128, 64], ratio_range: [0.5, 1.5]}\n"
    )
    out = tmp_path / "data.csv"
    rc = main(["benchmark", "--data", str(config), "--set", "data.batch_size=3", "--workers", "0", "1",
               "--batches", "2", "--csv", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["workers"], r["batch_size"], r["batches"]) for r in rows] == [("0", "3", "2"), ("1", "3", "2")]
    assert all(float(r["images_per_s"]) > 0 and float(r["images_per_s_per_worker"]) > 0 for r in rows)
    assert "images/s/worker" in capsys.readouterr().out


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--train", "--model", "lrformer_t", "--warmup", "0"], "--train needs --warmup 1 or more"),
        (["--train", "--model", "lrformer_tt", "--size", "64", "64", "--device", "cpu", "--grad-checkpoint", "off"],
         "unknown model 'lrformer_tt'. Did you mean 'lrformer_t'?"),
        (["--data", "missing.yaml", "--iters", "3"], "--iters is not used by --data"),
        (["--data", "missing.yaml"], "missing.yaml does not exist"),
        (["--model", "lrformer_t", "--grad-checkpoint", "on"], "add --train or leave it out"),
    ],
)  # fmt: skip
def test_benchmark_mistakes_are_one_line(arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", *arguments]) == 2
    assert message in error_line(capsys)


# --------------------------------------------------------------------------- backends side by side
def _tiny_onnx(path, tiny_cases, size=None) -> None:
    """A stand-in export (a 1×1 convolution to the tiny model's 5 classes) carrying the description
    of the tiny parity model, as lrformer export writes it; fixed to ``size`` or dynamic."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from lrformer.deploy.metadata import METADATA_KEY, encode, export_entry

    height, width = size or ("height", "width")
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(5, 3, 1, 1)).astype(np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "weight"], ["scores"])], "stand_in",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 5, height, width])], [weight],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    description = {"format": 1, "model": {**tiny_cases["config"], "name": "lrformer_t"}, "classes": None,
                   "palette": None, "test": None}  # fmt: skip
    entry = export_entry("onnx", size, 32)
    helper.set_model_props(proto, {METADATA_KEY: encode(description, entry)})
    onnx.save(proto, str(path))


def test_backends_side_by_side_write_a_row_per_backend_and_precision(tmp_path, tiny_model_file, capsys):
    for module in ("onnxruntime", "openvino", "nncf", "onnxscript", "matplotlib"):
        pytest.importorskip(module)
    out, plot = tmp_path / "b.csv", tmp_path / "b.png"
    rc = main(["benchmark", "--model", str(tiny_model_file), "--backend", "torch", "--backend", "onnxruntime",
               "--backend", "openvino", "--int8", "--size", "64", "96", "--threads", "1", "--warmup", "1",
               "--iters", "2", "--csv", str(out), "--plot", str(plot)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    expected = [("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "int8")]
    assert [(r["backend"], r["precision"]) for r in rows] == expected
    for row in rows:
        assert (row["height"], row["width"], row["batch"], row["threads"]) == ("64", "96", "1", "1")
        assert all(float(row[key]) > 0 for key in ("median_ms", "p90_ms", "images_per_s", "peak_mb", "speedup"))
        assert float(row["speedup"]) == pytest.approx(float(rows[0]["median_ms"]) / float(row["median_ms"]))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "openvino     int8" in printed and "1.00x" in printed
    assert "no onnxruntime int8 row" in printed  # lrformer exports int8 for OpenVINO only


def test_an_exported_file_is_timed_as_it_is_next_to_its_pytorch_model(tmp_path, tiny_cases, capsys):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "stand_in.onnx"
    _tiny_onnx(model, tiny_cases)  # dynamic: any size
    out = tmp_path / "b.csv"
    rc = main(["benchmark", "--weights", str(model), "--backend", "torch", "--size", "64", "64", "--size", "96", "64",
               "--device", "cpu", "--threads", "1", "--warmup", "0", "--iters", "2", "--csv", str(out)])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["backend"], r["height"], r["width"]) for r in rows] == [
        ("torch", "64", "64"), ("onnxruntime", "64", "64"), ("torch", "96", "64"), ("onnxruntime", "96", "64")
    ]  # fmt: skip
    assert all(r["precision"] == "fp32" and float(r["median_ms"]) > 0 and float(r["peak_mb"]) > 0 for r in rows)


def test_a_fixed_size_export_is_timed_at_its_size_and_refuses_another(tmp_path, tiny_cases, capsys):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "fixed.onnx"
    _tiny_onnx(model, tiny_cases, size=(64, 96))
    out = tmp_path / "b.csv"
    assert main(["benchmark", "--weights", str(model), "--warmup", "0", "--iters", "1", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["backend"], r["height"], r["width"], r["speedup"]) for r in rows] == [("onnxruntime", "64", "96", "nan")]
    capsys.readouterr()
    assert main(["benchmark", "--weights", str(model), "--size", "64", "64"]) == 2
    assert "was exported for 64x96 inputs: give --size 64 96" in error_line(capsys)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--train", "--model", "lrformer_t", "--backend", "openvino"], "--backend is not used by --train"),
        (["--data", "missing.yaml", "--int8"], "--int8 is not used by --data"),
        (["--model", "lrformer_t", "--int8"], "--int8 adds the int8 export of OpenVINO: add --backend openvino"),
        (["--model", "lrformer_t", "--backend", "onnxruntime", "--int8"], "add --backend openvino"),
        (["--model", "lrformer_t", "--backend", "openvino", "--compile"], "--compile applies to the PyTorch model"),
        (["--model", "lrformer_t", "--backend", "openvino", "--precision", "bf16"], "--precision bf16 applies to"),
        (["--weights", "w.pth"], "benchmark times an exported model (.onnx, or an OpenVINO .xml)"),
        (["--weights", "m.onnx", "--backend", "openvino"], "is timed as it is, not exported: leave --backend openvino"),
        (["--weights", "missing.onnx"], "missing.onnx does not exist"),
        (["--model", "lrformer_t", "--backend", "openvino", "--device", "cuda"], "OpenVINO runs a model on cpu"),
        (["--model", "lrformer_t", "--backend", "torch", "--size", "16", "16"], "LRFormer takes H, W >= 32"),
    ],
)  # fmt: skip
def test_backend_mistakes_are_one_line(arguments, message, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", *arguments]) == 2
    assert message in error_line(capsys)


@pytest.mark.parametrize("backend, module", [("onnxruntime", "onnxruntime"), ("openvino", "openvino")])
def test_a_runtime_not_installed_is_one_line(backend, module, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if absent
    assert main(["benchmark", "--model", "lrformer_t", "--backend", "torch", "--backend", backend]) == 2
    assert f'--backend {backend} needs {module}: pip install "lrformer[deploy]"' in error_line(capsys)
