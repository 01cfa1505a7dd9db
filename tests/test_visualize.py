"""Pictures of predictions: the legend's swatches and names read back from the pixels, band-by-band
overlays equal to the whole-image formula, panels, class fractions and eval's --show-dir."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from lrformer.cli.main import main
from lrformer.image import visualize
from lrformer.image.visualize import class_pixels, legend_entries, legend_layout, overlay, panel

from .helpers import synthetic_photo

PALETTE = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [240, 200, 20], [90, 20, 160]], dtype=np.uint8)
NAMES = ("sky", "tree", "water", "sand", "road")


def _scene(height=240, width=320) -> np.ndarray:
    """Label map: 50% sky (0), 25% water (2), 12.5% road (4), 12.5% sand (3); no tree."""
    label = np.zeros((height, width), dtype=np.uint8)
    label[height // 2 :, : width // 2] = 2
    label[height // 2 :, width // 2 : 3 * width // 4] = 4
    label[height // 2 :, 3 * width // 4 :] = 3
    return label


def _text(entry_text: str, size: int) -> np.ndarray:
    """The text as Pillow draws it with its bundled font, black on white (an independent rendering)."""
    font = ImageFont.load_default(size=size)
    canvas = Image.new("RGB", (int(font.getlength(entry_text)) + 2, 2 * size), (255, 255, 255))
    ImageDraw.Draw(canvas).text((0, 0), entry_text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def test_legend_swatches_and_names_read_back_from_the_overlay():
    label = _scene()
    image = synthetic_photo(*label.shape, seed=1)
    picture = overlay(image, label, PALETTE, 0.5, NAMES, legend=True)[:, :, ::-1]  # RGB
    entries = legend_entries(label, PALETTE, NAMES)
    assert [(e.name, e.fraction) for e in entries] == [("sky", 0.5), ("water", 0.25), ("sand", 0.125),
                                                       ("road", 0.125)]  # fmt: skip
    layout = legend_layout(entries, label.shape[0])
    for entry, (x0, y0, x1, y1), (tx, ty) in zip(entries, layout.swatches, layout.texts):
        swatch = picture[y0:y1, x0:x1].reshape(-1, 3)
        assert (swatch == PALETTE[entry.index]).all(), entry.name  # a solid square of the class colour
        text = _text(f"{entry.name} {100 * entry.fraction:.1f}%", layout.font_size)[: layout.font_size * 3 // 2]
        assert (text < 128).any()  # ink
        np.testing.assert_array_equal(picture[ty : ty + text.shape[0], tx : tx + text.shape[1]], text)
    # outside the legend box the picture is the plain blend
    plain = overlay(image, label, PALETTE, 0.5)[:, :, ::-1]
    np.testing.assert_array_equal(picture[layout.height :], plain[layout.height :])
    np.testing.assert_array_equal(picture[:, layout.width :], plain[:, layout.width :])


def test_overlay_in_bands_equals_the_whole_image_formula(monkeypatch):
    label = np.random.default_rng(0).integers(0, 7, (53, 41)).astype(np.uint8)  # 5 and 6: beyond the palette
    image = synthetic_photo(53, 41, seed=2)
    color = np.zeros((7, 3), np.float32)
    color[:5] = PALETTE[:, ::-1]
    expected = (image.astype(np.float32) * 0.7 + color[label] * 0.3).round().clip(0, 255).astype(np.uint8)
    monkeypatch.setattr(visualize, "BAND_PIXELS", 100)  # 2 rows per band
    np.testing.assert_array_equal(overlay(image, label, PALETTE, 0.3), expected)
    copy = image.copy()
    assert overlay(copy, label, PALETTE, 0.3, inplace=True) is copy
    np.testing.assert_array_equal(copy, expected)


def test_panel_tiles_and_ignored_pixels():
    label = _scene(60, 80)
    truth = np.flipud(label).copy()
    truth[:5] = 255
    image = synthetic_photo(60, 80, seed=3)
    picture = panel(image, label, PALETTE, NAMES, ground_truth=truth)
    np.testing.assert_array_equal(picture[:, :80], image)
    np.testing.assert_array_equal(picture[:, 80:160], PALETTE[label][:, :, ::-1])
    np.testing.assert_array_equal(picture[5:, 160:240], PALETTE[truth[5:]][:, :, ::-1])
    assert (picture[:5, 160:240] == 0).all()  # ignored: black
    assert picture.shape[1] > 240  # and a legend on the right
    with pytest.raises(ValueError, match="the ground truth is"):
        panel(image, label, PALETTE, ground_truth=truth[:10])


def test_class_pixels_counts_in_bands(monkeypatch):
    monkeypatch.setattr(visualize, "BAND_PIXELS", 7)
    label = np.random.default_rng(1).integers(0, 300, (19, 23)).astype(np.uint16)
    np.testing.assert_array_equal(class_pixels(label), np.bincount(label.ravel()))


def test_predict_json_and_legend_names_from_a_dataset_file(tmp_path, tiny_model_file, capsys):
    dataset = tmp_path / "beach.yaml"
    dataset.write_text(yaml.safe_dump({"img_dir": "i", "ann_dir": "a", "classes": list(NAMES),
                                       "palette": PALETTE.tolist()}))  # fmt: skip
    cv2.imwrite(str(tmp_path / "photo.png"), synthetic_photo(360, 480, seed=5))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model_file), str(tmp_path / "photo.png"), "--out", str(out),
                 "--palette", str(dataset), "--json", "--panel", "--workers", "0"]) == 0  # fmt: skip
    label = np.asarray(Image.open(out / "photo.png"))
    counts = np.bincount(label.ravel(), minlength=5)
    summary = json.loads((out / "photo.json").read_text())
    assert summary["size"] == [360, 480]
    assert [(c["id"], c["name"], c["pixels"]) for c in summary["classes"]] == sorted(
        [(i, NAMES[i], int(n)) for i, n in enumerate(counts) if n], key=lambda row: -row[2]
    )
    assert abs(sum(c["fraction"] for c in summary["classes"]) - 1) < 1e-5
    # the legend's swatches in the JPEG overlay: the colours of the predicted classes, most pixels first
    picture = cv2.imread(str(out / "photo_overlay.jpg"))[:, :, ::-1].astype(int)
    entries = legend_entries(label, PALETTE, NAMES)
    layout = legend_layout(entries, 360)
    for entry, (x0, y0, x1, y1) in zip(entries, layout.swatches):
        centre = picture[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].reshape(-1, 3).mean(0)
        assert np.abs(centre - PALETTE[entry.index]).max() < 12, entry.name  # JPEG-compressed
    assert cv2.imread(str(out / "photo_panel.jpg")).shape[:2] == (360, 960 + layout.width)


def test_eval_show_dir_writes_image_prediction_truth(tmp_path, tiny_model_file, capsys):
    root = tmp_path / "data"
    for split in ("val",):
        (root / "img" / split).mkdir(parents=True)
        (root / "ann" / split).mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(root / "img" / "val" / f"s{i}.jpg"), synthetic_photo(64, 96, seed=i))
        Image.fromarray(_scene(64, 96)).save(root / "ann" / "val" / f"s{i}.png")
    spec = tmp_path / "set.yaml"
    spec.write_text(yaml.safe_dump({"img_dir": "img/{split}", "ann_dir": "ann/{split}",
                                    "classes": list(NAMES), "palette": PALETTE.tolist()}))  # fmt: skip
    shows = tmp_path / "shows"
    assert main(["eval", "--model", str(tiny_model_file), "--data", str(spec), "--data-root", str(root),
                 "--workers", "0", "--show-dir", str(shows)]) == 0  # fmt: skip
    assert sorted(p.name for p in shows.iterdir()) == ["s0.jpg", "s1.jpg"]
    picture = cv2.imread(str(shows / "s0.jpg"))[:, :, ::-1].astype(int)
    truth = PALETTE[_scene(64, 96)].astype(int)
    assert np.abs(picture[:, 192:288] - truth).mean() < 4  # the third tile is the ground truth (JPEG)
    assert main(["eval", "--model", str(tiny_model_file), "--data", str(spec), "--data-root", str(root),
                 "--show-dir", str(root / "shows")]) == 2  # fmt: skip
    assert "overlaps the dataset" in capsys.readouterr().err


def test_a_legend_that_would_hide_a_small_image_is_left_out():
    label = _scene(40, 60)
    image = synthetic_photo(40, 60, seed=4)
    np.testing.assert_array_equal(
        overlay(image, label, PALETTE, 0.5, NAMES, legend=True), overlay(image, label, PALETTE)
    )
    assert panel(image, label, PALETTE, NAMES).shape[1] > 2 * 60  # a panel has room for it


def test_a_picture_too_large_for_a_jpeg_is_skipped_and_reported(tmp_path, tiny_model_file, capsys, monkeypatch):
    from lrformer.image import io

    monkeypatch.setattr(io, "JPEG_MAX_SIDE", 150)  # 96x128 photos: the overlay fits, the panel does not
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), synthetic_photo(96, 128, seed=6))
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(tiny_model_file), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
               "--out", str(out), "--panel", "--workers", "0"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 1 and "segmented 2 image(s)" in printed and "2 failed" in printed
    assert f"{out / 'a_panel.jpg'}: a " in printed and "does not fit in a JPEG (at most 150 pixels a side)" in printed
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_overlay.jpg", "b.png", "b_overlay.jpg", "manifest.jsonl"]


def test_panel_blacks_out_any_ignore_index():
    label = _scene(20, 30)
    truth = label.astype(np.int64)
    truth[:4] = 3  # a class of the palette used as the ignore index
    picture = panel(synthetic_photo(20, 30), label, PALETTE, NAMES, truth, ignore_index=3)
    assert (picture[:4, 60:90] == 0).all() and (picture[4:10, 60:90] == PALETTE[0][::-1]).all()
