"""What a request costs the server, known from the image header before anything is decoded, and
the model of how many seconds that cost takes the inference worker.

A request's work (:class:`Work`) has two parts: the network passes over its network inputs (bounded
by the test scale, except for LRFormer+'s TTA, which resizes the original by each ratio) and the
scores resized back to the original size and merged, ``classes × H × W`` values per view, which
grows with the image without bound and dominates for large photos (a 4000×4000 photo and 150
classes: 2.4·10⁹ values). :class:`CostModel` turns work into seconds with two rates measured on the
served model at start-up (:meth:`CostModel.calibrate`) and corrected after every batch
(:meth:`CostModel.observe`), so the server refuses at admission what it could not finish in time.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..image.pipeline import InferenceConfig
from ..inference import PreparedImage, prepare
from ..inference.predictor import view_shapes
from ..inference.sliding import window_starts


@dataclass(frozen=True)
class Work:
    """The work of one request (or of a batch: works add up).

    Attributes:
        pixels: the decoded image's ``H × W``.
        network_pixels: pixels through the network, over every view (and window in slide mode).
        score_values: score values resized to the original size and merged, ``classes × H × W`` per view.
    """

    pixels: int = 0
    network_pixels: int = 0
    score_values: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(
            self.pixels + other.pixels,
            self.network_pixels + other.network_pixels,
            self.score_values + other.score_values,
        )


ATTENTION_WEIGHT = 5e-4
"""Network pixels one attention element costs as much as. LRSA's pooled grid keeps the input's
aspect ratio, so a long thin input (a 20000×1 photo becomes 32×256) attends over many more
elements than a square one of the same pixels and takes far longer: on the demo's LRFormer-T
(2 threads), a 20000×1 image took 1.5 s against 0.2 s for a 640×480 photo; with this weight the
calibrated model predicts 1.0 s and 0.17 s (with 1e-4 it predicted 0.3 s for the thin one)."""


def request_work(
    size: tuple[int, int],
    config: InferenceConfig,
    classes: int,
    attention: Callable[[int, int], int] | None = None,
) -> Work:
    """The :class:`Work` of an image of ``size`` ``(H, W)`` under the test settings ``config``;
    ``attention(h, w)``, the network's attention elements at an input size, adds
    :data:`ATTENTION_WEIGHT` network pixels per element."""

    def units(h: int, w: int) -> int:
        return h * w + (int(ATTENTION_WEIGHT * attention(h, w)) if attention else 0)

    network = 0
    for h, w in view_shapes(size, config):
        if config.mode == "slide":
            network += sum(
                units(y2 - y1, x2 - x1)
                for y1, y2 in window_starts(h, config.crop[0], config.stride[0])
                for x1, x2 in window_starts(w, config.crop[1], config.stride[1])
            )
        else:  # the long-side fallback splits such inputs into windows, which costs no more than this
            network += units(h, w)
    pixels = size[0] * size[1]
    return Work(pixels, network, classes * pixels * len(view_shapes(size, config)))


def predictor_work(size: tuple[int, int], predictor) -> Work:
    """:func:`request_work` of an image of ``size`` for ``predictor`` (its settings, classes and
    network's attention, when it has one)."""
    network = getattr(predictor, "network", None)
    attention = getattr(network, "attention_elements", None)
    return request_work(size, predictor.config, predictor.num_classes, attention)


class CostModel:
    """Seconds of worker time: ``network_s · network_pixels + score_s · score_values``, times a
    correction factor that follows the observed batches (the machine's load changes).

    Args:
        network_s: seconds per network pixel (a prior until :meth:`calibrate`).
        score_s: seconds per score value resized and merged.
    """

    CORRECTION_STEP = 4.0
    """A batch moves the correction factor by at most this factor (one stalled batch is not a trend)."""

    def __init__(self, network_s: float = 2e-6, score_s: float = 2e-8) -> None:
        self.network_s, self.score_s = network_s, score_s
        self.correction = 1.0
        self._lock = threading.Lock()

    def seconds(self, work: Work) -> float:
        """Predicted worker seconds of ``work``."""
        return self.correction * (self.network_s * work.network_pixels + self.score_s * work.score_values)

    def observe(self, work: Work, seconds: float) -> None:
        """A batch of ``work`` took ``seconds``: move the correction factor a third of the way
        (in log scale) towards what it would have needed, by at most :attr:`CORRECTION_STEP`."""
        raw = self.network_s * work.network_pixels + self.score_s * work.score_values
        if raw <= 0 or seconds <= 0:
            return
        with self._lock:
            ratio = min(max(seconds / raw / self.correction, 1 / self.CORRECTION_STEP), self.CORRECTION_STEP)
            self.correction *= math.exp(math.log(ratio) / 3)

    def calibrate(self, predictor, side: int = 512) -> None:
        """Measure both rates on ``predictor`` (a warm-up too: the first requests do not pay for the
        model's first pass): a ``side × side`` image, then one of twice the side, whose network
        input is the same under a bounded test scale while its score values are four times as many."""
        small, large = (self._timed(predictor, n) for n in (side, 2 * side))
        (work_s, time_s), (work_l, time_l) = small, large
        determinant = work_s.network_pixels * work_l.score_values - work_l.network_pixels * work_s.score_values
        if abs(determinant) > 0.1 * work_s.network_pixels * work_l.score_values:
            network_s = (time_s * work_l.score_values - time_l * work_s.score_values) / determinant
            score_s = (work_s.network_pixels * time_l - work_l.network_pixels * time_s) / determinant
        else:  # both grow together (TTA of LRFormer+): keep the prior split of the small image's time
            network_s = score_s = -1.0
        if network_s <= 0 or score_s <= 0:  # noise: split the small image's time as the priors do
            share = self.network_s * work_s.network_pixels
            total = share + self.score_s * work_s.score_values
            network_s = time_s * share / total / work_s.network_pixels
            score_s = time_s * (total - share) / total / work_s.score_values
        with self._lock:
            self.network_s, self.score_s, self.correction = network_s, score_s, 1.0

    @staticmethod
    def _timed(predictor, side: int) -> tuple[Work, float]:
        image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        prepared: PreparedImage = prepare(image, predictor.config, input_format="bgr")
        predictor.predict_prepared([prepared])  # warm-up: the first pass at a shape allocates
        prepared = prepare(image, predictor.config, input_format="bgr")
        start = time.perf_counter()
        predictor.predict_prepared([prepared])
        seconds = time.perf_counter() - start
        return predictor_work((side, side), predictor), seconds
