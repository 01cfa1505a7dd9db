"""The speed targets of exported models (issue 26), side by side on the CPU.

Usage (from the repository root; run it on a quiet machine)::

    python benchmarks/deploy_speed.py                  # latency at 512×512, then predictor memory at 2048×2048
    python benchmarks/deploy_speed.py --no-memory      # latency only

Latency: LRFormer-T (150 classes, seeded random weights in the released layout: latency does not
depend on the values), batch 1, ``--threads`` CPU threads, one process, every implementation's
passes interleaved round by round (:func:`lrformer.benchmarking.time_passes`) so that machine noise
hits all alike:

- ``torch official``: the official implementation's structure in eager mode
  (``official_reference.py``, loaded as ``compare_official.py`` does);
- ``torch fast path``: ``lrformer``'s reparameterized model, called as the predictor calls it;
- ``onnxruntime fp32``, ``openvino fp32``, ``openvino int8``: the model exported at 512×512 as
  ``lrformer export`` exports it (:func:`lrformer.deploy.speed.export_rows`; int8 calibrated on
  synthetic scenes, which is enough for speed), loaded by :func:`lrformer.deploy.load_network`;
- ``onnxruntime int8``: the ONNX file quantised by ONNX Runtime's ``quantize_static`` (QDQ,
  per-channel int8 weights, uint8 activations, convolutions and matrix products only, as NNCF
  keeps LayerNorm and softmax in float; the same calibration scenes): ``lrformer export``
  does not write it, it is here to show why.

Memory: peak resident set of ``lrformer predict`` on one 2048×2048 image (``--workers 0
--no-overlay``), each model in a fresh process: with the model's own test pipeline (network input
512×512) and with ``--scale 2048 2048`` (network input 2048×2048; exports made at that size).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_official import build, variant  # noqa: E402

from lrformer.benchmarking import latency, peak_resident_mb, time_passes  # noqa: E402
from lrformer.deploy.calibration import network_input  # noqa: E402
from lrformer.deploy.metadata import METADATA_KEY, encode  # noqa: E402
from lrformer.deploy.onnx import read_description  # noqa: E402
from lrformer.deploy.runtimes import load_network  # noqa: E402
from lrformer.deploy.speed import export_rows, planned_rows, synthetic_scenes  # noqa: E402
from lrformer.inference.network import TorchNetwork  # noqa: E402
from lrformer.inference.predictor import model_defaults  # noqa: E402

TARGETS = (  # (row, reference, ratio): the targets
    ("openvino fp32", "torch fast path", 1.3),
    ("openvino int8", "torch fast path", 2.5),
    ("openvino int8", "torch official", 5.0),
)


def onnxruntime_int8(fp32: Path, out: Path, model: torch.nn.Module, shape: tuple, folder: Path) -> None:
    """``fp32`` quantised by ONNX Runtime (static, QDQ) on the benchmark's calibration scenes,
    carrying the float file's description marked int8."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    config = model_defaults(model)
    inputs = [{"image": network_input(path, config, shape)} for path in synthetic_scenes(folder).calibration]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])  # fmt: skip
    description = read_description(fp32)
    entry = {**description.pop("export"), "precision": "int8",
             "quantization": {"tool": "onnxruntime", "format": "QDQ", "per_channel": True,
                              "ops": ["Conv", "MatMul", "Gemm"]}}  # fmt: skip
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {METADATA_KEY: encode(description, entry)})
    onnx.save(proto, str(out))


def exports(model: torch.nn.Module, shape: tuple, folder: Path, onnx_int8: bool = True) -> dict[str, str]:
    """The exported files, by row label (those already in ``folder`` are reused)."""
    began = time.perf_counter()
    backends = ("onnxruntime", "openvino") if onnx_int8 else ("openvino",)
    planned = {row.label: row.path for row in planned_rows(backends, True, folder)}
    if not all(Path(path).is_file() for path in planned.values()):
        export_rows(model, backends, True, shape, folder)
    files = dict(planned)
    if onnx_int8:
        files["onnxruntime int8"] = str(folder / "model_ort_int8.onnx")
        if not Path(files["onnxruntime int8"]).is_file():
            onnxruntime_int8(Path(files["onnxruntime fp32"]), Path(files["onnxruntime int8"]), model, shape, folder)
    print(
        f"exports {', '.join(files)} at {shape[2]}x{shape[3]} ready in {time.perf_counter() - began:.0f} s", flush=True
    )
    return files


def export_small(args: argparse.Namespace, folder: Path) -> tuple[dict[str, str], torch.nn.Module, torch.nn.Module]:
    """The ``--size`` exports (by row label), the official-structure model and the fast path."""
    config, state_dict = variant("lrformer_t", 150)
    official, fast = build("official", config, state_dict), build("fast", config, state_dict)
    return exports(fast, (1, 3, *args.size), folder), official, fast


def compare_latency(args: argparse.Namespace, folder: Path) -> None:
    """Print the latency table and the targets."""
    files, official, fast = export_small(args, folder)
    shape = (1, 3, *args.size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    networks = {label: load_network(path, "cpu", args.threads) for label, path in files.items()}
    fast_network = TorchNetwork(fast, "cpu", fast=False)
    runs = {"torch official": lambda: official(x), "torch fast path": lambda: fast_network(x)}
    runs.update({label: (lambda network=network: network(x)) for label, network in networks.items()})
    load = os.getloadavg()[0]
    with torch.no_grad():
        times = time_passes(runs, args.warmup, args.iters)
    print(f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after the timing (2 cores)")
    figures = {label: latency(samples, 1) for label, samples in times.items()}
    base, official_ms = figures["torch fast path"]["median_ms"], figures["torch official"]["median_ms"]
    print(
        f"\n{'implementation':<18} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'vs fast path':>13} {'vs official':>12}"
    )
    for label, figure in figures.items():
        print(f"{label:<18} {figure['median_ms']:>10.1f} {figure['p90_ms']:>8.1f} {min(times[label]) * 1e3:>8.1f} "
              f"{base / figure['median_ms']:>12.2f}x {official_ms / figure['median_ms']:>11.2f}x")  # fmt: skip
    print()
    for row, reference, ratio in TARGETS:
        achieved = figures[reference]["median_ms"] / figures[row]["median_ms"]
        print(
            f"{row} vs {reference}: {achieved:.2f}x (target >= {ratio}x): {'met' if achieved >= ratio else 'NOT met'}"
        )
    runs.clear()
    for label in reversed(list(networks)):  # OpenVINO models freed last-loaded first (lrformer.deploy.speed._release)
        del networks[label]


def predictor_memory(args: argparse.Namespace, folder: Path, small: dict[str, str]) -> None:
    """Peak memory of ``lrformer predict`` on a 2048×2048 image, each model in a fresh process."""
    from lrformer import create_model, reparameterize_model
    from lrformer.data.synthetic import draw_scene
    from lrformer.image.io import save_image

    image = folder / "photo_2048.png"
    save_image(image, draw_scene(np.random.default_rng(0), 2048)[0])
    torch.manual_seed(0)
    large = exports(reparameterize_model(create_model("lrformer_t")), (1, 3, 2048, 2048), folder / "2048", False)
    cases = [("model's pipeline (network 512x512)", small, None), ("--scale 2048 2048 (network 2048x2048)", large,
                                                                     ["--scale", "2048", "2048"])]  # fmt: skip
    print(f"\npeak memory of lrformer predict on a 2048x2048 image ({args.threads} threads, a process each)")
    for name, files, scale in cases:
        for label in ("torch fast path", "openvino fp32", "openvino int8"):
            weights = ["--model", "lrformer_t"] if label.startswith("torch") else ["--weights", files[label]]
            options = [str(image), "--out", str(folder / "out"), "--threads", str(args.threads), "--workers", "0",
                       "--no-overlay", "--device", "cpu", *weights, *(scale or [])]  # fmt: skip
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(options)], capture_output=True,
                                  text=True, check=True)  # fmt: skip
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {name:<38} {label:<16} {result['peak_mb']:>7.0f} MB  ({result['seconds']:.1f} s)", flush=True)


def child(options: list[str]) -> None:
    """A memory process: ``lrformer predict`` with ``options``, then its peak resident set."""
    from lrformer.cli.main import main as lrformer

    began = time.perf_counter()
    code = lrformer(["predict", *options])
    if code:
        raise SystemExit(code)
    print(json.dumps({"peak_mb": peak_resident_mb(), "seconds": time.perf_counter() - began}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10, help="timed rounds (each runs every implementation once)")
    parser.add_argument("--no-memory", action="store_true", help="skip the predictor's memory at 2048x2048")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency table")
    parser.add_argument(
        "--work", default=None, help="folder for the exports, reused when already there (default: a temporary one)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="deploy-speed-") as temporary:
        folder = Path(args.work or temporary)
        if not args.no_latency:
            compare_latency(args, folder)
        if not args.no_memory:
            predictor_memory(args, folder, export_small(args, folder)[0])


if __name__ == "__main__":
    main()
