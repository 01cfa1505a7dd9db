"""ONNX export: the fixed-size round trip, and the dynamic export (symbolic height and width) checked
against PyTorch with onnxruntime at sizes and aspect ratios other than the traced one."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

import lrformer
from lrformer.cli.main import main
from lrformer.deploy import metadata
from lrformer.errors import ConfigError
from lrformer.export import check_onnx, export_onnx, read_description
from lrformer.inference.network import module_description
from lrformer.models.layers import LayerNorm2d, pooled_size, round_ratio, traceable_pooled_size

from .helpers import error_line

TARGETS = (4, 6, 8, 11, 12, 16, 22, 32)  # every LRSA target: queries 16 / 32, pyramids 11 8 6 4 / 22 16 12 8
EXPORT_SIZE = (96, 160)
OTHER_SIZES = [(128, 128), (200, 328), (32, 110)]  # square, not multiples of 32, the smallest side and ratio 3.4


def test_onnx_export_round_trip(tmp_path, tiny_model_file, tiny_model, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--model", str(tiny_model_file), "--size", "96", "160", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    difference = float(printed.split("max abs difference ")[1].split()[0])
    assert difference < 1e-4
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["scores"]
    dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 5, 96, 160]  # model(x): class scores at the input size
    names = [node.name for node in graph.node]  # named after their modules, for people and for --int8's float layers
    assert names[0].startswith("backbone.patch_embed1.conv1.0/")
    assert any(name.startswith("decode_head.conv_seg/") for name in names)
    description, expected = read_description(out), json.loads(json.dumps(module_description(tiny_model)))
    assert {key: description[key] for key in expected} == expected and description["model"]["num_classes"] == 5
    assert description["export"] == metadata.export_entry("onnx", (96, 160), 32, 1, "fp32")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map[metadata.METADATA_KEY]) == description


def test_integer_pooled_size_equals_python_round():
    """The integer formula the exported graph computes equals ``round(a·t/b + 0.001)`` for every
    a, b in 1..1024 (numpy's float64 and half-to-even rounding are Python's) and on exact ties,
    which need b to be a multiple of 1000 (checked against Python's ``round`` itself)."""
    sides = np.arange(1, 1025, dtype=np.int64)
    for target in TARGETS:
        expected = np.round(sides[None, :] * target / sides[:, None] + 0.001)
        assert np.array_equal(round_ratio(sides[None, :], sides[:, None], target), expected), target
        for b in (1000, 2000, 4000):
            assert all(round_ratio(a, b, target) == round(a * target / b + 0.001) for a in range(b, 4 * b + 1))
    assert round_ratio(2409, 1000, 11) == round(2409 * 11 / 1000 + 0.001) == 26  # a tie, 26.5: to even
    for height in range(1, 80):
        for width in range(1, 80):
            for target in TARGETS:
                assert traceable_pooled_size(height, width, target) == pooled_size(height, width, target)


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory, tiny_cases, tiny_checkpoint):
    """``lrformer export --dynamic`` of the tiny model (the ``tiny_model_file`` model), run once:
    (exit code, printout, .onnx path)."""
    folder = tmp_path_factory.mktemp("dynamic")
    model_file = folder / "tiny.json"
    model_file.write_text(
        json.dumps({**tiny_cases["config"], "name": "lrformer_t", "pretrained": str(tiny_checkpoint)})
    )
    out = folder / "tiny_dynamic.onnx"
    printout = io.StringIO()
    with contextlib.redirect_stdout(printout):
        code = main(["export", "--model", str(model_file), "--dynamic", "--size", "96", "160", "--out", str(out)])
    return code, printout.getvalue(), out


def test_layer_norm_2d_exports_over_the_channel_axis_without_transposes(tmp_path):
    norm = LayerNorm2d(24, eps=1e-6).eval()
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(2, 24, 7, 9).mul(3).add(1)
    with torch.no_grad():
        expected = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (24,), norm.weight, norm.bias, 1e-6)
        expected = expected.permute(0, 3, 1, 2)
        torch.testing.assert_close(norm._forward_channels(x), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(norm(x), expected, rtol=0, atol=0)  # eager: the permuted form
    path = tmp_path / "norm.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(norm, (x,), str(path), dynamo=True, input_names=["x"])
    assert "Transpose" not in {node.op_type for node in onnx.load(str(path)).graph.node}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected.numpy(), rtol=0, atol=1e-5)


def test_dynamic_export_cli_checks_four_sizes(dynamic_export):
    code, printout, out = dynamic_export
    assert code == 0 and out.is_file()
    checked = re.findall(r"at (\d+)x(\d+): max abs difference (\S+)", printout)
    sizes = [(int(h), int(w)) for h, w, _ in checked]
    assert len(sizes) == 4 and sizes[0] == EXPORT_SIZE and len({h / w for h, w in sizes}) >= 3
    assert any(h % 32 or w % 32 for h, w in sizes)
    assert all(float(difference) < 1e-4 for _, _, difference in checked)


def test_dynamic_onnx_matches_pytorch_at_other_sizes(dynamic_export, tiny_model):
    """onnxruntime on the dynamic graph equals the PyTorch model (as exported: the fast path) at sizes
    and aspect ratios other than the traced 96x160."""
    out = dynamic_export[2]
    fast = lrformer.reparameterize_model(tiny_model)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for height, width in OTHER_SIZES:
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            expected = fast(x).numpy()
        ours = session.run(None, {"image": x.numpy()})[0]
        assert ours.shape == expected.shape == (1, 5, height, width)
        assert np.abs(ours - expected).max() < 1e-4, (height, width)


def test_dynamic_graph_has_symbolic_height_and_width(dynamic_export):
    assert read_description(dynamic_export[2])["export"]["input_size"] is None
    graph = onnx.load(str(dynamic_export[2])).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["scores"]
    image = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert image == [1, 3, "height", "width"]
    scores = graph.output[0].type.tensor_type.shape.dim
    assert scores[2].dim_param and scores[3].dim_param and not scores[2].dim_value


def test_fixed_export_needs_a_size(tmp_path, tiny_model_file, capsys):
    assert main(["export", "--model", str(tiny_model_file), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--size H W is required" in error_line(capsys) and not (tmp_path / "m.onnx").exists()


def test_openvino_export_without_openvino_names_the_extra(tmp_path, tiny_model_file, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    out = tmp_path / "m.xml"
    assert main(["export", "--model", str(tiny_model_file), "--size", "64", "64", "--out", str(out)]) == 2
    assert 'OpenVINO export needs openvino: pip install "lrformer[deploy]"' in error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "out, options, message",
    [
        ("w.xml", [], "would overwrite the input"),  # the IR's .bin is the checkpoint w.bin
        ("m.onnx", ["--format", "openvino"], "an openvino export is written to a .xml file"),
        ("m.xml", ["--format", "onnx"], "an onnx export is written to a .onnx file"),
    ],
)
def test_output_mistakes_write_nothing(tmp_path, tiny_model_file, tiny_checkpoint, capsys, out, options, message):
    weights = tmp_path / "w.bin"
    weights.write_bytes(tiny_checkpoint.read_bytes())
    args = ["export", "--model", str(tiny_model_file), "--weights", str(weights), "--size", "64", "64"]
    assert main([*args, "--out", str(tmp_path / out), *options]) == 2
    assert message in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "w.bin"]
    assert weights.read_bytes() == tiny_checkpoint.read_bytes()


class StridedFeatures(nn.Module):
    """Four k3 convs (strides 4, 2, 2, 2): features of the backbone's channels and sizes, at a
    fraction of its export time (the LRSA backbone is covered by the LRHead tests above)."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        ins = [3, *channels[:-1]]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, s, 1) for i, o, s in zip(ins, channels, (4, 2, 2, 2)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for conv in self.convs:
            features.append(x := conv(x))
        return features


def test_plus_model_dynamic_export(tmp_path):
    """The Mask2Former head of LRFormer+ (deformable attention, reference points, positional
    encodings, attention masks resized per level) exports with symbolic height and width too."""
    torch.manual_seed(0)
    model = lrformer.create_model(
        "lrformer_t_plus", embed_dims=[16, 32, 64, 64], depths=[1, 1, 1, 1], num_heads=[2, 4, 8, 8],
        num_classes=3, feat_channels=32, num_queries=8, pixel_decoder_layers=1, pixel_decoder_ffn=32,
        pixel_decoder_gn_groups=8, transformer_decoder_layers=2, transformer_decoder_ffn=32,
        positional_encoding_num_feats=16,
    )  # fmt: skip
    model.backbone = StridedFeatures([16, 32, 64, 64])
    out = tmp_path / "plus.onnx"
    export_onnx(model.eval(), (1, 3, 64, 96), out, dynamic=True)
    for size in [(1, 3, 96, 64), (1, 3, 72, 136)]:
        assert check_onnx(model, out, size) < 1e-4, size


class WidthBranch(nn.Conv2d):
    """A network that branches on the input width: no graph with a symbolic width exists."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if x.shape[-1] > 64 else x


def test_a_failed_dynamic_export_is_one_line_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"symbolic height and width failed \(.*\); export at a fixed size") as error:
        export_onnx(WidthBranch(3, 3, 1), (1, 3, 96, 96), tmp_path / "m.onnx", dynamic=True)
    assert "\n" not in str(error.value) and not (tmp_path / "m.onnx").exists()
