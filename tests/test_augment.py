"""Train-time augmentation against hand-computed cases (mmcv / mmseg semantics)."""

from __future__ import annotations

import numpy as np
import pytest

from lrformer.data.augment import (
    AugmentConfig,
    RandomChoiceResize,
    RandomResize,
    augment,
    build_resize,
    photometric_distortion,
    random_crop,
    random_resize,
    shortest_edge_size,
)


class ScriptedRng:
    """A stand-in for numpy's Generator returning scripted draws."""

    def __init__(self, integers=(), floats=()):
        self._integers, self._floats = list(integers), list(floats)

    def integers(self, low, high=None):
        return self._integers.pop(0)

    def random(self):
        return self._floats.pop(0)

    def uniform(self, low, high):
        return self._floats.pop(0)


def test_random_resize_keeps_ratio_within_the_scaled_bound():
    image, label = np.zeros((100, 200, 3), np.uint8), np.zeros((100, 200), np.uint8)
    # r = 0.5 * (2.0 - 0.5) + 0.5 = 1.25 → bound (2560, 640) → f = min(2560/200, 640/100) = 6.4
    out, lab = random_resize(image, label, AugmentConfig(), ScriptedRng(floats=[0.5]))
    assert out.shape == (640, 1280, 3) and lab.shape == (640, 1280)


@pytest.mark.parametrize(
    "height, width, short, target, output",
    [
        # landscape: short side 300 → 512, long 400·512/300 = 682.67 → 683; refit to (683, 512):
        # f = min(683/400, 512/300) = 1.70667 → (int(512.5), int(683.17)) = (512, 683)
        (300, 400, 512, (512, 683), (512, 683)),
        # portrait: 480 → 256, 640·256/480 = 341.33 → 341; f = min(341/640, 256/480) = 0.532813
        # → (int(341.5), int(256.25)) = (341, 256)
        (640, 480, 256, (341, 256), (341, 256)),
        # long side capped: 101 → 870 makes 2294 → 19760, over 2048: both ×2048/19760 → (90.17, 2048)
        # → (90, 2048); refit: f = min(2048/2294, 90/101) = 0.891089 → (int(90.5), int(2044.66)) = (90, 2044)
        (101, 2294, 870, (90, 2048), (90, 2044)),
        # square: 1000 → 1024 both ways
        (1000, 1000, 1024, (1024, 1024), (1024, 1024)),
    ],
)
def test_shortest_edge_resize_by_hand(height, width, short, target, output):
    assert shortest_edge_size(height, width, short, 2048) == target
    resize = RandomChoiceResize((100, short, 200), max_size=2048)
    image, label = np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.uint8)
    out, lab = random_resize(image, label, AugmentConfig(resize), ScriptedRng(integers=[1]))  # draws scales[1]
    assert out.shape[:2] == lab.shape == output


def test_build_resize_from_yaml_settings():
    assert build_resize({"type": "RandomResize", "scale": [2560, 640], "ratio_range": [0.5, 2.0]}) == RandomResize(
        (2560, 640), (0.5, 2.0)
    )
    assert build_resize({"type": "RandomChoiceResize", "scales": [256, 512]}) == RandomChoiceResize((256, 512), 2048)
    with pytest.raises(ValueError, match="type must be one of RandomResize, RandomChoiceResize, got 'Resize'"):
        build_resize({"type": "Resize"})
    with pytest.raises(ValueError, match="not scale, ratio_range .* add `_delete_: true`"):
        build_resize({"type": "RandomChoiceResize", "scales": [256], "scale": [2048, 512], "ratio_range": [0.5, 2]})
    with pytest.raises(ValueError, match="needs scales"):
        build_resize({"type": "RandomChoiceResize", "scales": []})
    with pytest.raises(ValueError, match="0 < low <= high"):
        build_resize({"type": "RandomResize", "ratio_range": [2.0, 0.5]})


def test_random_crop_redraws_until_no_class_dominates():
    label = np.zeros((100, 100), np.uint8)
    label[:, 50:] = 1  # left half class 0, right half class 1
    image = np.zeros((100, 100, 3), np.uint8)
    cfg = AugmentConfig(crop_size=(40, 40))
    # first offset (0, 0): only class 0 → redraw; second (10, 30): columns 30..70, half and half → keep
    _, crop = random_crop(image, label, cfg, ScriptedRng(integers=[0, 0, 10, 30]))
    assert (crop == 0).mean() == 0.5
    # never acceptable: the eleventh draw is used anyway
    uniform = np.zeros((100, 100), np.uint8)
    draws = [5, 5] * 10 + [7, 9]
    img, crop = random_crop(
        np.arange(30000, dtype=np.uint8).reshape(100, 100, 3), uniform, cfg, ScriptedRng(integers=draws)
    )
    assert crop.shape == (40, 40) and img[0, 0, 0] == np.arange(30000, dtype=np.uint8).reshape(100, 100, 3)[7, 9, 0]


def test_photometric_steps_and_clipping():
    image = np.full((4, 4, 3), 250, np.uint8)
    # brightness on (+20 → clipped at 255), mode 0, saturation off, hue off, contrast (last) off
    out = photometric_distortion(image, ScriptedRng(integers=[1, 0, 0, 0, 0], floats=[20.0]))
    assert out.dtype == np.uint8 and (out == 255).all()
    # everything off: unchanged
    assert (photometric_distortion(image, ScriptedRng(integers=[0, 1, 0, 0, 0])) == image).all()


def test_small_crops_are_padded_with_zero_and_ignore():
    image = np.full((20, 30, 3), 128, np.uint8)
    label = np.ones((20, 30), np.uint8)
    cfg = AugmentConfig(RandomResize((30, 20), (1.0, 1.0)), crop_size=(32, 48), photometric=False, flip_prob=0.0)
    x, y = augment(image, label, cfg, np.random.default_rng(0))
    assert x.shape == (3, 32, 48) and y.shape == (32, 48)
    assert (x[:, 20:] == 0).all() and (x[:, :, 30:] == 0).all()
    assert (y[20:] == 255).all() and (y[:20, :30] == 1).all()
