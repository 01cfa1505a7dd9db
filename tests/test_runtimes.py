"""Exported models behind the predictor: ONNX Runtime and OpenVINO give the PyTorch labels through
every pipeline mode (whole, slide, TTA + flip, the "+" pad pipeline, the long-side fallback), read
back the description they were written with, and every bad file or option is one line.

Agreement bound: labels equal PyTorch's on every pixel whose PyTorch top-2 score margin exceeds
1e-3 (float32 rounding of the runtimes is ~1e-5), and on >= 99.9% of all pixels; the confident
pixels are >= 90% of the image, so the comparison is never vacuous.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import lrformer
from lrformer import InferenceConfig, Predictor
from lrformer.cli.main import main
from lrformer.deploy import load_network
from lrformer.deploy.metadata import encode, export_entry
from lrformer.deploy.onnx import export_onnx
from lrformer.errors import ConfigError
from lrformer.models.factory import model_description

from .helpers import confident, error_line, synthetic_photo

onnx = pytest.importorskip("onnx")
ov = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

NAMES = ["sky", "tree", "road", "grass", "water"]
PALETTE = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120], [130, 140, 150]]
TEST = InferenceConfig(scale=(256, 96))  # the exports' own test settings: small, so the CLI tests are fast
FIXED = (96, 160)  # the fixed exports' input size: what TEST feeds for a 90x150 image
PLUS = dict(
    embed_dims=[16, 32, 64, 64], depths=[1, 1, 1, 1], num_heads=[2, 4, 8, 8], num_classes=3, feat_channels=32,
    num_queries=8, pixel_decoder_layers=1, pixel_decoder_ffn=32, pixel_decoder_gn_groups=8,
    transformer_decoder_layers=2, transformer_decoder_ffn=32, positional_encoding_num_feats=16,
)  # fmt: skip


def _description(model, runtime: str, size, classes=NAMES, palette=PALETTE) -> str:
    described = model_description(model, classes, palette, dataclasses.asdict(TEST))
    return encode(described, export_entry(runtime, size, 33 if size is None else min(size)))


def _save_ir(onnx_path, xml_path, description: str) -> None:
    from lrformer.deploy.openvino import save_ir

    save_ir(ov.convert_model(str(onnx_path)), xml_path, description)


@pytest.fixture(scope="module")
def tiny(tiny_cases, tiny_checkpoint):
    model = lrformer.create_model("lrformer_t", **tiny_cases["config"])
    lrformer.load_checkpoint(model, tiny_checkpoint)
    return model.eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny):
    """The tiny model exported once: dynamic ONNX, the OpenVINO IR of that graph, a fixed-size
    ONNX (``FIXED``) and the same fixed graph without our description (exported elsewhere)."""
    folder = tmp_path_factory.mktemp("exports")
    fast = lrformer.reparameterize_model(tiny)
    paths = {name: folder / name for name in ("dynamic.onnx", "dynamic.xml", "fixed.onnx", "foreign.onnx")}
    export_onnx(fast, (1, 3, *FIXED), paths["dynamic.onnx"], dynamic=True, description=_description(tiny, "onnx", None))
    _save_ir(paths["dynamic.onnx"], paths["dynamic.xml"], _description(tiny, "openvino", None))
    export_onnx(fast, (1, 3, *FIXED), paths["fixed.onnx"], description=_description(tiny, "onnx", FIXED))
    proto = onnx.load(str(paths["fixed.onnx"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(paths["foreign.onnx"]))
    return paths


@pytest.fixture(scope="module")
def networks(exports):
    return {
        "onnx": load_network(exports["dynamic.onnx"], "cpu", threads=2),
        "openvino": load_network(exports["dynamic.xml"], "cpu", threads=2),
    }


def assert_same_labels(reference: Predictor, exported: Predictor, image: np.ndarray) -> None:
    """The labels agree as the module docstring states."""
    scores = reference.predict_scores(image)
    expected, labels, sure = scores.argmax(0).numpy(), exported(image), confident(scores).numpy()
    assert sure.mean() > 0.9
    np.testing.assert_array_equal(labels[sure], expected[sure])
    assert (labels != expected).mean() <= 1e-3


PIPELINES = {
    "whole": dict(scale=(256, 96)),
    "slide": dict(scale=(256, 128), mode="slide", crop=(96, 96), stride=(64, 96)),
    "tta_flip": dict(scale=(256, 96), tta_ratios=(0.75, 1.0, 1.5), flip=True),
    "long_side": dict(scale=(512, 96), max_attention_elements=2**21),
}


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
@pytest.mark.parametrize("mode", list(PIPELINES))
def test_exports_give_the_pytorch_labels_in_every_mode(tiny, networks, runtime, mode, caplog):
    config = InferenceConfig(**PIPELINES[mode])
    reference, exported = Predictor(tiny, config), Predictor(networks[runtime], config)
    shapes = [(120, 200), (97, 61)] if mode == "whole" else [(97, 61)]  # landscape, portrait; not multiples of 32
    with caplog.at_level(logging.WARNING):
        for shape in shapes:
            assert_same_labels(reference, exported, synthetic_photo(*shape, seed=sum(shape)))
    if mode == "long_side":  # the fallback ran, for PyTorch and for the export
        assert caplog.text.count("along the long side") == 2, caplog.text


def test_the_attention_estimate_is_the_variants(tiny, networks):
    for network in networks.values():
        for size in [(96, 160), (32, 900), (517, 203)]:
            assert network.attention_elements(*size) == tiny.attention_elements(*size)


def test_fixed_export_runs_its_size_and_refuses_others_in_one_line(tiny, exports):
    network = load_network(exports["fixed.onnx"], "cpu")
    image = synthetic_photo(90, 150, seed=4)  # TEST: 90x150 -> 96x160, FIXED
    assert_same_labels(Predictor(tiny, TEST), Predictor(network), image)
    with pytest.raises(ConfigError) as error:
        Predictor(network)(synthetic_photo(120, 250, seed=1))  # TEST: 120x250 -> 96x200, aligned 96x224
    message = str(error.value)
    assert "\n" not in message
    assert "exported for 96x160 inputs but the pipeline feeds it 96x224" in message and "--dynamic" in message


def test_a_batch_of_views_runs_through_a_batch_one_graph(tiny, networks):
    x = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = lrformer.reparameterize_model(tiny)(x)
    for network in networks.values():
        assert network.batch == 1
        scores = network(x)
        assert scores.shape == (3, 5, 64, 96) and scores.dtype == torch.float32
        torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)


def test_openvino_scores_come_back_channels_last(tiny, networks):
    # the memory order OpenVINO computes the final resize in: a view, no reorder of the score map
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = lrformer.reparameterize_model(tiny)(x)
    scores = networks["openvino"](x)
    assert scores.shape == (1, 5, 64, 96) and scores.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)


def test_the_description_round_trips(tiny, exports, networks):
    for runtime, network in networks.items():
        written = json.loads(_description(tiny, runtime, None))
        assert network.description == written
        assert network.num_classes == 5 and network.input_size is None
    assert Predictor(networks["onnx"]).config == TEST  # the export's own test settings
    fixed = load_network(exports["fixed.onnx"], "cpu")
    assert fixed.description["export"]["input_size"] == list(FIXED) and fixed.input_size == FIXED


def test_plus_model_goes_through_the_pad_pipeline(tmp_path):
    """A tiny LRFormer+ (Mask2Former head) exported at a fixed size: the "+" pipeline (keep-ratio
    resize, zero padding to 32, the padding cropped off the scores) through ONNX Runtime and OpenVINO."""
    torch.manual_seed(0)
    model = lrformer.create_model("lrformer_t_plus", **PLUS).eval()
    path = tmp_path / "plus.onnx"
    described = encode(model_description(model), export_entry("onnx", FIXED, min(FIXED)))
    export_onnx(lrformer.reparameterize_model(model), (1, 3, *FIXED), path, description=described)
    _save_ir(path, tmp_path / "plus.xml", described.replace('"runtime":"onnx"', '"runtime":"openvino"'))
    config = InferenceConfig(pipeline="pad", scale=(160, 96))
    reference = Predictor(model, config)
    for exported in (load_network(path, "cpu"), load_network(tmp_path / "plus.xml", "cpu")):
        predictor = Predictor(exported, config)
        assert predictor.config.pipeline == "pad"
        for shape in [(85, 157), (90, 150)]:  # padded to 96x160 from 87x160 and from 96x160
            assert_same_labels(reference, predictor, synthetic_photo(*shape, seed=shape[0]))


# ---------------------------------------------------------------- the command line
def test_predict_with_an_export_names_its_classes(exports, tmp_path, tiny, capsys):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), synthetic_photo(90, 150, seed=7))
    expected = Predictor(tiny, TEST)(str(image))
    for name in ("dynamic.onnx", "dynamic.xml", "fixed.onnx"):
        out = tmp_path / name
        args = ["predict", "--weights", str(exports[name]), str(image), "--out", str(out), "--json"]
        assert main([*args, "--no-overlay", "--workers", "0", "--threads", "1", "--device", "cpu"]) == 0
        label = np.asarray(Image.open(out / "a.png"))
        assert (label == expected).mean() > 0.999
        classes = json.loads((out / "a.json").read_text())["classes"]
        assert {row["name"] for row in classes} <= set(NAMES) and classes
        assert Image.open(out / "a.png").getpalette()[:6] == PALETTE[0] + PALETTE[1]


def test_eval_of_an_export_is_the_hand_computed_miou(exports, networks, tmp_path):
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    (root / "ann").mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(64, 96), (90, 150), (120, 80)]):
        cv2.imwrite(str(root / "img" / f"s{i}.png"), synthetic_photo(*shape, seed=i))
        label = rng.integers(0, 5, shape).astype(np.uint8)
        label[:5] = 255  # ignored
        Image.fromarray(label).save(root / "ann" / f"s{i}.png")
    spec = tmp_path / "set.yaml"
    spec.write_text("img_dir: img\nann_dir: ann\nimg_suffix: .png\nclasses: [a, b, c, d, e]\ntest: {scale: [256, 96]}\n")
    out = tmp_path / "m.json"
    assert main(["eval", "--weights", str(exports["dynamic.xml"]), "--data", str(spec), "--data-root", str(root),
                 "--workers", "0", "--json", str(out)]) == 0  # fmt: skip
    confusion = np.zeros((5, 5), np.int64)
    predictor = Predictor(networks["openvino"], TEST)
    for i in range(3):
        pred = predictor(str(root / "img" / f"s{i}.png"))
        label = np.asarray(Image.open(root / "ann" / f"s{i}.png"))
        keep = label != 255
        np.add.at(confusion, (label[keep], pred[keep]), 1)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    iou = np.diag(confusion) / np.where(union > 0, union, np.nan)
    assert json.loads(out.read_text())["mIoU"] == pytest.approx(float(np.nanmean(iou)) * 100, abs=0.005)


def test_serve_runs_an_export_and_describes_it(networks):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from lrformer.cli.outputs import Legend
    from lrformer.cli.serve import served_model_info
    from lrformer.serving.app import create_app

    predictor = Predictor(networks["openvino"], input_format="bgr")
    description = predictor.network.description
    info = served_model_info(predictor, Legend.for_model(description, 5, None))
    assert info["classes"] == NAMES and info["palette"] == PALETTE and info["export"]["runtime"] == "openvino"
    image = synthetic_photo(90, 150, seed=8)
    with TestClient(create_app(predictor, info), base_url="http://127.0.0.1:8000") as client:  # a Host it allows
        assert client.get("/model").json()["export"] == description["export"]
        answer = client.post("/predict", content=cv2.imencode(".png", image)[1].tobytes())
    assert answer.status_code == 200
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(answer.content))), predictor(image))


def _predict(weights, tmp_path, *options) -> int:
    image = tmp_path / "x.png"
    if not image.exists():
        cv2.imwrite(str(image), synthetic_photo(90, 150, seed=3))
    return main(["predict", "--weights", str(weights), str(image), "--out", str(tmp_path / "out"), "--workers", "0",
                 "--no-overlay", "--overwrite", *options])  # fmt: skip  (each call segments, whatever came before)


def test_a_file_exported_elsewhere_needs_its_class_count_or_variant(exports, tmp_path, capsys, caplog):
    assert _predict(exports["foreign.onnx"], tmp_path) == 2
    line = error_line(capsys)
    assert "carries no lrformer description" in line and "--num-classes" in line
    with caplog.at_level(logging.WARNING):
        assert _predict(exports["foreign.onnx"], tmp_path, "--num-classes", "5", "--scale", "256", "96") == 0
    assert caplog.text.count("carries no lrformer description: running it as an unnamed model with 5 classes") == 1
    assert _predict(exports["foreign.onnx"], tmp_path, "--num-classes", "7") == 2
    assert "gives 5 class scores, not --num-classes 7" in error_line(capsys)
    tagged = load_network(exports["foreign.onnx"], "cpu", model="lrformer_t.cityscapes", num_classes=5)
    assert tagged.description["model"]["name"] == "lrformer_t" and tagged.description["classes"] is None  # 5 != 19
    network = load_network(exports["foreign.onnx"], "cpu", model="lrformer_t")
    assert network.num_classes == 5 and network.attention_elements(512, 512) == 7766016  # lrformer_t's head


def _damaged(exports, tmp_path) -> dict:
    """Bad files: another format under each suffix, a truncated .bin, an .xml without its .bin."""
    files = {"other.onnx": tmp_path / "other.onnx", "other.xml": tmp_path / "other.xml"}
    files["other.onnx"].write_bytes(b"\x89PNG\r\n\x1a\n not a model")
    files["other.xml"].write_text("<?xml version='1.0'?><svg></svg>")
    for name in ("truncated", "lonely"):
        shutil.copy(exports["dynamic.xml"], tmp_path / f"{name}.xml")
        files[name] = tmp_path / f"{name}.xml"
    data = exports["dynamic.xml"].with_suffix(".bin").read_bytes()
    (tmp_path / "truncated.bin").write_bytes(data[: len(data) // 2])
    return files


BAD_FILES = {
    "other.onnx": "is not a readable ONNX model",
    "other.xml": "is not an OpenVINO IR",
    "truncated": "is not a readable OpenVINO IR",
    "lonely": "has no lonely.bin beside it",
}


def test_every_bad_file_is_one_line(exports, tmp_path, capsys):
    files = _damaged(exports, tmp_path)
    for name, problem in BAD_FILES.items():
        assert _predict(files[name], tmp_path) == 2, name
        assert problem in error_line(capsys), name
    assert _predict(tmp_path / "missing.onnx", tmp_path) == 2
    assert "missing.onnx does not exist" in error_line(capsys)


@pytest.mark.parametrize(
    "name, options, problem",
    [
        ("dynamic.onnx", ["--device", "mps"], "ONNX Runtime runs a model on cpu or cuda"),
        ("dynamic.onnx", ["--device", "cuda"], "no CUDA provider; pip install onnxruntime-gpu, or --device cpu"),
        ("dynamic.xml", ["--device", "cuda"], "OpenVINO runs a model on cpu or an Intel gpu"),
        ("dynamic.xml", ["--precision", "bf16"], "--precision bf16 applies to PyTorch models"),
        ("dynamic.onnx", ["--no-fast"], "--no-fast applies to PyTorch models"),
        ("fixed.onnx", ["--scale", "512", "128"], "was exported for 96x160 inputs"),
    ],
)
def test_every_bad_option_is_one_line(exports, tmp_path, capsys, name, options, problem):
    assert _predict(exports[name], tmp_path, *options) == 2
    assert problem in error_line(capsys)


@pytest.mark.parametrize("module, name", [("onnxruntime", "dynamic.onnx"), ("openvino", "dynamic.xml")])
def test_a_runtime_not_installed_is_one_line(exports, tmp_path, capsys, monkeypatch, module, name):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import fails as if not installed
    assert _predict(exports[name], tmp_path) == 2
    assert f'needs {module}: pip install "lrformer[deploy]"' in error_line(capsys)


def test_export_refuses_an_exported_model_as_weights(exports):
    from types import SimpleNamespace

    from lrformer.cli.common import load_model

    args = SimpleNamespace(weights=str(exports["dynamic.onnx"]), model=None, num_classes=None, device="cpu")
    with pytest.raises(ConfigError, match="is an exported model, which this command cannot use"):
        load_model(args)
