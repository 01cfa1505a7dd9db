"""``lrformer predict`` end to end: folders, globs, a corrupt file, palette PNGs and overlays."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from lrformer import create_model
from lrformer.cli.main import main

from .helpers import confident, reference_scores, synthetic_photo


def test_predict_folder_with_a_corrupt_file(tmp_path, tiny_model_file, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    cv2.imwrite(str(photos / "a.jpg"), synthetic_photo(90, 140, seed=1))
    cv2.imwrite(str(photos / "sub" / "b.png"), cv2.cvtColor(synthetic_photo(70, 50, seed=2), cv2.COLOR_BGR2GRAY))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(tiny_model_file), str(photos),
               "--out", str(out), "--workers", "1", "--batch-size", "2", "--palette", "cityscapes"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 1
    assert "broken.jpg: not an image whose size can be read from its header (corrupt" in captured.out
    assert "segmented 2 image(s)" in captured.out and "1 failed" in captured.out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "a.png",
        "a_overlay.jpg",
        "manifest.jsonl",
        "sub",
        "sub/b.png",
        "sub/b_overlay.jpg",
    ]
    label = Image.open(out / "a.png")
    assert label.mode == "P" and label.size == (140, 90)
    assert label.getpalette()[:6] == [128, 64, 128, 244, 35, 232]  # Cityscapes road, sidewalk
    expected = reference_scores(create_model(tiny_model_file), photos / "a.jpg")  # the official pipeline
    mask = confident(expected).numpy()
    assert mask.mean() > 0.9
    np.testing.assert_array_equal(np.asarray(label)[mask], expected.argmax(0).numpy()[mask])
    assert cv2.imread(str(out / "sub" / "b_overlay.jpg")).shape == (70, 50, 3)


def test_predict_glob_and_missing_input(tmp_path, tiny_model_file, capsys):
    cv2.imwrite(str(tmp_path / "x1.png"), synthetic_photo(64, 64, seed=4))
    cv2.imwrite(str(tmp_path / "x2.png"), synthetic_photo(64, 96, seed=5))
    rc = main(["predict", "--model", str(tiny_model_file),
               str(tmp_path / "x*.png"), str(tmp_path / "nothing_here"), "--out", str(tmp_path / "o"),
               "--workers", "0", "--no-overlay", "--tta", "--tta-ratios", "0.5", "1.0"])  # fmt: skip
    assert rc == 1
    assert "nothing_here: no such file or folder" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["manifest.jsonl", "x1.png", "x2.png"]
