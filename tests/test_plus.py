"""LRFormer+ (LRFormer + Mask2Former head): parity with the official head, layouts, predict/eval."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import lrformer
from lrformer.cli.main import main
from lrformer.models.registry import OVERRIDE_KEYS, PLUS_OVERRIDE_KEYS

from .conftest import DATA, SHARED_PARITY
from .helpers import confident, reference_scores, synthetic_photo

PLUS_PARAMS = {"lrformer_t_plus": 31_017_090, "lrformer_s_plus": 47_673_978, "lrformer_b_plus": 79_838_722,
               "lrformer_l_plus": 119_217_130, "lrformer_xl_plus": 204_733_468}  # fmt: skip
PLUS_LAYOUT = json.loads((DATA / "plus_layout.json").read_text())


def _model_args(config: dict) -> dict:
    return {k: v for k, v in config.items() if k in OVERRIDE_KEYS + PLUS_OVERRIDE_KEYS}


def _case_files():
    files = [DATA / "tiny_plus_cases.pt"]
    if (SHARED_PARITY / "tiny_plus_cases.pt").is_file():
        files.append(SHARED_PARITY / "tiny_plus_cases.pt")
    return files


@pytest.fixture(scope="module")
def tiny_plus():
    config = torch.load(DATA / "tiny_plus_cases.pt", weights_only=True)["config"]
    return lrformer.create_model(
        "lrformer_t_plus", **_model_args(config), pretrained=DATA / "tiny_plus_released_layout.pth"
    )


@pytest.mark.parametrize("cases_file", _case_files(), ids=lambda p: p.parent.name)
def test_tiny_plus_parity(cases_file, tiny_plus):
    data = torch.load(cases_file, weights_only=True)
    with torch.no_grad():
        for case in data["cases"]:
            x = case["input"].float()
            features = tiny_plus.backbone(x)
            if case["features"] is not None:
                for ours, official in zip(features, case["features"], strict=True):
                    assert (ours - official).abs().max().item() < 1e-4
            cls_preds, mask_preds = tiny_plus.decode_head(features)
            assert len(cls_preds) == len(mask_preds) == data["config"]["transformer_decoder_layers"] + 1
            assert (cls_preds[-1] - case["cls_scores"]).abs().max().item() < 1e-4
            assert (mask_preds[-1] - case["mask_preds"]).abs().max().item() < 1e-4
            if case["seg_logits"] is not None:
                seg = tiny_plus(x)
                assert seg.shape == case["seg_logits"].shape
                assert (seg - case["seg_logits"]).abs().max().item() < 1e-4


def test_tiny_plus_fast_path(tiny_plus):
    case = next(
        c for c in torch.load(DATA / "tiny_plus_cases.pt", weights_only=True)["cases"] if c["seg_logits"] is not None
    )
    fast = lrformer.reparameterize_model(tiny_plus)
    with torch.no_grad():
        assert (fast(case["input"].float()) - case["seg_logits"]).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", sorted(PLUS_PARAMS))
def test_plus_layout_and_parameter_count(name):
    with torch.device("meta"):
        model = lrformer.create_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == PLUS_LAYOUT[name]["segmentor_keys"]
    assert sum(v.numel() for v in model.state_dict().values()) == PLUS_PARAMS[name] == PLUS_LAYOUT[name]["params"]


def test_plus_overrides_only_for_plus_models():
    with pytest.raises(ValueError, match="unknown argument for lrformer_t 'num_queries'"):
        lrformer.create_model("lrformer_t", num_queries=10)


def test_plus_predict_and_eval_use_the_pad_pipeline(tmp_path, tiny_plus, capsys):
    config = torch.load(DATA / "tiny_plus_cases.pt", weights_only=True)["config"]
    model_file = tmp_path / "plus.json"
    model_file.write_text(json.dumps({**_model_args(config), "name": "lrformer_t_plus",
                                      "pretrained": str(DATA / "tiny_plus_released_layout.pth")}))  # fmt: skip
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    (root / "ann").mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(70, 90), (50, 40)]):
        cv2.imwrite(str(root / "img" / f"{i}.png"), synthetic_photo(*shape, seed=i))
        cv2.imwrite(str(root / "ann" / f"{i}.png"), rng.integers(0, 5, shape).astype(np.uint8))
    spec = tmp_path / "d.yaml"
    spec.write_text("img_dir: img\nann_dir: ann\nimg_suffix: .png\nseg_map_suffix: .png\nclasses: [a, b, c, d, e]\n"
                    "test: {scale: [256, 64]}\n")  # fmt: skip
    assert main(["eval", "--model", str(model_file), "--data", str(spec), "--data-root", str(root),
                 "--workers", "0", "--json", str(tmp_path / "m.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "m.json").read_text())["mIoU"] is not None
    assert main(["predict", "--model", str(model_file), str(root / "img"), "--out", str(tmp_path / "out"),
                 "--workers", "0", "--scale", "256", "64"]) == 0  # fmt: skip
    for i, shape in enumerate([(70, 90), (50, 40)]):  # the official LRFormer+ pipeline, written out
        expected = reference_scores(tiny_plus, root / "img" / f"{i}.png", scale=(256, 64), pipeline="pad")
        mask = confident(expected).numpy()
        assert mask.mean() > 0.9
        label = np.asarray(Image.open(tmp_path / "out" / f"{i}.png"))
        assert label.shape == shape
        np.testing.assert_array_equal(label[mask], expected.argmax(0).numpy()[mask])
