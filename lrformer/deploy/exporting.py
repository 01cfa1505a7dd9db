"""``lrformer export`` as functions: a model to an ONNX file or an OpenVINO IR, float32 or int8,
carrying its description, then checked against PyTorch.

Every file written carries ``metadata.encode(description, export entry)``
(:mod:`lrformer.deploy.metadata`): the model description a checkpoint carries
(:func:`lrformer.inference.network.module_description`) and what the graph takes and computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from ..image.pipeline import InferenceConfig
from ..inference.network import TorchNetwork, module_description
from ..inference.predictor import model_defaults
from ..models.backbone import MIN_INPUT_SIZE
from . import metadata
from .agreement import Agreement, compare
from .calibration import CalibrationImages, network_input
from .onnx import compare_onnx, dynamic_check_shapes, export_onnx
from .quantize import Int8Settings

FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
"""Export formats and the suffix of their (first) file."""


@dataclass(frozen=True)
class ExportSpec:
    """What to export: ``format`` (``onnx`` or ``openvino``), ``shape`` ``(B, 3, H, W)`` (the graph's
    size, or with ``dynamic`` the example traced, H and W then symbolic), the ONNX ``opset``."""

    format: str
    shape: tuple[int, int, int, int]
    dynamic: bool = False
    opset: int = 18

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of a fixed-size graph, ``None`` for a dynamic one."""
        return None if self.dynamic else (self.shape[2], self.shape[3])

    def check_shapes(self) -> list[tuple[int, int, int, int]]:
        """The shapes the export is compared with PyTorch at: its own, and three others when dynamic."""
        return dynamic_check_shapes(self.shape) if self.dynamic else [self.shape]


def format_of(out: str | Path, format: str | None) -> str:
    """The format of ``--out`` (``--format``, else the suffix: ``.xml`` → openvino, else onnx),
    refusing a suffix that is not the format's."""
    suffix = Path(out).suffix.lower()
    format = format or ("openvino" if suffix == ".xml" else "onnx")
    if suffix != FORMATS[format]:
        raise ConfigError(
            f"--out {out}: an {format} export is written to a {FORMATS[format]} file"
            + (" (its weights go to the .bin beside it)" if format == "openvino" else "")
            + f"; e.g. --out {Path(out).with_suffix(FORMATS[format]).name}"
        )
    return format


def description_text(
    model: nn.Module, spec: ExportSpec, precision: str = "fp32", quantization: dict[str, Any] | None = None
) -> str:
    """The JSON description stored in the exported file (:func:`lrformer.deploy.metadata.encode`)."""
    entry = metadata.export_entry(spec.format, spec.input_size, MIN_INPUT_SIZE, spec.shape[0], precision, quantization)
    return metadata.encode(module_description(model), entry)


def export_float(model: nn.Module, out: str | Path, spec: ExportSpec) -> None:
    """Write ``model`` in float32 to ``out`` (ONNX, or an OpenVINO IR: ``out`` and its ``.bin``)."""
    text = description_text(model, spec)
    if spec.format == "onnx":
        export_onnx(model, spec.shape, out, spec.opset, spec.dynamic, text)
        return
    from .openvino import convert, save_ir

    save_ir(convert(model, spec.shape, spec.opset, spec.dynamic), out, text)


def export_int8(
    model: nn.Module,
    out: str | Path,
    spec: ExportSpec,
    images: CalibrationImages,
    config: InferenceConfig,
    settings: Int8Settings = Int8Settings(),
) -> None:
    """Write ``model`` quantised to int8 (NNCF, :mod:`lrformer.deploy.quantize`) as an OpenVINO IR,
    calibrated on ``images.calibration`` prepared by the test pipeline of ``config``."""
    from .openvino import convert, save_ir
    from .quantize import quantize_openvino

    if spec.format != "openvino":
        raise ConfigError("--int8 writes an OpenVINO IR (int8 ran no faster than fp32 on ONNX Runtime): add "
                          "--format openvino and an --out ending in .xml")  # fmt: skip
    shape = None if spec.dynamic else spec.shape
    float_model = convert(model, spec.shape, spec.opset, spec.dynamic)
    quantised = quantize_openvino(
        float_model, images.calibration, lambda image: network_input(image, config, shape),
        len(images.calibration), settings,
    )  # fmt: skip
    save_ir(quantised, out, description_text(model, spec, "int8", settings.entry(len(images.calibration))))


def pipeline_config(model: nn.Module, images: CalibrationImages | None) -> InferenceConfig:
    """The test pipeline calibration and the held-out check use: the model's, on top of a
    dataset's settings when the images come from one (as ``lrformer eval`` would run it)."""
    return model_defaults(model, images.test if images is not None else None)


def compare_export(model: nn.Module, out: str | Path, spec: ExportSpec) -> Callable[[tuple], tuple[float, float]]:
    """``check(shape)`` → ``(max |export − PyTorch|, max |PyTorch|)`` on a random input (the
    exported file on the CPU in float32, PyTorch on the model's device)."""
    if spec.format == "onnx":
        return lambda shape: compare_onnx(model, out, shape)
    from .openvino import compare_openvino, read_model

    ov_model = read_model(out)
    return lambda shape: compare_openvino(model, ov_model, shape)


def held_out_agreement(
    model: nn.Module, out: str | Path, spec: ExportSpec, images: CalibrationImages, config: InferenceConfig
) -> Agreement:
    """The int8 export ``out`` against ``model`` on ``images.held_out`` (:func:`lrformer.deploy.agreement.compare`)."""
    from .runtimes import load_network

    quantised = load_network(out, "cpu")
    return compare(TorchNetwork(model, fast=False), quantised, images, config, spec.input_size)
