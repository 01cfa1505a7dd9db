"""ONNX export round trip on the tiny parity model (onnxruntime within 1e-4 of PyTorch)."""

from __future__ import annotations

import onnx

from lrformer.cli.main import main


def test_onnx_export_round_trip(tmp_path, tiny_model_file, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--model", str(tiny_model_file), "--size", "96", "160", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    difference = float(printed.split("max abs difference ")[1].split()[0])
    assert difference < 1e-4
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["scores"]
    dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 5, 12, 20]
