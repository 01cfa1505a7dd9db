"""Exported models run by ONNX Runtime (``.onnx``) and OpenVINO (``.xml`` + ``.bin``) behind the
predictor's :class:`~lrformer.inference.network.Network` interface.

:func:`load_network` picks the runtime by the file's suffix and reads the description the file
carries (:mod:`lrformer.deploy.metadata`), so ``Predictor(load_network("model.xml"))`` runs the
model's own test pipeline and knows its classes. A file exported elsewhere carries none: it is
accepted only when the caller names the variant (``model``: its test settings and attention
estimate) and/or the class count (``num_classes``).

Both runtimes take ``(B, 3, H, W)`` float32 CPU tensors and give ``(B, C, H, W)`` float32 CPU
scores. A graph exported for a fixed batch runs larger batches piece by piece; a fixed-size graph
refuses other sizes with one line naming the fix (:meth:`ExportedNetwork.check_size`). A dynamic
graph is compiled once for every size: in OpenVINO, per-size static compilation measured no faster
(LRFormer-T, 512×512, 2 threads: 455 ms reshaped to static vs 478 ms dynamic) and costs a
compilation (~2 s) per new size.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, InputError, MissingFileError
from ..inference.network import Network
from ..models.backbone import MIN_INPUT_SIZE
from ..models.factory import read_model_file
from ..models.registry import VARIANTS, build_model, variant_config
from ..models.zoo import is_tag, released_model
from ..utils import require_extra
from .metadata import METADATA_KEY, decode, export_entry

logger = logging.getLogger(__name__)

SUFFIXES = {".onnx": "onnx", ".xml": "openvino"}
"""The file suffixes of exported models and their format (the ``runtime`` of the export entry)."""


def is_exported(path: str | Path | None) -> bool:
    """Whether ``path`` names an exported model (``.onnx`` or an OpenVINO ``.xml``) by its suffix."""
    return path is not None and "://" not in str(path) and Path(str(path)).suffix.lower() in SUFFIXES


class ExportedNetwork(Network):
    """What the two runtimes share: the description, the size and batch checks, the attention
    estimate; a subclass sets :attr:`target` and runs one graph batch in :meth:`_run`.

    Attributes:
        path: the exported file.
        target: where the runtime runs it (``"cpu"``, ``"cuda:0"``, OpenVINO's ``"GPU"``).
        input_size: ``(H, W)`` of a fixed-size graph, ``None`` for a dynamic one.
        batch: the graph's fixed batch, ``None`` when it takes any.
    """

    runtime = ""
    target = "cpu"

    def _describe(
        self, path: str | Path, stored: dict | None, dims: tuple[list, list], model: str | None, num_classes: int | None
    ) -> None:
        """Set the description (``stored``, or one made from the graph's ``dims`` (input, output:
        ints, ``None`` where symbolic) with ``model`` / ``num_classes``), the sizes and the class count."""
        self.path, self.device = Path(path), torch.device("cpu")
        inputs, outputs = dims
        if stored is None:
            stored = _fallback_description(self.path, self.runtime, inputs, outputs, model, num_classes)
        else:
            _check_agrees(self.path, stored, outputs, model, num_classes)
        self.description = stored
        self.num_classes = int(stored["model"]["num_classes"])
        self.batch = inputs[0]
        self.input_size = tuple(inputs[2:]) if None not in inputs[2:] else None
        self.min_size = int(stored["export"].get("min_size") or MIN_INPUT_SIZE)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, h, w)`` float32 → ``(N, C, h, w)`` float32 scores, a graph batch at a time."""
        self.check_size(*x.shape[-2:])
        array = x.detach().to("cpu", torch.float32).numpy()
        step = self.batch or len(array)
        parts = []
        for start in range(0, len(array), step):
            part = array[start : start + step]
            missing = step - len(part)  # a fixed batch: fill the last piece up
            if missing:
                part = np.concatenate([part, np.zeros((missing, *part.shape[1:]), part.dtype)])
            parts.append(self._run(np.ascontiguousarray(part))[: step - missing])
        return torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0])

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def check_size(self, height: int, width: int) -> None:
        """A fixed-size graph takes only its size; a dynamic one any ``H, W >= min_size``."""
        if self.input_size is not None and (height, width) != self.input_size:
            size = f"{self.input_size[0]}x{self.input_size[1]}"
            raise ConfigError(
                f"{self.path.name} was exported for {size} inputs but the pipeline feeds it {height}x{width}: export "
                f"it with --dynamic, or set --scale (whole) or --mode slide --crop {self.input_size[0]} "
                f"{self.input_size[1]} so that the network input is {size}"
            )
        if self.input_size is None and min(height, width) < self.min_size:
            raise ConfigError(
                f"{self.path.name} takes inputs of at least {self.min_size}x{self.min_size} but the pipeline feeds it "
                f"{height}x{width}: use a larger --scale or --crop"
            )

    def attention_elements(self, height: int, width: int) -> int:
        """The described variant's estimate (its module skeleton, built once on the ``meta``
        device, no weights); 0 (no long-side fallback) when the variant is unknown."""
        skeleton = self._skeleton
        return skeleton.attention_elements(height, width) if skeleton is not None else 0

    @functools.cached_property
    def _skeleton(self) -> Any:
        """The described variant's segmentor on the ``meta`` device, or None when unknown."""
        arguments = self.description["model"]
        if arguments.get("name") not in VARIANTS:
            return None
        with torch.device("meta"):
            return build_model(variant_config(**dict(arguments)))

    def __repr__(self) -> str:
        export = self.description["export"]
        size = "x".join(map(str, self.input_size)) if self.input_size else "dynamic"
        return f"{type(self).__name__}({str(self.path)!r}, {export.get('precision')}, {size}, on {self.target})"


class OnnxRuntimeNetwork(ExportedNetwork):
    """An ``.onnx`` export run by ONNX Runtime: ``threads`` intra-op threads (default: ONNX
    Runtime's), the CPU provider, or the CUDA provider for ``device="cuda[:N]"`` where it is
    installed (``onnxruntime-gpu``). ``model`` / ``num_classes``: see :func:`load_network`."""

    runtime = "onnx"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        device: str = "cpu",
        model: str | None = None,
        num_classes: int | None = None,
    ) -> None:
        ort = require_extra("onnxruntime", "deploy", "running an ONNX model")
        _check_file(path)
        self.target = onnxruntime_device(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings about the graph a user cannot act on
        if threads:
            options.intra_op_num_threads = int(threads)
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.target.startswith("cuda"):
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(self.target.partition(":")[2] or 0)}))
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # InvalidProtobuf, Fail, ...: a damaged or foreign file
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{path} is not a readable ONNX model ({reason[:160]}); export it again") from None
        stored = decode(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), str(path))
        first, output = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self._input, self._output = first.name, output.name
        self._describe(path, stored, (_dims(first.shape), _dims(output.shape)), model, num_classes)
        _check_int8_device(self)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: x})[0]


class OpenVINONetwork(ExportedNetwork):
    """An OpenVINO IR (``model.xml`` and ``model.bin``) run by OpenVINO, compiled once: on the CPU
    in float32 (OpenVINO would otherwise run float layers in bfloat16 where the CPU has it) with
    ``threads`` inference threads, or on an Intel GPU (``device="gpu[.N]"``). ``model`` /
    ``num_classes``: see :func:`load_network`."""

    runtime = "openvino"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        device: str = "cpu",
        model: str | None = None,
        num_classes: int | None = None,
    ) -> None:
        from .openvino import CPU_CONFIG, compile_scores, read_description, read_model

        _check_file(path)
        _check_ir_text(Path(path))
        ov_model = read_model(path)
        stored = read_description(ov_model, str(path))
        self.target = openvino_device(device)
        config = dict(CPU_CONFIG) if self.target == "CPU" else {}
        config.update({"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})})
        dims = (_dims(ov_model.inputs[0].partial_shape), _dims(ov_model.outputs[0].partial_shape))
        self._describe(path, stored, dims, model, num_classes)
        try:
            self._scores = compile_scores(ov_model, self.target, config)
        except RuntimeError as exc:
            reason = (str(exc).strip().splitlines() or ["failed"])[-1].strip()
            raise ConfigError(
                f"OpenVINO cannot compile {path} for {self.target} ({reason[:160]}); try --device cpu"
            ) from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._scores(x)


def load_network(
    path: str | Path,
    device: str = "auto",
    threads: int | None = None,
    model: str | None = None,
    num_classes: int | None = None,
) -> ExportedNetwork:
    """The exported model at ``path`` as a :class:`~lrformer.inference.network.Network`:
    ``.onnx`` on ONNX Runtime, ``.xml`` (with its ``.bin``) on OpenVINO.

    Example::

        predictor = Predictor(load_network("lrformer_t_int8.xml", threads=2))
        label = predictor("photo.jpg")

    Args:
        path: the exported file.
        device: ``"auto"`` (ONNX Runtime: CUDA where its CUDA provider and a GPU are there, else the
            CPU; OpenVINO: the CPU), ``"cpu"``, ``"cuda[:N]"`` (ONNX Runtime), ``"gpu[.N]"`` (OpenVINO,
            an Intel GPU).
        threads: the runtime's intra-op threads (default: the runtime's choice).
        model: for a file without our description (exported elsewhere): the variant (or model
            YAML/JSON) it was exported from, for its test settings and attention estimate.
        num_classes: for a file without our description: its class count (default: the graph's).
    """
    suffix = Path(str(path)).suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path} is not an exported model: give a .onnx file or an OpenVINO .xml (with its .bin)")
    network = OnnxRuntimeNetwork if suffix == ".onnx" else OpenVINONetwork
    return network(path, threads, resolve_device(path, device), model, num_classes)


def resolve_device(path: str | Path, device: str) -> str:
    """``device`` for the runtime of ``path`` (``auto`` replaced by what the runtime picks), or a
    :class:`~lrformer.errors.ConfigError` naming a device the runtime cannot use."""
    if Path(str(path)).suffix.lower() == ".xml":
        return openvino_device(device).lower()
    return onnxruntime_device(device)


def onnxruntime_device(device: str) -> str:
    """``cpu`` or ``cuda[:N]`` for ONNX Runtime (``auto``: CUDA where the provider and a GPU are there)."""
    ort = require_extra("onnxruntime", "deploy", "running an ONNX model")
    device = str(device).lower()
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        return "cuda" if cuda and torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not cuda:
        raise ConfigError(
            f"--device {device}: this onnxruntime has no CUDA provider; pip install onnxruntime-gpu, or --device cpu"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device {device}: ONNX Runtime runs a model on cpu or cuda[:N]; e.g. --device cpu")
    return device


def openvino_device(device: str) -> str:
    """OpenVINO's device name: ``CPU`` (``auto``, ``cpu``) or ``GPU[.N]`` (an Intel GPU it sees)."""
    from .openvino import openvino_module

    device = str(device).lower()
    if device in ("auto", "cpu"):
        return "CPU"
    if device.startswith("gpu"):
        target = device.upper()
        available = openvino_module().Core().available_devices
        if target in available or (target == "GPU" and any(d.startswith("GPU") for d in available)):
            return target
        raise ConfigError(f"--device {device}: OpenVINO sees no such GPU here (it sees {', '.join(available)}); "
                          "use --device cpu")  # fmt: skip
    raise ConfigError(f"--device {device}: OpenVINO runs a model on cpu or an Intel gpu; e.g. --device cpu")


def _check_file(path: str | Path) -> None:
    if not Path(path).is_file():
        raise MissingFileError(f"{path} does not exist: give the file lrformer export wrote")


def _check_ir_text(path: Path) -> None:
    """Refuse an ``.xml`` that is no OpenVINO IR before OpenVINO tries its other front ends on it
    (which print parser errors of their own)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if b"<net" not in head:
        raise InputError(
            f"{path} is not an OpenVINO IR (no <net> element): give the .xml that lrformer export --format "
            "openvino wrote"
        )


def _dims(shape: Any) -> list[int | None]:
    """A graph shape as ints, ``None`` where symbolic (ONNX Runtime names, OpenVINO ``?``)."""
    dims = []
    for dim in shape:
        static = dim if isinstance(dim, int) else (dim.get_length() if getattr(dim, "is_static", False) else None)
        dims.append(static if isinstance(static, int) and static > 0 else None)
    return dims


def _check_agrees(path: Path, stored: dict, outputs: list, model: str | None, num_classes: int | None) -> None:
    """Refuse ``model`` / ``num_classes`` options that contradict the file's own description."""
    described = stored["model"]
    if num_classes is not None and num_classes != described.get("num_classes"):
        raise ConfigError(f"{path} predicts {described.get('num_classes')} classes, not --num-classes {num_classes}: "
                          "leave --num-classes out (the file describes its model)")  # fmt: skip
    variant = model.split(".", 1)[0] if is_tag(model) else model
    if variant is not None and variant in VARIANTS and variant != described.get("name"):
        raise ConfigError(
            f"{path} is a {described.get('name')} model, not --model {model}: leave --model out (the file describes "
            "its model)"
        )
    if len(outputs) > 1 and outputs[1] is not None and outputs[1] != described.get("num_classes"):
        raise CheckpointError(f"{path}: its description says {described.get('num_classes')} classes but the graph "
                              f"gives {outputs[1]}; export it again")  # fmt: skip


def _fallback_description(
    path: Path, runtime: str, inputs: list, outputs: list, model: str | None, num_classes: int | None
) -> dict[str, Any]:
    """The description of a file exported elsewhere, from ``model`` / ``num_classes`` and the graph."""
    graph_classes = outputs[1] if len(outputs) == 4 else None
    if len(inputs) != 4 or len(outputs) != 4:
        raise InputError(f"{path} does not map (B, 3, H, W) images to (B, C, H, W) scores: it is no segmentation model "
                         "lrformer can run")  # fmt: skip
    if model is None and num_classes is None:
        raise CheckpointError(f"{path} carries no lrformer description (exported elsewhere?): give --model VARIANT "
                              "and/or --num-classes N, or export it with lrformer export")  # fmt: skip
    if num_classes is not None and graph_classes is not None and num_classes != graph_classes:
        raise ConfigError(
            f"{path} gives {graph_classes} class scores, not --num-classes {num_classes}: fix --num-classes"
        )
    released = released_model(model).description() if is_tag(model) else {}  # --model TAG: its classes, settings
    arguments = dict(released["model"]) if released else _model_arguments(model)
    arguments["num_classes"] = num_classes or graph_classes or arguments.get("num_classes")
    if not arguments["num_classes"]:
        raise ConfigError(f"{path} does not say how many classes it predicts: give --num-classes N")
    size = tuple(inputs[2:]) if None not in inputs[2:] else None
    logger.warning(
        "%s carries no lrformer description: running it as %s with %d classes (from --model / --num-classes), "
        "default class names and test settings", path, arguments.get("name") or "an unnamed model",
        arguments["num_classes"],
    )  # fmt: skip
    same = released and arguments["num_classes"] == released["model"].get("num_classes")
    return {
        "model": arguments, **{k: released[k] if same else None for k in ("classes", "palette", "test")},
        "export": {**export_entry(runtime, size, MIN_INPUT_SIZE, inputs[0] or 1, "unknown"), "batch": inputs[0]},
    }  # fmt: skip


def _model_arguments(model: str | None) -> dict[str, Any]:
    """``create_model`` arguments of ``--model`` (a variant or a model YAML/JSON; weights ignored)."""
    if model is None:
        return {}
    if Path(model).suffix.lower() in (".yaml", ".yml", ".json"):
        arguments = read_model_file(model)
        arguments.pop("pretrained", None)
    else:
        arguments = {"name": model}
    variant_config(**arguments)  # an unknown variant or argument: "did you mean"
    return arguments


def _check_int8_device(network: ExportedNetwork) -> None:
    """Refuse an int8 ONNX graph on CUDA (its quantised operators run on the CPU provider)."""
    if network.description["export"].get("precision") == "int8" and network.target.startswith("cuda"):
        raise ConfigError(
            f"{network.path} is int8, which ONNX Runtime runs on the CPU only: use --device cpu, or the fp32 export on cuda"
        )
