"""``PreparedImages``: images decoded and prepared in loader workers, as ``lrformer predict`` and the
evaluator use them (in order, errors returned or raised, the pixel limit applied), and the evaluator's
numbers with loader workers against a confusion count of the predictor's own label maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import yaml

import lrformer.inference.loading as loading
from lrformer.data.datasets import SegmentationDataset, load_spec
from lrformer.errors import ImageReadError, ImageTooLargeError
from lrformer.evaluation import evaluate
from lrformer.inference import InferenceConfig, Predictor, PreparedImages, prepare

from .helpers import synthetic_photo

SIZES = [(48, 64), (40, 72), (56, 56)]


def _photos(folder, sizes=SIZES):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (height, width) in enumerate(sizes):
        paths.append(folder / f"p{i}.png")
        cv2.imwrite(str(paths[-1]), synthetic_photo(height, width, seed=i))
    return paths


def test_items_come_in_order_from_loader_workers_as_prepare_makes_them(tmp_path):
    paths = _photos(tmp_path)
    config = InferenceConfig(scale=(128, 64), flip=True)
    dataset = PreparedImages(paths, config, keep_image=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list)
    items = [item for batch in loader for item in batch]
    assert [(item.index, item.path, item.error) for item in items] == [(i, p, None) for i, p in enumerate(paths)]
    for item, path, size in zip(items, paths, SIZES):
        assert item.prepared.size == size
        assert np.array_equal(item.prepared.bgr, cv2.imread(str(path)))
        expected = prepare(path, config)
        assert len(item.prepared.views) == len(expected.views) == 2  # the image and its flip
        for view, reference in zip(item.prepared.views, expected.views):
            assert view.flip == reference.flip and torch.equal(view.image, reference.image)
    assert PreparedImages(paths, config)[0].prepared.bgr is None  # not kept unless asked


def test_a_file_that_fails_is_an_error_item_or_raises(tmp_path, monkeypatch):
    good, big, other = _photos(tmp_path)  # 3072, 2880 and 3136 pixels
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    config = InferenceConfig(scale=(128, 64))
    real_prepare = loading.prepare

    def failing_prepare(path, *args, **kwargs):
        if path == other:
            raise RuntimeError("boom")
        return real_prepare(path, *args, **kwargs)

    monkeypatch.setattr(loading, "prepare", failing_prepare)
    dataset = PreparedImages([good, text, big, other], config, max_pixels=3000, return_errors=True)
    items = [dataset[i] for i in range(len(dataset))]
    assert items[1].prepared is None and items[1].error.startswith(f"{text}: ")
    assert items[0].prepared is None  # 64x48 = 3072 pixels: above the limit
    assert items[0].error.startswith(f"{good}: 64x48 is 0 megapixels, above the limit")
    assert items[2].error is None and items[2].prepared.size == (40, 72)  # 2880 pixels: under the limit
    assert items[3].error == f"{other}: RuntimeError: boom"  # a bug in one file does not stop the run
    raising = PreparedImages([good, text, big, other], config, max_pixels=3000)
    with pytest.raises(ImageTooLargeError):
        raising[0]
    with pytest.raises(ImageReadError):
        raising[1]
    with pytest.raises(RuntimeError, match="boom"):
        raising[3]


def test_evaluate_with_loader_workers_counts_what_the_predictor_predicts(tmp_path, tiny_model):
    root, names = tmp_path / "data", ["sky", "tree", "water", "sand", "road"]
    paths = _photos(root / "img" / "val")
    rng = np.random.default_rng(0)
    labels = []
    (root / "ann" / "val").mkdir(parents=True)
    for path, (height, width) in zip(paths, SIZES):
        labels.append(rng.integers(0, 5, (height, width), dtype=np.uint8))
        labels[-1][:4] = 255  # ignored
        cv2.imwrite(str(root / "ann" / "val" / path.name), labels[-1])  # same name and suffix as the image
    spec_file = tmp_path / "set.yaml"
    spec_file.write_text(
        yaml.safe_dump({"img_dir": "img/{split}", "ann_dir": "ann/{split}", "img_suffix": ".png", "classes": names})
    )
    dataset = SegmentationDataset(load_spec(str(spec_file)), root, "val")
    config = InferenceConfig(scale=(128, 64))
    predictions = Predictor(tiny_model, config).predict([str(p) for p in paths])
    intersection, union = np.zeros(5), np.zeros(5)
    for prediction, label in zip(predictions, labels):
        valid = label != 255
        for c in range(5):
            pred, true = (prediction == c) & valid, (label == c) & valid
            intersection[c] += (pred & true).sum()
            union[c] += (pred | true).sum()
    expected = {name: i / u for name, i, u in zip(names, intersection, union) if u}
    shown = {}

    def show(image_bgr, prediction, label, image_path):
        shown[image_path] = (image_bgr.shape, prediction.copy())

    metrics = evaluate(tiny_model, dataset, config, batch_size=2, workers=2, progress=False, show=show)
    assert {k: v for k, v in metrics.IoU.items() if not np.isnan(v)} == pytest.approx(expected)
    assert metrics.mIoU == pytest.approx(np.mean(list(expected.values())))
    assert sorted(shown) == sorted(str(image) for image, _ in dataset.samples)
    for path, prediction in zip(paths, predictions):
        shape, shown_prediction = shown[str(path)]
        assert shape == (*prediction.shape, 3) and np.array_equal(shown_prediction, prediction)
