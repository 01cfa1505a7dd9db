"""ONNX export (torch.export-based exporter), the description it carries, and its onnxruntime check.

A fixed export specialises the graph to one input size. A dynamic export (``dynamic=True``) keeps
height and width symbolic: the LRSA grid sizes are then computed in the graph with integer
arithmetic (``lrformer.models.layers.traceable_pooled_size``), and adaptive average pooling, which
ONNX has no operator for at a size computed in the graph, becomes two matrix products
(:func:`_adaptive_avg_pool2d_onnx`). Eager PyTorch is unchanged.

The file carries its model description (:mod:`lrformer.deploy.metadata`) as one JSON string under
``metadata_props[METADATA_KEY]``; :func:`read_description` reads it back.
"""

from __future__ import annotations

import ast
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InputError, MissingFileError
from ..utils import atomic_path, require_extra
from .metadata import METADATA_KEY, decode

MIN_DYNAMIC_SIZE = 33
"""Smallest H, W the dynamic export is traced for. 32 runs too (``tests/test_export.py``): the
tracer only refuses 32 because a 1-pixel stride-32 feature changes PyTorch's memory layout."""


def export_onnx(
    model: nn.Module,
    shape: tuple[int, int, int, int],
    path: str | Path,
    opset: int = 18,
    dynamic: bool = False,
    description: str | None = None,
) -> None:
    """Export ``model`` for ``(B, 3, H, W)`` inputs named ``image`` to ``path`` (written atomically).

    The output ``scores`` is ``model(x)``: float32 class scores at the input size ``(B, classes, H, W)``
    for every variant (LRHead logits resized bilinearly, LRFormer+ summed class probabilities);
    its ``argmax`` over the classes is the label map. Fixed (default): the graph takes only
    ``shape``. ``dynamic``: ``shape`` is the example traced (the batch stays fixed) and any
    ``H, W >= 32`` run. ``description``: the JSON text stored under ``metadata_props[METADATA_KEY]``
    (:func:`lrformer.deploy.metadata.encode`).
    """
    require_extra("onnx", "export", "ONNX export")
    require_extra("onnxscript", "export", "ONNX export")
    model = model.eval()
    parameter = next(model.parameters())
    options = {}
    if dynamic or opset >= 18:  # the pooling as matrix products; fixed exports run 2x faster with it (OpenVINO)
        options["custom_translation_table"] = {torch.ops.aten._adaptive_avg_pool2d.default: _adaptive_avg_pool2d_onnx}
    if dynamic:
        size = torch.export.Dim("height", min=MIN_DYNAMIC_SIZE), torch.export.Dim("width", min=MIN_DYNAMIC_SIZE)
        options["dynamic_shapes"] = ({2: size[0], 3: size[1]},)
        shape = (*shape[:2], max(shape[2], MIN_DYNAMIC_SIZE), max(shape[3], MIN_DYNAMIC_SIZE))
    example = torch.zeros(shape, dtype=parameter.dtype, device=parameter.device)
    with atomic_path(path) as tmp, warnings.catch_warnings(), _quiet_onnx_loggers(), torch.enable_grad():
        warnings.simplefilter("ignore")
        # autograd on: the IRB's memory-bounded inference path (a branch on the map size) stays out of the graph
        problem = cause = None
        try:
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=["image"], output_names=["scores"],
                opset_version=opset, verbose=False, **options,
            )  # fmt: skip
            problem = _dynamic_size_problem(program.exported_program) if dynamic else None
        except Exception as exc:
            if not dynamic:
                raise
            problem, cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0], exc
        if problem:
            raise ConfigError(
                f"the export with symbolic height and width failed ({problem}); export at a fixed size: --size H W "
                "without --dynamic"
            ) from cause
        if description is not None:
            program.model.metadata_props[METADATA_KEY] = description
        _name_nodes_by_module(program.model.graph)
        program.save(str(tmp))


def _name_nodes_by_module(graph) -> None:
    """Prefix each node's name with the module that computes it (``node_Conv_5041`` becomes
    ``decode_head.conv_seg/node_Conv_5041``), from the exporter's ``name_scopes`` record: readable
    graphs, and names that keep layers in float by module (:mod:`lrformer.deploy.quantize`)."""
    for node in graph:
        scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
        module = scopes and ast.literal_eval(scopes)[-2:-1]  # [..., 'module.path', 'op name']
        if module and module[0] and node.name:
            node.name = f"{module[0]}/{node.name}"


def read_description(path: str | Path) -> dict[str, Any] | None:
    """The description an ONNX file of ours carries (:func:`lrformer.deploy.metadata.decode`), or
    ``None`` for a file exported elsewhere. A file that is not ONNX is an :class:`InputError`."""
    onnx = require_extra("onnx", "deploy", "reading an ONNX file")
    if not Path(path).is_file():
        raise MissingFileError(f"{path} does not exist: give the .onnx file lrformer export wrote")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a damaged or foreign file
        raise InputError(f"{path} is not a readable ONNX file ({type(exc).__name__}); export it again") from None
    text = next((entry.value for entry in proto.metadata_props if entry.key == METADATA_KEY), None)
    return decode(text, str(path))


def _dynamic_size_problem(program: torch.export.ExportedProgram) -> str | None:
    """Why the traced graph does not take every ``H, W >= MIN_DYNAMIC_SIZE`` (the exporter quietly
    narrows a size's range, or fixes it, when the network branches on it), or None."""
    name = program.graph_signature.user_inputs[0]
    image = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == name)
    for axis, size in zip(("height", "width"), image.meta["val"].shape[2:]):
        if not isinstance(size, torch.SymInt):
            return f"the {axis} was fixed to {size}"
        bounds = program.range_constraints[size.node.expr]
        if bounds.lower > MIN_DYNAMIC_SIZE or bounds.upper < 2**62:  # the upper bound is int_oo when unbounded
            return f"the graph only takes a {axis} in [{bounds.lower}, {bounds.upper}]"
    return None


def dynamic_check_shapes(shape: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """The export size and three others (two other aspect ratios, sizes not multiples of 32)
    at which a dynamic export is compared with PyTorch."""
    batch, channels, height, width = shape
    sizes = [(height, width), (height + 40, width + 72), (height * 3 // 2 + 8, width), (height, 2 * width - 24)]
    return [(batch, channels, h, w) for h, w in sizes]


def check_onnx(model: nn.Module, path: str | Path, shape: tuple[int, int, int, int], seed: int = 0) -> float:
    """Max absolute difference between onnxruntime (CPU) and PyTorch (on the model's device) on a
    random input of ``shape`` (``inf`` for NaNs or a shape mismatch)."""
    return compare_onnx(model, path, shape, seed)[0]


def compare_onnx(
    model: nn.Module, path: str | Path, shape: tuple[int, int, int, int], seed: int = 0
) -> tuple[float, float]:
    """``(max |onnxruntime − PyTorch|, max |PyTorch|)`` on a random input of ``shape``: the
    difference and the scale of the scores it is to be judged against."""
    onnxruntime = require_extra("onnxruntime", "export", "checking the ONNX export")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return compare_outputs(model, lambda x: session.run(None, {"image": x})[0], shape, seed)


def compare_outputs(
    model: nn.Module, run: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int, int, int], seed: int = 0
) -> tuple[float, float]:
    """``(max |run(x) − model(x)|, max |model(x)|)`` for a random ``x`` of ``shape``: ``run`` is an
    exported model (float32 array in, scores array out), ``model`` runs on its own device in full
    float32. The difference is ``inf`` for NaNs or a shape mismatch."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    ours = run(x.numpy())
    parameter = next(model.parameters())
    with torch.inference_mode(), _full_float32():
        reference = model.eval()(x.to(parameter.device, parameter.dtype)).float().cpu().numpy()
    difference = abs(ours - reference) if ours.shape == reference.shape else np.full(1, np.inf)
    scale = float(abs(reference).max())
    return (float(difference.max()) if np.isfinite(difference).all() else float("inf")), scale


@contextmanager
def _quiet_onnx_loggers():
    """Hide the ONNX graph optimiser's log lines (hundreds of them, none a user can act on) while exporting."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.ERROR))
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextmanager
def _full_float32():
    """No TF32 in CUDA convolutions and matrix products (on by default for convolutions), which
    alone would differ from onnxruntime's float32 by more than 1e-4."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def check_opset(opset: int) -> None:
    """Refuse an ONNX opset outside what this PyTorch can export."""
    from torch.onnx import _constants

    low, high = _constants.ONNX_MIN_OPSET, _constants.ONNX_MAX_OPSET
    if not low <= opset <= high:
        raise ConfigError(f"--opset {opset} is not one this PyTorch exports ({low} to {high}); e.g. --opset 18")


def _adaptive_avg_pool2d_onnx(x, output_size):
    """ONNX graph of ``adaptive_avg_pool2d`` for an output size computed in the graph:
    ``(B, C, H, W)`` → ``rows @ x @ colsᵀ``, ``(B, C, h, w)``, with :func:`_pooling_matrix` ``rows``
    ``(h, H)`` and ``cols`` ``(w, W)``. Within float rounding of ``F.adaptive_avg_pool2d``."""
    from onnxscript import opset18 as op

    out = [op.Constant(value_ints=[s]) if isinstance(s, int) else op.Reshape(s, [1]) for s in output_size]
    shape = op.Shape(x)
    rows = _pooling_matrix(out[0], op.Slice(shape, [2], [3]), x)
    cols = _pooling_matrix(out[1], op.Slice(shape, [3], [4]), x)
    return op.MatMul(op.MatMul(rows, x), op.Transpose(cols, perm=[1, 0]))


def _pooling_matrix(out_size, in_size, like):
    """``(out, in)`` matrix averaging the input cells ``[⌊i·in/out⌋, ⌈(i+1)·in/out⌉)`` into output
    ``i``, the cells of adaptive pooling: cell ``j`` is inside when ``(j+1)·out > i·in`` and
    ``j·out < (i+1)·in``. ``out_size``, ``in_size``: int64 ``[1]``."""
    from onnxscript import opset18 as op

    zero, one = op.Constant(value_int=0), op.Constant(value_int=1)
    i = op.Mul(op.Unsqueeze(op.Range(zero, op.Squeeze(out_size), one), [1]), in_size)  # i·in, (out, 1)
    j = op.Mul(op.Range(zero, op.Squeeze(in_size), one), out_size)  # j·out, (in,)
    inside = op.CastLike(op.And(op.Greater(op.Add(j, out_size), i), op.Less(j, op.Add(i, in_size))), like)
    return op.Div(inside, op.ReduceSum(inside, [1], keepdims=1))
