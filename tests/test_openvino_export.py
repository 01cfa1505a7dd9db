"""OpenVINO export: the IR (``.xml`` + ``.bin``) of the tiny model, fixed and dynamic, equals PyTorch;
its description survives the round trip through ``rt_info``; both files are written together."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
import torch

import lrformer
from lrformer.cli.main import main
from lrformer.deploy import metadata
from lrformer.deploy.openvino import compare_openvino, compile_cpu, convert, read_description, read_model, save_ir
from lrformer.inference.network import module_description

from .test_export import EXPORT_SIZE, OTHER_SIZES, StridedFeatures

openvino = pytest.importorskip("openvino")


def run_export(*args: str) -> tuple[int, str]:
    printout = io.StringIO()
    with contextlib.redirect_stdout(printout):
        code = main(["export", *args])
    return code, printout.getvalue()


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_cases, tiny_checkpoint):
    path = tmp_path_factory.mktemp("model") / "tiny.json"
    path.write_text(json.dumps({**tiny_cases["config"], "name": "lrformer_t", "pretrained": str(tiny_checkpoint)}))
    return path


@pytest.fixture(scope="module")
def dynamic_ir(tmp_path_factory, tiny_file):
    """``lrformer export --format openvino --dynamic`` of the tiny model, run once: (code, printout, .xml)."""
    out = tmp_path_factory.mktemp("ir") / "tiny.xml"
    code, printout = run_export("--model", str(tiny_file), "--format", "openvino", "--dynamic", "--size", "96", "160",
                                "--out", str(out))  # fmt: skip
    return code, printout, out


def test_dynamic_ir_is_checked_at_four_sizes_and_written_whole(dynamic_ir):
    code, printout, out = dynamic_ir
    assert code == 0, printout
    checked = re.findall(r"OpenVINO vs PyTorch at (\d+)x(\d+): max abs difference (\S+)", printout)
    assert [(int(h), int(w)) for h, w, _ in checked][0] == EXPORT_SIZE and len(checked) == 4
    assert all(float(difference) < 1e-4 for _, _, difference in checked)
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.bin", "tiny.xml"]  # no temporaries left


def test_dynamic_ir_matches_pytorch_at_other_sizes(dynamic_ir, tiny_model):
    fast = lrformer.reparameterize_model(tiny_model)
    run = compile_cpu(read_model(dynamic_ir[2]))
    for height, width in OTHER_SIZES:
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            expected = fast(x).numpy()
        ours = run(x.numpy())
        assert ours.shape == expected.shape == (1, 5, height, width)
        assert np.abs(ours - expected).max() < 1e-4, (height, width)


def test_the_ir_carries_the_model_description(dynamic_ir, tiny_model):
    description = read_description(dynamic_ir[2])
    expected = module_description(tiny_model)
    assert {key: description[key] for key in expected} == json.loads(json.dumps(expected))
    assert description["model"]["num_classes"] == 5
    assert description["export"] == metadata.export_entry("openvino", None, 32, 1, "fp32")


def test_fixed_size_ir(tmp_path, tiny_model, tiny_file):
    out = tmp_path / "fixed.xml"
    code, printout = run_export("--model", str(tiny_file), "--size", "96", "160", "--out", str(out))  # format from .xml
    assert code == 0 and "OpenVINO vs PyTorch at 96x160" in printout
    ov_model = read_model(out)
    assert list(ov_model.inputs[0].get_shape()) == [1, 3, 96, 160]
    assert list(ov_model.outputs[0].get_shape()) == [1, 5, 96, 160]
    assert read_description(out)["export"]["input_size"] == [96, 160]


def test_a_new_ir_replaces_both_files_and_a_failed_one_neither(tmp_path, tiny_model, monkeypatch):
    out = tmp_path / "m.xml"
    ov_model = convert(lrformer.reparameterize_model(tiny_model), (1, 3, 64, 64))
    bare = ov_model.clone()
    save_ir(ov_model, out, metadata.encode({"model": {}}, {"first": 1}))
    save_ir(ov_model, out, metadata.encode({"model": {}}, {"second": 2}))
    assert read_description(out)["export"] == {"second": 2}

    def disk_full(model, path, compress_to_fp16=True):  # the temporary .xml is half written, then the disk is full
        with open(path, "w") as handle:
            handle.write("<net")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openvino, "save_model", disk_full)
    with pytest.raises(OSError):
        save_ir(ov_model, out, metadata.encode({"model": {}}, {"third": 3}))
    assert read_description(out)["export"] == {"second": 2}  # the previous pair, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    monkeypatch.undo()
    save_ir(bare, tmp_path / "fresh.xml")
    assert read_description(tmp_path / "fresh.xml") is None  # an IR without our description


def test_plus_model_ir():
    """LRFormer+ (the Mask2Former head: deformable attention through grid_sample) converts exactly too."""
    torch.manual_seed(0)
    model = lrformer.create_model(
        "lrformer_t_plus", embed_dims=[16, 32, 64, 64], depths=[1, 1, 1, 1], num_heads=[2, 4, 8, 8],
        num_classes=3, feat_channels=32, num_queries=8, pixel_decoder_layers=1, pixel_decoder_ffn=32,
        pixel_decoder_gn_groups=8, transformer_decoder_layers=2, transformer_decoder_ffn=32,
        positional_encoding_num_feats=16,
    ).eval()  # fmt: skip
    model.backbone = StridedFeatures([16, 32, 64, 64])
    ov_model = convert(model, (1, 3, 64, 96), dynamic=True)
    for shape in [(1, 3, 96, 64), (1, 3, 72, 136)]:
        difference, scale = compare_openvino(model, ov_model, shape)
        assert difference < 1e-4 * max(1.0, scale), shape
