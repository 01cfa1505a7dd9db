"""Evaluation: mmseg-identical IoU metrics and the dataset evaluation loop."""

from .evaluator import evaluate
from .metrics import IoUMetric, LabelValueError, SegmentationMetrics

__all__ = ["IoUMetric", "LabelValueError", "SegmentationMetrics", "evaluate"]
