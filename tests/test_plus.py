"""LRFormer+ (LRFormer + Mask2Former head): parity with the official head, layouts, predict/eval, the
decode-head contract (scores, loss, layout)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import lrformer
from lrformer.cli.main import main
from lrformer.engine.losses import TrainingObjective
from lrformer.models import DecodeHead
from lrformer.models.mask2former import Mask2FormerCriterion, Mask2FormerOutput
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
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert main(["predict", "--model", str(model_file), str(root / "img"), "--out", str(tmp_path / "out"),
                 "--workers", "0", "--scale", "256", "64"]) == 0  # fmt: skip
    intersection, union, area = np.zeros(5), np.zeros(5), np.zeros(5)
    for i, shape in enumerate([(70, 90), (50, 40)]):  # the official LRFormer+ pipeline, written out
        expected = reference_scores(tiny_plus, root / "img" / f"{i}.png", scale=(256, 64), pipeline="pad")
        mask = confident(expected).numpy()
        assert mask.mean() > 0.9
        label = np.asarray(Image.open(tmp_path / "out" / f"{i}.png"))
        assert label.shape == shape
        np.testing.assert_array_equal(label[mask], expected.argmax(0).numpy()[mask])
        truth = cv2.imread(str(root / "ann" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        for c in range(5):  # eval's numbers, from the predicted maps, by hand
            intersection[c] += ((label == c) & (truth == c)).sum()
            union[c] += ((label == c) | (truth == c)).sum()
            area[c] += (truth == c).sum()
    assert metrics["mIoU"] == pytest.approx(100 * np.mean(intersection[union > 0] / union[union > 0]), abs=0.006)
    assert metrics["aAcc"] == pytest.approx(100 * intersection.sum() / area.sum(), abs=0.006)


def test_plus_model_output_is_the_semantic_scores_at_the_input_size(tiny_plus):
    """``model(x)`` = ``decode_head.predict(features, (H, W))``: per pixel, the sum over queries of the
    class probabilities (no "no object") times the mask probability upsampled to the input size,
    of the last prediction in the head's raw output."""
    x = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = tiny_plus.forward_features(x)
        output = tiny_plus.forward_head(features)
        scores = tiny_plus(x)
        other = tiny_plus.decode_head.predict(features, (40, 33))
    assert isinstance(output, Mask2FormerOutput) and isinstance(tiny_plus.decode_head, DecodeHead)
    class_logits, mask_logits = output  # a tuple of per-layer lists, as before
    assert class_logits is output.class_logits and len(mask_logits) == 4  # before the 3 layers, and after each
    assert class_logits[-1].shape == (1, 20, 6) and mask_logits[-1].shape == (1, 20, 18, 23)
    probabilities = class_logits[-1].softmax(-1)[0, :, :5]  # (Q, C)
    for size, ours in (((70, 90), scores), ((40, 33), other)):
        masks = F.interpolate(mask_logits[-1], size, mode="bilinear", align_corners=False)[0].sigmoid()
        expected = sum(probabilities[q].view(5, 1, 1) * masks[q] for q in range(20))
        assert ours.shape == (1, 5, *size) and ours.dtype == torch.float32
        torch.testing.assert_close(ours[0], expected, rtol=0, atol=1e-5)


def test_plus_loss_is_the_criterion_and_keeps_the_released_layout(tiny_plus):
    """``decode_head.loss`` and the training objective are the Mask2Former criterion on float32
    predictions; the criterion is built per call, so the state dict never gains a key."""
    pytest.importorskip("scipy")
    keys = list(tiny_plus.state_dict())
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 64, 64, generator=generator)
    labels = torch.randint(0, 5, (2, 64, 64), generator=generator)
    labels[1, 40:] = 255
    with torch.no_grad():
        output = tiny_plus.forward_head(tiny_plus.forward_features(x))
        torch.manual_seed(7)  # the criterion's random points
        terms = tiny_plus.decode_head.loss(output, labels)
        torch.manual_seed(7)
        direct = Mask2FormerCriterion(5)(output.class_logits, output.mask_logits, labels)
        torch.manual_seed(7)
        loss, logged = TrainingObjective(tiny_plus)(x, labels)  # eval mode: the same output
    assert len(terms) == 1 + 3 * 4 and terms.keys() == direct.keys()
    for name, value in direct.items():
        assert terms[name].item() == value.item(), name
    assert loss.item() == direct["loss"].item() and logged.keys() == direct.keys() - {"loss"}
    assert direct["loss"].item() == pytest.approx(sum(v.item() for k, v in direct.items() if k != "loss"), rel=1e-6)
    assert list(tiny_plus.state_dict()) == keys and not any("criterion" in k for k in keys)
    assert not any(isinstance(m, Mask2FormerCriterion) for m in tiny_plus.modules())


def test_plus_attention_elements_count_the_masked_cross_attention(tiny_plus):
    head = tiny_plus.decode_head
    assert head.attention_elements(64, 32) == 8 * 20 * 64 * 32  # heads x queries x stride-8 tokens
    backbone = tiny_plus.backbone.attention_elements(512, 256)
    assert tiny_plus.attention_elements(512, 256) == max(backbone, 8 * 20 * 64 * 32)
