"""Backends side by side (``lrformer benchmark --backend``): a model's PyTorch fast path, its ONNX
Runtime and OpenVINO exports (float32, and OpenVINO int8) timed through the call the predictor
makes, at one or several sizes.

For every size the model is exported to a temporary folder at that fixed size, as ``lrformer
export`` exports it (:mod:`lrformer.deploy.exporting`; int8: NNCF calibrated on
:data:`CALIBRATION_IMAGES` synthetic scenes put through the model's test pipeline, enough for
speed, not for accuracy), and each export is loaded by :func:`lrformer.deploy.load_network`, the
network ``lrformer predict --weights model.xml`` runs. An exported file can also be timed as it
is (``weights``).

Latency: all networks of a size live in this process and their passes are interleaved
(:func:`lrformer.benchmarking.benchmark_networks`), so their ratios are comparable on a busy
machine. Peak memory: a process's peak resident set only grows, so each row is measured in a fresh
process (``python -m lrformer.deploy.speed``) that loads that one network and runs it
:data:`MEMORY_PASSES` times at that size: what a user's process holding it needs, PyTorch and
the runtime included (for a PyTorch row on CUDA: the most CUDA memory allocated).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..benchmarking import benchmark_networks, peak_resident_mb
from ..errors import ConfigError, LRFormerError
from ..inference.network import Network, TorchNetwork
from ..models import create_model, reparameterize_model
from ..models.backbone import MIN_INPUT_SIZE
from ..utils import peak_memory_mb, require_extra

BACKENDS = ("torch", "onnxruntime", "openvino")
"""``--backend`` choices: PyTorch, ONNX Runtime (``.onnx``), OpenVINO (``.xml`` + ``.bin``)."""
RUNTIMES = {".onnx": "onnxruntime", ".xml": "openvino"}
"""The backend that runs an exported file, by its suffix."""
INT8_BACKENDS = ("openvino",)
"""Backends with an int8 export (``lrformer export --int8`` writes an OpenVINO IR, quantised by NNCF)."""
CALIBRATION_IMAGES = 8
"""Synthetic scenes the int8 exports of the benchmark are calibrated on."""
MEMORY_PASSES = 2
"""Passes of the network in a memory-measuring process (the first one allocates the runtime's buffers)."""
MEMORY_PROCESSES = 2
"""Memory-measuring processes run at once (after the timing, so they do not disturb it)."""


@dataclass(frozen=True)
class Row:
    """One line of the table: ``backend`` running a network in ``precision`` (``path``: the
    exported file, None for PyTorch)."""

    backend: str
    precision: str
    path: str | None = None

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


@dataclass
class Comparison:
    """The backends of one model side by side; :meth:`run` measures them size by size.

    Attributes:
        model: ``create_model``'s name argument (a variant or a model YAML/JSON), or a dict of its
            arguments; the PyTorch row and the exports are built from it. With ``weights``: only
            for the PyTorch row, or for a file exported elsewhere (its variant).
        backends: the rows to export and time (:data:`BACKENDS`; with ``weights``: ``torch`` or none).
        int8: also the int8 exports (:data:`INT8_BACKENDS`).
        weights: an exported file (``.onnx``, ``.xml``) timed as it is, instead of exporting.
        batch: images per call (the exports are made for this batch).
        device: ``--device`` (each backend resolves ``auto`` its own way).
        threads: CPU threads of every backend (``torch.set_num_threads``, the runtimes' intra-op threads).
        fast, precision, compile: the PyTorch row's fast path, autocast precision and ``torch.compile``.
        warmup, iters: untimed and timed calls per network and size.
    """

    model: str | dict | None
    backends: tuple[str, ...] = ("torch",)
    int8: bool = False
    weights: str | None = None
    batch: int = 1
    device: str = "cpu"
    threads: int | None = None
    fast: bool = True
    precision: str = "fp32"
    compile: bool = False
    warmup: int = 3
    iters: int = 10
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        self._exported = _load(self.weights, self.device, self.threads, self.model) if self.weights else None
        if self._exported is not None and self.model is None:
            self.model = dict(self._exported.description["model"])
        self._torch = (
            _torch_network(self.model, self.device, self.fast, self.precision, self.compile)
            if "torch" in self.backends
            else None
        )
        if not self.fast and self._torch is not None:
            self.notes.append("the torch row runs the model as loaded (--no-fast), not the fast path")
        skipped = [b for b in self.backends if self.int8 and b not in INT8_BACKENDS + ("torch",)]
        for backend in skipped:
            self.notes.append(f"no {backend} int8 row: lrformer export --int8 writes an OpenVINO IR (NNCF)")

    def default_sizes(self) -> list[tuple[int, int]]:
        """The size of a fixed-size ``weights`` file, else 512×512."""
        size = self._exported.input_size if self._exported is not None else None
        return [tuple(size) if size else (512, 512)]

    def check_sizes(self, sizes: list[tuple[int, int]]) -> None:
        """Refuse a size that a fixed-size ``weights`` file cannot take, or one below the smallest input."""
        fixed = self._exported.input_size if self._exported is not None else None
        for size in sizes:
            if fixed and tuple(size) != tuple(fixed):
                raise ConfigError(f"{self.weights} was exported for {fixed[0]}x{fixed[1]} inputs: give --size {fixed[0]} "
                                  f"{fixed[1]} (or time an export made with --dynamic)")  # fmt: skip
            if min(size) < MIN_INPUT_SIZE:
                raise ConfigError(
                    f"--size {size[0]} {size[1]}: LRFormer takes H, W >= {MIN_INPUT_SIZE}; e.g. --size 512 512"
                )

    def run(self, sizes: list[tuple[int, int]]) -> Iterator[list[dict[str, Any]]]:
        """For each size, one result per row: ``backend``, ``precision``, ``height``, ``width``,
        ``batch``, ``threads``, ``median_ms``, ``p90_ms``, ``images_per_s``, ``peak_mb`` (a fresh
        process's, see the module docstring) and ``speedup`` (the PyTorch row's median latency
        over this row's; NaN without a PyTorch row)."""
        for size in sizes:
            with tempfile.TemporaryDirectory(prefix="lrformer-benchmark-") as folder:
                networks = self._networks(size, Path(folder))
                rows = list(networks)
                timings = benchmark_networks({r.label: n for r, n in networks.items()}, size, self.batch,
                                             self.warmup, self.iters)  # fmt: skip
                _release(networks)  # the memory processes load their own
                yield self._results(rows, timings, size)

    def _networks(self, size: tuple[int, int], folder: Path) -> dict[Row, Network]:
        networks: dict[Row, Network] = {}
        if self._torch is not None:
            networks[Row("torch", self.precision)] = self._torch
        if self._exported is not None:
            networks[_row_of(self._exported)] = self._exported
            return networks
        for row in export_rows(self._export_model, self.backends, self.int8, (self.batch, 3, *size), folder):
            networks[row] = _load(row.path, self.device, self.threads)
        return networks

    @functools.cached_property
    def _export_model(self) -> torch.nn.Module:
        """The model the exports are made of: the PyTorch fast path on the CPU, as ``lrformer export``
        exports it (the PyTorch row's own module where that is it)."""
        torch_row = self._torch
        if torch_row is not None and self.fast and not self.compile and torch_row.device.type == "cpu":
            return torch_row.module
        return reparameterize_model(_create(self.model).eval(), inplace=True)

    def _results(self, rows: list[Row], timings: dict[str, dict], size: tuple[int, int]) -> list[dict[str, Any]]:
        reference = timings.get(Row("torch", self.precision).label, {}).get("median_ms", float("nan"))
        with ThreadPoolExecutor(MEMORY_PROCESSES) as pool:  # a resident set does not depend on the others' speed
            peaks = list(pool.map(lambda row: measure_memory(self, row, size), rows))
        results = []
        for row, peak in zip(rows, peaks):
            timing = timings[row.label]
            results.append({"backend": row.backend, "precision": row.precision, "height": size[0], "width": size[1],
                            "batch": self.batch, "threads": self.threads or "", **timing, "peak_mb": peak,
                            "speedup": reference / timing["median_ms"]})  # fmt: skip
        return results


def export_rows(
    model: torch.nn.Module, backends: tuple[str, ...], int8: bool, shape: tuple[int, int, int, int], folder: Path
) -> list[Row]:
    """Export ``model`` for the runtimes among ``backends`` at the fixed ``shape`` ``(B, 3, H, W)``
    into ``folder``, as ``lrformer export`` does (:mod:`lrformer.deploy.exporting`: the ONNX file,
    the OpenVINO IR, and with ``int8`` the OpenVINO int8 IR calibrated on :func:`synthetic_scenes`);
    the rows that run them."""
    from .exporting import ExportSpec, export_float, export_int8, pipeline_config

    rows = planned_rows(backends, int8, folder)
    for row in rows:
        spec = ExportSpec("onnx" if row.backend == "onnxruntime" else "openvino", shape)
        if row.precision == "int8":
            export_int8(model, row.path, spec, synthetic_scenes(folder), pipeline_config(model, None))
        else:
            export_float(model, row.path, spec)
    return rows


def synthetic_scenes(folder: Path, count: int = CALIBRATION_IMAGES) -> Any:
    """``count`` synthetic 256×256 scenes (:func:`lrformer.data.synthetic.draw_scene`) written to
    ``folder/calibration`` as calibration images (none held out)."""
    from ..data.synthetic import draw_scene
    from ..image.io import save_image
    from .calibration import CalibrationImages

    rng, paths = np.random.default_rng(0), []
    for index in range(count):
        paths.append(folder / "calibration" / f"scene_{index}.png")
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
        save_image(paths[-1], draw_scene(rng, 256)[0])
    return CalibrationImages(paths, [])


def planned_rows(backends: tuple[str, ...], int8: bool, folder: Path) -> list[Row]:
    """The exported rows of ``backends`` in table order, with the files :func:`export_rows` writes."""
    rows = [Row("onnxruntime", "fp32", str(folder / "model.onnx"))] if "onnxruntime" in backends else []
    if "openvino" in backends:
        rows.append(Row("openvino", "fp32", str(folder / "model_fp32.xml")))
        if int8:
            rows.append(Row("openvino", "int8", str(folder / "model_int8.xml")))
    return rows


def check_backends(backends: tuple[str, ...], int8: bool, export: bool) -> None:
    """One-line ``pip install`` errors, before any work, for a runtime (or the exporter, or NNCF)
    that the requested rows need and that is not installed."""
    if "onnxruntime" in backends:
        require_extra("onnxruntime", "deploy", "--backend onnxruntime")
    if "openvino" in backends:
        require_extra("openvino", "deploy", "--backend openvino")
    if export and set(backends) - {"torch"}:
        require_extra("onnx", "deploy", "exporting the model for the runtimes")
        require_extra("onnxscript", "export", "exporting the model for the runtimes")
    if export and int8 and "openvino" in backends:
        require_extra("nncf", "deploy", "--int8")


def measure_memory(comparison: Comparison, row: Row, size: tuple[int, int]) -> float:
    """Peak memory in MB of a fresh process that loads ``row``'s network and runs it
    :data:`MEMORY_PASSES` times on a ``(batch, 3, H, W)`` input."""
    arguments = {"row": [row.backend, row.precision, row.path], "model": comparison.model, "size": list(size),
                 "batch": comparison.batch, "device": comparison.device, "threads": comparison.threads,
                 "fast": comparison.fast, "precision": comparison.precision}  # fmt: skip
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", __name__, json.dumps(arguments)], env=env, capture_output=True,
                          text=True)  # fmt: skip
    lines = done.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if "error" in answer:
        raise ConfigError(answer["error"])
    if done.returncode or "peak_mb" not in answer:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the memory-measuring process failed (exit code {done.returncode}): {last}")
    return float(answer["peak_mb"])


def _measure_here(arguments: dict[str, Any]) -> float:
    """The memory process: load the row's network, run it, its peak memory in MB."""
    backend, precision, path = arguments["row"]
    if arguments["threads"]:
        torch.set_num_threads(arguments["threads"])
    if backend == "torch":
        network: Network = _torch_network(arguments["model"], arguments["device"], arguments["fast"], precision)
    else:
        network = _load(path, arguments["device"], arguments["threads"], arguments["model"])
    x = torch.randn(arguments["batch"], 3, *arguments["size"]).to(network.device)
    with torch.no_grad():
        for _ in range(MEMORY_PASSES):
            network(x)
    return peak_memory_mb(network.device) if network.device.type == "cuda" else peak_resident_mb()


def _torch_network(
    model: str | dict | None, device: str, fast: bool, precision: str, compile: bool = False
) -> TorchNetwork:
    """The PyTorch row: the model (its fast path unless ``fast`` is off) as the predictor runs it."""
    module = _create(model)
    module = reparameterize_model(module, inplace=True) if fast else module.eval()
    network = TorchNetwork(module, device, fast=False, precision=precision)
    if compile:
        network.module = torch.compile(network.module)
    return network


def _create(model: str | dict | None) -> torch.nn.Module:
    if model is None:
        raise ConfigError("give --model (a variant name such as lrformer_t, or a model YAML/JSON)")
    return create_model(**model) if isinstance(model, dict) else create_model(model)


def _load(path: str, device: str, threads: int | None, model: str | dict | None = None) -> Network:
    """An exported file as the predictor's network (:func:`lrformer.deploy.load_network`)."""
    from .runtimes import load_network

    return load_network(path, device, threads, model if isinstance(model, str) else None)


def _release(networks: dict[Row, Network]) -> None:
    """Drop the networks, the last loaded first: OpenVINO's CPU plugin sets the thread's alternate
    signal stack when it compiles a model and puts back the one it found when the model is freed,
    so models freed in any other order leave a freed stack in place, on which the next signal with
    a handler (e.g. ``SIGCHLD`` once PyTorch's DataLoader has run) crashes the process."""
    for row in reversed(list(networks)):
        del networks[row]


def _row_of(network: Network) -> Row:
    export = network.description["export"]
    return Row(RUNTIMES[Path(str(network.path)).suffix.lower()], str(export.get("precision")), str(network.path))


def _main(argv: list[str]) -> int:
    """Memory process entry: prints ``{"peak_mb": ...}`` or ``{"error": ...}`` (a user's mistake)."""
    try:
        peak = _measure_here(json.loads(argv[0]))
    except LRFormerError as exc:
        print(json.dumps({"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0]}))
        return 2
    print(json.dumps({"peak_mb": peak}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
