"""ONNX export (torch.export-based exporter) and its onnxruntime check."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .utils import atomic_path, require_extra


def export_onnx(model: nn.Module, shape: tuple[int, int, int, int], path: str | Path, opset: int = 18) -> None:
    """Export ``model`` for a fixed ``(B, 3, H, W)`` input to ``path`` (written atomically).

    The LRSA pooled-grid sizes depend on the input size, so the graph is specialised to it.
    """
    require_extra("onnx", "export", "ONNX export")
    require_extra("onnxscript", "export", "ONNX export")
    model = model.eval()
    example = torch.zeros(shape, dtype=next(model.parameters()).dtype)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, input_names=["image"], output_names=["scores"], opset_version=opset
        )
        program.save(str(tmp))


def check_onnx(model: nn.Module, path: str | Path, shape: tuple[int, int, int, int], seed: int = 0) -> float:
    """Max absolute difference between onnxruntime and PyTorch on a random input of ``shape``."""
    onnxruntime = require_extra("onnxruntime", "export", "checking the ONNX export")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"image": x.numpy()})[0]
    with torch.inference_mode():
        reference = model.eval()(x.to(next(model.parameters()).dtype)).float().numpy()
    return float(abs(ours - reference).max())


def check_opset(opset: int) -> None:
    """Refuse an ONNX opset outside what this PyTorch can export."""
    from torch.onnx import _constants

    from .errors import ConfigError

    low, high = _constants.ONNX_MIN_OPSET, _constants.ONNX_MAX_OPSET
    if not low <= opset <= high:
        raise ConfigError(f"--opset {opset} is not one this PyTorch exports ({low} to {high}); e.g. --opset 18")
