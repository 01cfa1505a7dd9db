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
    """A stand-in for ``numpy.random.Generator`` returning scripted draws, held to numpy's contract.

    Each draw is checked against the bounds it is asked for: ``integers(low, high)`` in ``[low, high)``,
    ``integers(n)`` in ``[0, n)`` (``endpoint=True``: ``high`` included), ``uniform(low, high)`` in
    ``[low, high)``, ``random()`` in ``[0, 1)``. Every call is recorded in ``calls`` as
    ``("integers", low, high)`` (``high`` exclusive), ``("uniform", low, high)`` or ``("random",)``.
    A draw with nothing scripted left fails, and :meth:`finished` fails while scripted draws are unused.
    Failures use ``pytest.fail`` (a ``BaseException``): code under test cannot swallow them.
    """

    def __init__(self, integers=(), floats=()):
        self._integers, self._floats = list(integers), list(floats)
        self.calls: list[tuple] = []

    def _next(self, queue: list, call: tuple):
        self.calls.append(call)
        if not queue:
            pytest.fail(f"unscripted draw {call} (calls so far: {self.calls[:-1]})")
        return queue.pop(0)

    def integers(self, low, high=None, size=None, endpoint=False):
        if size is not None:
            pytest.fail(f"only scalar draws are scripted, got size={size!r}")
        low, high = (0, low) if high is None else (low, high)
        high = high + 1 if endpoint else high
        value = self._next(self._integers, ("integers", low, high))
        if not (isinstance(value, int) and low <= value < high):
            pytest.fail(f"scripted {value!r} outside integers' [{low}, {high})")
        return value

    def random(self, size=None):
        if size is not None:
            pytest.fail(f"only scalar draws are scripted, got size={size!r}")
        value = self._next(self._floats, ("random",))
        if not 0.0 <= value < 1.0:
            pytest.fail(f"scripted {value!r} outside random()'s [0, 1)")
        return value

    def uniform(self, low=0.0, high=1.0, size=None):
        if size is not None:
            pytest.fail(f"only scalar draws are scripted, got size={size!r}")
        value = self._next(self._floats, ("uniform", low, high))
        if not low <= value < high:
            pytest.fail(f"scripted {value!r} outside uniform's [{low}, {high})")
        return value

    def finished(self) -> list[tuple]:
        """The recorded calls, once every scripted draw has been used."""
        if self._integers or self._floats:
            pytest.fail(f"scripted draws left unused: integers {self._integers}, floats {self._floats}")
        return self.calls


FLAG = ("integers", 0, 2)  # a step's on/off coin: numpy integers(2), i.e. 0 or 1
BRIGHTNESS = ("uniform", -32, 32)  # mmseg brightness_delta=32: uniform(-32, 32)
FACTOR = ("uniform", 0.5, 1.5)  # mmseg contrast_range = saturation_range = (0.5, 1.5)
HUE = ("integers", -18, 18)  # mmseg hue_delta=18: numpy randint(-18, 18), i.e. -18..17


def test_scripted_rng_holds_the_code_to_numpy_bounds():
    rng = ScriptedRng(integers=[0, 4, -18], floats=[0.0, 1.25])
    assert rng.integers(5) == 0 and rng.integers(2, 5) == 4 and rng.integers(-18, 18) == -18
    assert rng.random() == 0.0 and rng.uniform(0.5, 1.5) == 1.25
    assert rng.finished() == [("integers", 0, 5), ("integers", 2, 5), HUE, ("random",), FACTOR]
    fail = pytest.fail.Exception
    with pytest.raises(fail, match=r"outside integers' \[0, 2\)"):
        ScriptedRng(integers=[2]).integers(2)  # high is exclusive
    with pytest.raises(fail, match=r"outside integers' \[-18, 18\)"):
        ScriptedRng(integers=[18]).integers(-18, 18)
    assert ScriptedRng(integers=[18]).integers(-18, 18, endpoint=True) == 18
    with pytest.raises(fail, match=r"outside uniform's \[-32, 32\)"):
        ScriptedRng(floats=[40.0]).uniform(-32, 32)
    with pytest.raises(fail, match=r"outside random\(\)'s \[0, 1\)"):
        ScriptedRng(floats=[1.0]).random()
    with pytest.raises(fail, match="unscripted draw"):
        ScriptedRng(floats=[0.5]).integers(2)
    leftover = ScriptedRng(integers=[0, 1])
    leftover.integers(2)
    with pytest.raises(fail, match=r"left unused: integers \[1\]"):
        leftover.finished()


def test_random_resize_keeps_ratio_within_the_scaled_bound():
    image, label = np.zeros((100, 200, 3), np.uint8), np.zeros((100, 200), np.uint8)
    rng = ScriptedRng(floats=[0.5])
    # r = 0.5 * (2.0 - 0.5) + 0.5 = 1.25 → bound (2560, 640) → f = min(2560/200, 640/100) = 6.4
    out, lab = random_resize(image, label, AugmentConfig(), rng)
    assert out.shape == (640, 1280, 3) and lab.shape == (640, 1280)
    assert rng.finished() == [("random",)]  # mmcv RandomResize: random_sample() · (high − low) + low


@pytest.mark.parametrize(
    "draw, output",
    [
        # ratio_range (1, 3): r = 0.0 · (3 − 1) + 1 = 1 → bound (300, 100) → f = min(300/200, 100/100) = 1
        (0.0, (100, 200)),
        # r = 0.25 · 2 + 1 = 1.5 → bound (450, 150) → f = min(450/200, 150/100) = 1.5 → (150, 300)
        (0.25, (150, 300)),
        # r = 0.75 · 2 + 1 = 2.5 → bound (750, 250) → f = min(750/200, 250/100) = 2.5 → (250, 500)
        (0.75, (250, 500)),
    ],
)
def test_random_resize_maps_the_draw_onto_ratio_range(draw, output):
    image, label = np.zeros((100, 200, 3), np.uint8), np.zeros((100, 200), np.uint8)
    rng = ScriptedRng(floats=[draw])
    out, lab = random_resize(image, label, AugmentConfig(RandomResize((300, 100), (1.0, 3.0))), rng)
    assert out.shape[:2] == lab.shape == output
    assert rng.finished() == [("random",)]


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
    rng = ScriptedRng(integers=[1])  # draws scales[1]
    out, lab = random_resize(image, label, AugmentConfig(resize), rng)
    assert out.shape[:2] == lab.shape == output
    assert rng.finished() == [("integers", 0, 3)]  # mmcv RandomChoiceResize: randint(len(scales))


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


def test_random_crop_draws_offsets_within_the_margins():
    # H × W = 100 × 80, crop 40 × 30: y from [0, 100 − 40 + 1) = [0, 61), x from [0, 80 − 30 + 1) = [0, 51)
    image = np.arange(100 * 80 * 3, dtype=np.int32).reshape(100, 80, 3)
    label = (np.arange(100 * 80).reshape(100, 80) % 7).astype(np.uint8)  # seven classes: the first draw is kept
    rng = ScriptedRng(integers=[60, 50])  # the largest offsets allowed
    img, lab = random_crop(image, label, AugmentConfig(crop_size=(40, 30)), rng)
    assert rng.finished() == [("integers", 0, 61), ("integers", 0, 51)]
    assert img.shape == (40, 30, 3) and (img == image[60:, 50:]).all() and (lab == label[60:, 50:]).all()
    # smaller than the crop: margins max(20 − 32, 0) = max(30 − 48, 0) = 0, so offsets from [0, 1)
    rng = ScriptedRng(integers=[0, 0])
    img, lab = random_crop(image[:20, :30], label[:20, :30], AugmentConfig(crop_size=(32, 48)), rng)
    assert rng.finished() == [("integers", 0, 1), ("integers", 0, 1)]
    assert img.shape == (20, 30, 3) and lab.shape == (20, 30)


def test_random_crop_redraws_until_no_class_dominates():
    label = np.zeros((100, 100), np.uint8)
    label[:, 50:] = 1  # left half class 0, right half class 1
    image = np.zeros((100, 100, 3), np.uint8)
    cfg = AugmentConfig(crop_size=(40, 40))
    # first offset (0, 0): only class 0 → redraw; second (10, 30): columns 30..70, half and half → keep
    rng = ScriptedRng(integers=[0, 0, 10, 30])
    _, crop = random_crop(image, label, cfg, rng)
    assert (crop == 0).mean() == 0.5
    assert rng.finished() == [("integers", 0, 61)] * 4  # 100 − 40 + 1 = 61 offsets each way
    # never acceptable: the eleventh draw is used anyway
    uniform = np.zeros((100, 100), np.uint8)
    rng = ScriptedRng(integers=[5, 5] * 10 + [7, 9])
    img, crop = random_crop(np.arange(30000, dtype=np.uint8).reshape(100, 100, 3), uniform, cfg, rng)
    assert crop.shape == (40, 40) and img[0, 0, 0] == np.arange(30000, dtype=np.uint8).reshape(100, 100, 3)[7, 9, 0]
    assert rng.finished() == [("integers", 0, 61)] * 22  # the first draw and ten redraws, y and x each


def test_photometric_steps_and_clipping():
    image = np.full((4, 4, 3), 250, np.uint8)
    # brightness on (+20 → clipped at 255), mode 0, saturation off, hue off, contrast (last) off
    rng = ScriptedRng(integers=[1, 0, 0, 0, 0], floats=[20.0])
    out = photometric_distortion(image, rng)
    assert out.dtype == np.uint8 and (out == 255).all()
    assert rng.finished() == [FLAG, BRIGHTNESS, FLAG, FLAG, FLAG, FLAG]
    # everything off (mode 1: the contrast coin comes right after the mode): unchanged
    rng = ScriptedRng(integers=[0, 1, 0, 0, 0])
    assert (photometric_distortion(image, rng) == image).all()
    assert rng.finished() == [FLAG, FLAG, FLAG, FLAG, FLAG]


# Photometric distortion by hand, mmseg 1.x PhotoMetricDistortion: convert(img, alpha, beta) =
# uint8(clip(float32(img)·alpha + beta, 0, 255)), truncating. Factors and deltas are dyadic (exact in float32).
TWO_PIXELS = np.array([[[10, 100, 250], [0, 128, 255]]], np.uint8)  # 1 × 2, BGR


@pytest.mark.parametrize(
    "beta, expected",
    [
        # +20.75: 10 → 30.75 → 30 (truncated, not rounded), 100 → 120.75 → 120, 250 → 270.75 → 255 (clipped);
        # 0 → 20.75 → 20, 128 → 148.75 → 148, 255 → 275.75 → 255
        (20.75, [[30, 120, 255], [20, 148, 255]]),
        # −12.25: 10 → −2.25 → 0 (clipped), 100 → 87.75 → 87, 250 → 237.75 → 237;
        # 0 → −12.25 → 0, 128 → 115.75 → 115, 255 → 242.75 → 242
        (-12.25, [[0, 87, 237], [0, 115, 242]]),
    ],
)
def test_photometric_brightness_by_hand(beta, expected):
    rng = ScriptedRng(integers=[1, 0, 0, 0, 0], floats=[beta])  # brightness on; mode 0; saturation, hue, contrast off
    out = photometric_distortion(TWO_PIXELS.copy(), rng)
    assert out.dtype == np.uint8 and out[0].tolist() == expected
    assert rng.finished() == [FLAG, BRIGHTNESS, FLAG, FLAG, FLAG, FLAG]


@pytest.mark.parametrize("mode", [1, 0])  # mmseg: mode 1 → contrast right after brightness, mode 0 → contrast last
@pytest.mark.parametrize(
    "alpha, expected",
    [
        # ×1.375: 10 → 13.75 → 13, 100 → 137.5 → 137, 250 → 343.75 → 255; 0 → 0, 128 → 176, 255 → 350.625 → 255
        (1.375, [[13, 137, 255], [0, 176, 255]]),
        # ×0.625: 10 → 6.25 → 6, 100 → 62.5 → 62, 250 → 156.25 → 156; 0 → 0, 128 → 80, 255 → 159.375 → 159
        (0.625, [[6, 62, 156], [0, 80, 159]]),
    ],
)
def test_photometric_contrast_by_hand(mode, alpha, expected):
    if mode == 1:  # brightness off, mode 1, contrast on, saturation off, hue off
        integers, calls = [0, 1, 1, 0, 0], [FLAG, FLAG, FLAG, FACTOR, FLAG, FLAG]
    else:  # brightness off, mode 0, saturation off, hue off, contrast on
        integers, calls = [0, 0, 0, 0, 1], [FLAG, FLAG, FLAG, FLAG, FLAG, FACTOR]
    rng = ScriptedRng(integers=integers, floats=[alpha])
    assert photometric_distortion(TWO_PIXELS.copy(), rng)[0].tolist() == expected
    assert rng.finished() == calls


# OpenCV 8-bit HSV: V = max, S = round(255·(max − min)/max), H = round(hue° / 2). Back to BGR, with
# m = V·(1 − S/255): for H° in [0, 60) R = V, G = m + (V − m)·H°/60, B = m; for H° in [300, 360) R = V,
# G = m, B = m + (V − m)·(360 − H°)/60; each rounded to the nearest integer.
# BGR (50, 100, 200): V = 200, S = 255·150/200 = 191.25 → 191, H = 60·(100 − 50)/150 / 2 = 10.
# BGR (0, 0, 200): V = 200, S = 255, H = 0.
HUED = np.array([[[50, 100, 200], [0, 0, 200]]], np.uint8)


def test_the_hand_hsv_values_are_opencv_s():
    import cv2

    assert cv2.cvtColor(HUED, cv2.COLOR_BGR2HSV)[0].tolist() == [[10, 191, 200], [0, 255, 200]]


@pytest.mark.parametrize(
    "alpha, expected",
    [
        # S ×1.25: 191 → 238.75 → 238, 255 → 318.75 → 255 (clipped). (10, 238, 200): m = 200·17/255 = 13.33 → 13,
        # G = 13.33 + 186.67·20/60 = 75.56 → 76; (0, 255, 200) stays (0, 0, 200)
        (1.25, [[13, 76, 200], [0, 0, 200]]),
        # S ×0.625: 191 → 119.375 → 119, 255 → 159.375 → 159. (10, 119, 200): m = 200·136/255 = 106.67 → 107,
        # G = 106.67 + 93.33·20/60 = 137.78 → 138; (0, 159, 200): m = 200·96/255 = 75.29 → 75 = G = B
        (0.625, [[107, 138, 200], [75, 75, 200]]),
    ],
)
def test_photometric_saturation_by_hand(alpha, expected):
    # brightness off, mode 0, saturation on, hue off, contrast off
    rng = ScriptedRng(integers=[0, 0, 1, 0, 0], floats=[alpha])
    assert photometric_distortion(HUED.copy(), rng)[0].tolist() == expected
    assert rng.finished() == [FLAG, FLAG, FLAG, FACTOR, FLAG, FLAG]


@pytest.mark.parametrize(
    "delta, expected",
    [
        # H (10 − 10) % 180 = 0: m = 200·64/255 = 50.2 → 50 = G = B; (0 − 10) % 180 = 170 (340°): m = 0 = G,
        # B = 200·20/60 = 66.67 → 67
        (-10, [[50, 50, 200], [67, 0, 200]]),
        # 10 + 17 = 27 (54°): G = 50.2 + 149.8·54/60 = 185.02 → 185; 0 + 17 = 17 (34°): G = 200·34/60 = 113.33 → 113
        (17, [[50, 185, 200], [0, 113, 200]]),
        # (10 − 18) % 180 = 172 (344°): B = 50.2 + 149.8·16/60 = 90.15 → 90, G = 50; 162 (324°): B = 200·36/60 = 120
        (-18, [[90, 50, 200], [120, 0, 200]]),
    ],
)
def test_photometric_hue_by_hand(delta, expected):
    rng = ScriptedRng(integers=[0, 0, 0, 1, delta, 0])  # brightness off, mode 0, saturation off, hue on, contrast off
    assert photometric_distortion(HUED.copy(), rng)[0].tolist() == expected
    assert rng.finished() == [FLAG, FLAG, FLAG, FLAG, HUE, FLAG]


@pytest.mark.parametrize(
    "integers, floats, calls, expected",
    [
        # mode 1, contrast first: coins brightness 0, mode 1, contrast 1 (×1.375), saturation 1 (×0.625), hue 0.
        # ×1.375 → (68.75, 137.5, 275) → (68, 137, 255) = HSV (11, 187, 255) [S = 255·187/255,
        # H = 60·69/187 / 2 = 11.07]; S ×0.625 → 116.875 → 116; back (22°): m = 255·139/255 = 139,
        # G = 139 + 116·22/60 = 181.53 → 182
        ([0, 1, 1, 1, 0], [1.375, 0.625], [FLAG, FLAG, FLAG, FACTOR, FLAG, FACTOR, FLAG], [139, 182, 255]),
        # mode 0, contrast last: coins brightness 0, mode 0, saturation 1 (×0.625), hue 0, contrast 1 (×1.375).
        # Saturation → (107, 138, 200) (as above), then ×1.375 → (147.125, 189.75, 275) → (147, 189, 255)
        ([0, 0, 1, 0, 1], [0.625, 1.375], [FLAG, FLAG, FLAG, FACTOR, FLAG, FLAG, FACTOR], [147, 189, 255]),
    ],
    ids=["contrast-first", "contrast-last"],
)
def test_photometric_contrast_mode_orders_the_steps(integers, floats, calls, expected):
    rng = ScriptedRng(integers=integers, floats=floats)
    assert photometric_distortion(HUED[:, :1].copy(), rng)[0].tolist() == [expected]
    assert rng.finished() == calls


def test_photometric_every_step_on_by_hand():
    # BGR (50, 100, 200); brightness +20.75 → (70.75, 120.75, 220.75) → (70, 120, 220);
    # contrast (mode 1, first) ×0.625 → (43.75, 75, 137.5) → (43, 75, 137);
    # saturation: HSV (10, 175, 137) [S = 255·94/137 = 174.96 → 175, H = 60·32/94 / 2 = 10.2 → 10], S ×1.25 = 218.75
    # → 218, back: m = 137·37/255 = 19.88 → 20, G = 19.88 + 117.12·20/60 = 58.92 → 59 → (20, 59, 137);
    # hue −10: HSV (10, 218, 137) [S = 255·117/137 = 217.77 → 218, H = 60·39/117 / 2 = 10] → H 0 → G = B = m → 20
    rng = ScriptedRng(integers=[1, 1, 1, 1, 1, -10], floats=[20.75, 0.625, 1.25])
    assert photometric_distortion(HUED[:, :1].copy(), rng)[0].tolist() == [[20, 20, 137]]
    assert rng.finished() == [FLAG, BRIGHTNESS, FLAG, FLAG, FACTOR, FLAG, FACTOR, FLAG, HUE]


def test_augment_draws_in_pipeline_order_with_the_resized_bounds():
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :15], image[:, 15:] = (10, 100, 250), (200, 50, 0)  # BGR, left and right half
    label = np.zeros((20, 30), np.uint8)
    label[:, 15:] = 1
    cfg = AugmentConfig(RandomResize((30, 20), (2.0, 2.0)), crop_size=(10, 10))
    # resize: r = 2 → bound (60, 40) → f = min(60/30, 40/20) = 2 → 40 × 60, class 1 from column 30;
    # crop offsets y from [0, 40 − 10 + 1) = [0, 31), x from [0, 60 − 10 + 1) = [0, 51): (5, 25) holds
    # columns 25..34, half class 0, half class 1 → kept; flip 0.25 < 0.5 → flipped; photometric: all five coins 0
    rng = ScriptedRng(integers=[5, 25, 0, 0, 0, 0, 0], floats=[0.5, 0.25])
    x, y = augment(image, label, cfg, rng)
    assert rng.finished() == [("random",), ("integers", 0, 31), ("integers", 0, 51), ("random",)] + [FLAG] * 5
    assert x.shape == (3, 10, 10) and y.tolist() == [[1] * 5 + [0] * 5] * 10
    # column 0 is resized column 34 (source 34.5/2 − 0.5 = 16.75: right half), column 9 is 25 (12.25: left half);
    # RGB, (x − mean) / std with mmseg's ImageNet mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375)
    right = [(0 - 123.675) / 58.395, (50 - 116.28) / 57.12, (200 - 103.53) / 57.375]
    left = [(250 - 123.675) / 58.395, (100 - 116.28) / 57.12, (10 - 103.53) / 57.375]
    assert x[:, :, 0].tolist() == [[pytest.approx(v, rel=1e-6)] * 10 for v in right]
    assert x[:, :, 9].tolist() == [[pytest.approx(v, rel=1e-6)] * 10 for v in left]


def test_small_crops_are_padded_with_zero_and_ignore():
    image = np.full((20, 30, 3), 128, np.uint8)
    label = np.ones((20, 30), np.uint8)
    cfg = AugmentConfig(RandomResize((30, 20), (1.0, 1.0)), crop_size=(32, 48), photometric=False, flip_prob=0.0)
    x, y = augment(image, label, cfg, np.random.default_rng(0))
    assert x.shape == (3, 32, 48) and y.shape == (32, 48)
    assert (x[:, 20:] == 0).all() and (x[:, :, 30:] == 0).all()
    assert (y[20:] == 255).all() and (y[:20, :30] == 1).all()
