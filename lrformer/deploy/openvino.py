"""OpenVINO export: the ONNX graph of :mod:`lrformer.deploy.onnx` converted to an OpenVINO IR.

The IR is converted from the ONNX graph, not traced from PyTorch: ``openvino.convert_model`` of
the module fails (its TorchScript tracing cannot round a traced size), and of a ``torch.export``
program it converts the fixed-size graph but not the symbolic one (no rule for ``sym_max``); the
ONNX graph gives both, within 2e-4 of PyTorch at 512×512 scores of magnitude ~30. An IR is two
files, ``model.xml`` (the graph) and ``model.bin`` (the weights, float32: never compressed to
fp16), written together by :func:`save_ir`. The model description (:mod:`lrformer.deploy.metadata`)
is the ``rt_info`` entry ``METADATA_KEY`` of the graph; :func:`read_description` reads it back.

Runs on the CPU ask for float32 inference (:data:`CPU_CONFIG`): on CPUs with bfloat16 support
OpenVINO otherwise runs float layers in bfloat16, which changed 1.2% of a random LRFormer-T's
labels at 512×512.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from ..errors import InputError, MissingFileError
from ..utils import TEMP_MARK, require_extra
from .metadata import METADATA_KEY, decode
from .onnx import compare_outputs, export_onnx

CPU_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
"""``compile_model`` settings for exact float32 (and int8 models' float layers in float32)."""


def openvino_module():
    """The ``openvino`` package, or a one-line ``pip install "lrformer[deploy]"`` error."""
    return require_extra("openvino", "deploy", "OpenVINO export and inference")


def convert(model: nn.Module, shape: tuple[int, int, int, int], opset: int = 18, dynamic: bool = False) -> Any:
    """``model`` as an in-memory ``openvino.Model`` (input ``image`` ``(B, 3, H, W)``, output
    ``scores`` ``(B, classes, H, W)``; H, W symbolic with ``dynamic``), through its ONNX graph
    (:func:`lrformer.deploy.onnx.export_onnx`, written to a temporary folder and removed)."""
    ov = openvino_module()
    with tempfile.TemporaryDirectory(prefix="lrformer-export-") as folder:
        onnx_path = Path(folder) / "model.onnx"
        export_onnx(model, shape, onnx_path, opset, dynamic=dynamic)
        converted = ov.convert_model(str(onnx_path))
        converted.set_rt_info("", ["conversion_parameters", "input_model"])  # not the temporary path
    return converted


def save_ir(ov_model: Any, path: str | Path, description: str | None = None) -> None:
    """Write ``ov_model`` to ``path`` (``.xml``) and the ``.bin`` beside it, both or neither.

    Both files are written in a temporary folder beside ``path``, flushed to disk, and moved: an existing
    ``.xml`` is removed first, then the new ``.bin`` and then the new ``.xml`` take their places,
    so no ``.xml`` ever meets a ``.bin`` that is not its own (a crash between the renames leaves a
    ``.bin`` without ``.xml``, which nothing loads). ``description``: the JSON text stored in
    ``rt_info[METADATA_KEY]`` (:func:`lrformer.deploy.metadata.encode`).
    """
    ov = openvino_module()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if description is not None:
        ov_model.set_rt_info(description, [METADATA_KEY])
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.", suffix=TEMP_MARK) as folder:
        tmp_xml = Path(folder) / path.name
        ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)  # writes tmp_xml and its .bin
        for written in (tmp_xml.with_suffix(".bin"), tmp_xml):
            with open(written, "rb") as handle:
                os.fsync(handle.fileno())
        path.unlink(missing_ok=True)
        os.replace(tmp_xml.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp_xml, path)


def read_model(path: str | Path) -> Any:
    """The ``openvino.Model`` of an IR ``.xml`` (with its ``.bin``), or a one-line error naming
    what is missing or damaged."""
    ov = openvino_module()
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist: give the .xml file lrformer export wrote")
    if not path.with_suffix(".bin").is_file():
        raise MissingFileError(
            f"{path} has no {path.with_suffix('.bin').name} beside it: an OpenVINO IR is the .xml and its .bin; "
            "copy both, or export again"
        )
    try:
        return ov.Core().read_model(str(path))
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or ["unreadable"])[-1].strip()
        raise InputError(f"{path} is not a readable OpenVINO IR ({reason[:200]}); export it again") from None


def read_description(path_or_model: str | Path | Any, source: str | None = None) -> dict[str, Any] | None:
    """The description an IR of ours carries (:func:`lrformer.deploy.metadata.decode`), or ``None``
    for an IR converted elsewhere. Takes the ``.xml`` path or an ``openvino.Model`` (``source``:
    the file it was read from, named in errors)."""
    is_path = isinstance(path_or_model, (str, Path))
    ov_model = read_model(path_or_model) if is_path else path_or_model
    source = source or (str(path_or_model) if is_path else "the OpenVINO model")
    if not ov_model.has_rt_info([METADATA_KEY]):
        return None
    return decode(ov_model.get_rt_info([METADATA_KEY]).astype(str), source)


def compile_cpu(ov_model: Any, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``run(x)``: ``(B, 3, H, W)`` float32 array → the ``scores`` array, on the CPU in float32
    (:data:`CPU_CONFIG`), with ``threads`` inference threads (default: OpenVINO's); see :func:`compile_scores`."""
    return compile_scores(ov_model, "CPU", dict(CPU_CONFIG, **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})))


def compile_scores(ov_model: Any, device: str, config: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """``run(x)``: ``(B, 3, H, W)`` float32 array → the ``(B, C, H, W)`` scores, ``ov_model`` compiled
    for ``device`` with ``config`` (``ov_model`` itself is left as it is).

    The scores come back in channels-last memory order (a ``(B, C, H, W)`` view of a ``(B, H, W, C)``
    array, as the PyTorch model's are): OpenVINO computes the final resize channels-last, and asking
    for the planar order cost a reorder of the whole score map, 35 ms of an int8 LRFormer-T's 130 ms
    at 512×512 with 150 classes. Raises ``RuntimeError`` where OpenVINO cannot compile the model."""
    ov = openvino_module()
    ov_model = ov_model.clone()
    if ov_model.outputs[0].partial_shape.rank.get_length() == 4:
        steps = ov.preprocess.PrePostProcessor(ov_model)
        steps.output().model().set_layout(ov.Layout("NCHW"))
        steps.output().tensor().set_layout(ov.Layout("NHWC"))
        ov_model = steps.build()
        channels_last = True
    else:
        channels_last = False
    compiled = ov.Core().compile_model(ov_model, device, config)
    output = compiled.output(0)
    if channels_last:
        return lambda x: np.moveaxis(compiled(x)[output], 3, 1)
    return lambda x: compiled(x)[output]


def compare_openvino(
    model: nn.Module, path_or_model: str | Path | Any, shape: tuple[int, int, int, int], seed: int = 0
) -> tuple[float, float]:
    """``(max |OpenVINO − PyTorch|, max |PyTorch|)`` on a random input of ``shape`` (OpenVINO on
    the CPU in float32; PyTorch on the model's device); see :func:`lrformer.deploy.onnx.compare_outputs`."""
    ov_model = read_model(path_or_model) if isinstance(path_or_model, (str, Path)) else path_or_model
    return compare_outputs(model, compile_cpu(ov_model), shape, seed)
