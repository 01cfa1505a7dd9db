"""IoUMetric against hand-computed confusion sums (mmseg IoUMetric semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrformer.evaluation import IoUMetric, LabelValueError


def test_hand_computed_sums_and_means():
    metric = IoUMetric(["a", "b", "c", "d"])
    metric.update(np.array([[0, 1], [1, 2]]), np.array([[0, 1], [2, 255]]))
    metric.update(np.array([[3, 0]]), np.array([[0, 0]]))
    # pixels (pred, label): (0,0) (1,1) (1,2) [ignored] (3,0) (0,0)
    # I = [2, 1, 0, 0]; pred area = [2, 2, 0, 1]; label area = [3, 1, 1, 0]; U = [3, 2, 1, 1]
    result = metric.compute()
    assert metric.sums[0].tolist() == [2, 1, 0, 0]
    assert metric.sums[1].tolist() == [3, 2, 1, 1]
    assert result.IoU["a"] == pytest.approx(2 / 3) and result.IoU["b"] == 0.5 and result.IoU["c"] == 0
    assert result.IoU["d"] == 0  # predicted but never labelled: IoU 0 counts, Acc undefined
    assert math.isnan(result.Acc["d"])
    assert result.mIoU == pytest.approx((2 / 3 + 0.5 + 0 + 0) / 4)
    assert result.mAcc == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert result.aAcc == pytest.approx(3 / 5)
    assert result.as_percent()["mIoU"] == round((2 / 3 + 0.5) / 4 * 100, 2)


def test_sums_not_per_image_means():
    metric = IoUMetric(["a", "b"])
    metric.update(np.zeros(10, int), np.zeros(10, int))  # image 1: perfect on a
    metric.update(np.array([0, 1]), np.array([1, 1]))  # image 2: half of b
    # a: I=10, U=11 ; b: I=1, U=2 ; averaged per image it would differ
    assert metric.compute().IoU == {"a": pytest.approx(10 / 11), "b": 0.5}


def test_absent_class_is_excluded_and_ignore_index_is_configurable():
    metric = IoUMetric(["a", "b", "c"], ignore_index=0)
    metric.update(np.array([1, 1, 2]), np.array([0, 1, 1]))
    result = metric.compute()
    assert math.isnan(result.IoU["a"]) and result.mIoU == pytest.approx((0.5 + 0) / 2)


def test_bad_label_value_names_file_and_value():
    metric = IoUMetric(["a", "b"])
    with pytest.raises(LabelValueError, match=r"x\.png: label value 7 is not a class index"):
        metric.update(np.array([0, 1]), np.array([7, 1]), source="x.png")


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"prediction \(2, 3\) and label \(3, 2\) differ"):
        IoUMetric(["a"]).update(np.zeros((2, 3)), np.zeros((3, 2)))
