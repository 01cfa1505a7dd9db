"""ONNX export and its onnxruntime check: the public names of :mod:`lrformer.deploy.onnx`, kept here
for code that imports ``lrformer.export``. OpenVINO and int8 exports: :mod:`lrformer.deploy`."""

from __future__ import annotations

from .deploy.onnx import (
    MIN_DYNAMIC_SIZE,
    check_onnx,
    check_opset,
    compare_onnx,
    dynamic_check_shapes,
    export_onnx,
    read_description,
)

__all__ = [
    "MIN_DYNAMIC_SIZE", "check_onnx", "check_opset", "compare_onnx", "dynamic_check_shapes", "export_onnx",
    "read_description",
]  # fmt: skip
