"""The predictor against the official test pipeline, sliding windows, TTA and I/O."""

from __future__ import annotations

import logging
import os
import re

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lrformer import InferenceConfig, Predictor
from lrformer.inference import colorize, overlay, save_label_png, to_bgr
from lrformer.inference.predictor import resize_rows
from lrformer.inference.sliding import long_side_windows, slide, window_starts

from .helpers import confident, reference_scores, synthetic_photo


def _write(tmp_path, name, image):
    path = str(tmp_path / name)
    assert cv2.imwrite(path, image)
    return path


@pytest.mark.parametrize("shape", [(256, 256), (300, 457), (517, 203), (77, 131)], ids=str)
def test_labels_equal_the_official_pipeline(tmp_path, tiny_model, shape):
    path = _write(tmp_path, "photo.jpg", synthetic_photo(*shape, seed=sum(shape)))
    expected = reference_scores(tiny_model, path)
    label = Predictor(tiny_model)(path)
    assert label.shape == shape and label.dtype == np.uint8
    mask = confident(expected).numpy()
    assert mask.mean() > 0.9
    np.testing.assert_array_equal(label[mask], expected.argmax(0).numpy()[mask])


def test_grayscale_rgba_and_16bit_follow_imread_color(tmp_path, tiny_model):
    bgr = synthetic_photo(120, 160, seed=3)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 7, np.uint8)])
    predictor = Predictor(tiny_model)
    gray_path = _write(tmp_path, "gray.png", gray)
    rgba_path = _write(tmp_path, "rgba.png", bgra)
    deep_path = _write(tmp_path, "deep.png", bgr.astype(np.uint16) * 256 + 255)
    np.testing.assert_array_equal(to_bgr(gray_path), np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(to_bgr(rgba_path), bgr)
    np.testing.assert_array_equal(to_bgr(deep_path), bgr)
    # arrays and PIL images are RGB(A) / grayscale and convert the same way
    np.testing.assert_array_equal(to_bgr(bgra[:, :, [2, 1, 0, 3]]), bgr)
    np.testing.assert_array_equal(to_bgr(Image.open(rgba_path)), bgr)
    np.testing.assert_array_equal(to_bgr(gray), to_bgr(gray_path))
    for path in (gray_path, rgba_path):
        expected = reference_scores(tiny_model, path)
        mask = confident(expected).numpy()
        np.testing.assert_array_equal(predictor(path)[mask], expected.argmax(0).numpy()[mask])


def test_window_arithmetic_by_hand():
    assert window_starts(1000, 512, 341) == [(0, 512), (341, 853), (488, 1000)]
    assert window_starts(512, 512, 341) == [(0, 512)]
    assert window_starts(300, 512, 341) == [(0, 300)]
    assert window_starts(2048, 1024, 768) == [(0, 1024), (768, 1792), (1024, 2048)]
    # scores are summed per window and divided by the per-pixel count
    x = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 3, 4, 10)
    out = slide(x, lambda w: torch.full_like(w[:, :1], float(w[0, 0, 0, 0])), crop=(4, 6), stride=(4, 3))
    # windows along x: [0, 6) value 0 and [3, 9) value 3, then [4, 10) value 4
    expected = torch.tensor([0, 0, 0, 1.5, 7 / 3, 7 / 3, 7 / 2, 7 / 2, 7 / 2, 4])
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_slide_equals_whole_when_the_image_is_smaller_than_the_crop(tiny_model):
    image = synthetic_photo(200, 300, seed=5)
    whole = Predictor(tiny_model).predict_scores(image[:, :, ::-1])
    slid = Predictor(tiny_model, mode="slide", crop=(1024, 1024), stride=(768, 768)).predict_scores(image[:, :, ::-1])
    torch.testing.assert_close(slid, whole, rtol=0, atol=1e-6)


def test_slide_matches_manual_window_average(tiny_model):
    x = torch.randn(1, 3, 96, 160)
    predictor = Predictor(tiny_model, mode="slide", crop=(64, 64), stride=(32, 48))
    out = predictor.scores(x, batch_size=3)
    manual = torch.zeros_like(out)
    count = torch.zeros(96, 160)
    with torch.no_grad():
        for y1, y2 in window_starts(96, 64, 32):
            for x1, x2 in window_starts(160, 64, 48):
                logits = tiny_model(x[:, :, y1:y2, x1:x2])
                manual[:, :, y1:y2, x1:x2] += torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear")
                count[y1:y2, x1:x2] += 1
    torch.testing.assert_close(out, manual / count, rtol=0, atol=1e-5)


def test_tta_averages_softmax_over_scales_and_flips(tiny_model):
    image = synthetic_photo(150, 210, seed=9)[:, :, ::-1]
    ratios = (0.5, 1.0)
    tta = Predictor(tiny_model, tta_ratios=ratios, flip=True).predict_scores(image)
    probs = []
    for ratio in ratios:
        scale = (int(2048 * ratio), int(512 * ratio))
        plain = Predictor(tiny_model, scale=scale)
        probs.append(plain.predict_scores(image).softmax(0))
        probs.append(plain.predict_scores(np.ascontiguousarray(image[:, ::-1])).flip(-1).softmax(0))
    torch.testing.assert_close(tta, torch.stack(probs).mean(0), rtol=0, atol=1e-5)


def test_extreme_aspect_ratio_falls_back_to_windows(tiny_model, caplog):
    image = synthetic_photo(40, 900, seed=1)
    assert long_side_windows(96, 2048, tiny_model.attention_elements, 2**28) == ((96, 384), (96, 336))
    with caplog.at_level(logging.WARNING):
        label = Predictor(tiny_model)(image)
    assert label.shape == (40, 900)
    assert "along the long side" in caplog.text and "96x384 windows" in caplog.text


def test_resize_rows_equals_full_resize():
    scores = torch.randn(4, 13, 17)
    full = torch.nn.functional.interpolate(scores[None], size=(50, 41), mode="bilinear")[0]
    for rows in (slice(0, 7), slice(7, 31), slice(31, 50)):
        torch.testing.assert_close(resize_rows(scores, (50, 41), rows), full[:, rows], rtol=0, atol=1e-5)


def test_pad_pipeline_crops_padding(tiny_model):
    """LRFormer+ pipeline: one keep-ratio resize, zero padding after normalising, crop, resize."""
    image = synthetic_photo(100, 150, seed=2)[:, :, ::-1]
    predictor = Predictor(tiny_model, pipeline="pad", scale=(300, 100))
    scores = predictor.predict_scores(image)
    bgr = cv2.resize(np.ascontiguousarray(image[:, :, ::-1]), (150, 100), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(
        ((bgr[:, :, ::-1] - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])).astype(np.float32)
    )
    x = torch.nn.functional.pad(x.permute(2, 0, 1)[None], (0, 10, 0, 28))  # to 128 x 160
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(tiny_model(x), size=(128, 160), mode="bilinear")
    torch.testing.assert_close(scores, logits[0, :, :100, :150], rtol=0, atol=2e-4)


def test_overlay_and_palette_png(tmp_path):
    label = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(colorize(label, palette)[1, 0], [0, 0, 255])
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, label, palette, opacity=0.25)  # BGR out
    np.testing.assert_array_equal(blended[0, 0], [75, 75, 139])  # 100*0.75 + (0, 0, 255)*0.25
    save_label_png(tmp_path / "l.png", label, palette)
    back = Image.open(tmp_path / "l.png")
    assert back.mode == "P"
    np.testing.assert_array_equal(np.asarray(back), label)
    assert back.getpalette()[:9] == palette.flatten().tolist()
    many = np.array([[0, 300]], dtype=np.uint16)
    save_label_png(tmp_path / "m.png", many, np.zeros((400, 3), np.uint8))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED), many)


def test_failed_write_leaves_existing_output_intact(tmp_path, monkeypatch):
    target = tmp_path / "l.png"
    save_label_png(target, np.zeros((4, 4), np.uint8))
    before = target.read_bytes()

    def full_disk(fd):  # the bytes went to the temporary file; flushing them to disk fails
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="disk full"):
        save_label_png(target, np.ones((4, 4), np.uint8))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["l.png"]


def test_config_validation():
    with pytest.raises(ValueError, match="mode must be"):
        InferenceConfig(mode="tiles")


def test_pad_pipeline_flips_before_padding():
    from lrformer.inference import prepare

    image = synthetic_photo(50, 70, seed=4)[:, :, ::-1]
    views = prepare(image, InferenceConfig(pipeline="pad", scale=(140, 50), flip=True, tta_ratios=(1.0,))).views
    plain, flipped = views[0].image, views[1].image
    assert plain.shape[-2:] == flipped.shape[-2:] == (64, 96) and views[1].valid == (50, 70)
    torch.testing.assert_close(flipped[:, :50, :70], plain[:, :50, :70].flip(-1))
    assert flipped[:, :, 70:].abs().max() == 0  # padding stays bottom/right


def test_model_defaults_use_the_variant_test_scale():
    from lrformer import create_model
    from lrformer.inference.predictor import model_defaults

    with torch.device("meta"):
        large, tiny = create_model("lrformer_l"), create_model("lrformer_t")
    assert model_defaults(large).scale == (2560, 640)
    assert model_defaults(tiny).scale == (2048, 512)
    city = InferenceConfig(mode="slide", scale=(2048, 1024))
    assert model_defaults(large, city).scale == (2048, 1024)


def test_window_stride_must_not_exceed_crop():
    with pytest.raises(ValueError, match="stride <= crop"):
        InferenceConfig(mode="slide", crop=(512, 512), stride=(1000, 341))


def test_a_one_pixel_strip_is_segmented_through_windows_by_hand(tiny_model, caplog):
    """A 1×600 strip under a (512, 128) bound: f = min(512/600, 128/1) = 0.8533 → (int(0.85 + .5),
    int(512.5)) = (1, 512) (never 0 pixels high), aligned to (32, 512); above the attention budget,
    so windows along the long side, which the warning names."""
    bgr = synthetic_photo(1, 600, seed=0)
    with caplog.at_level(logging.WARNING):
        predictor = Predictor(tiny_model, scale=(512, 128), max_attention_elements=2**26)
        scores = predictor.predict_scores(bgr[:, :, ::-1])  # an RGB array
    found = re.search(r"input 32x512: .* using (\d+)x(\d+) windows \(stride (\d+)\)", caplog.text)
    assert found, caplog.text
    crop_w, stride = int(found.group(2)), int(found.group(3))
    assert int(found.group(1)) == 32 and crop_w < 512
    resized = cv2.resize(cv2.resize(bgr, (512, 1), interpolation=cv2.INTER_LINEAR), (512, 32))
    x = (resized[:, :, ::-1] - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    x = torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]
    total, count = torch.zeros(1, 5, 32, 512), torch.zeros(512)
    starts = sorted({min(i * stride, 512 - crop_w) for i in range((512 - crop_w + stride - 1) // stride + 1)})
    with torch.no_grad():
        for x1 in starts:
            logits = tiny_model(x[..., x1 : x1 + crop_w])
            total[..., x1 : x1 + crop_w] += torch.nn.functional.interpolate(logits, (32, crop_w), mode="bilinear")
            count[x1 : x1 + crop_w] += 1
    assert count.min() >= 1
    expected = torch.nn.functional.interpolate(total / count, (1, 600), mode="bilinear")[0]
    assert scores.shape == (5, 1, 600)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)
