"""Exported models as first-class models: ONNX and OpenVINO exports (fp32 and int8) that carry
their own description, and the runtimes that run them behind :class:`lrformer.Predictor`.

Example::

    from lrformer import Predictor
    from lrformer.deploy import load_network

    predictor = Predictor(load_network("lrformer_t_int8.xml", threads=2))
    label = predictor("photo.jpg")   # (H, W) label map, the model's own test pipeline

Names load on first use (nothing heavy is imported with the package).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import attach

_EXPORTS = {
    "ExportedNetwork": ".runtimes",
    "OnnxRuntimeNetwork": ".runtimes",
    "OpenVINONetwork": ".runtimes",
    "is_exported": ".runtimes",
    "load_network": ".runtimes",
}

__all__ = ["ExportedNetwork", "OnnxRuntimeNetwork", "OpenVINONetwork", "is_exported", "load_network"]

__getattr__, __dir__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .runtimes import ExportedNetwork, OnnxRuntimeNetwork, OpenVINONetwork, is_exported, load_network
