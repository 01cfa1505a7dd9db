"""What int8 costs in accuracy, and what keeping layers in float buys back (issue 26).

Usage (from the repository root, after ``lrformer demo``)::

    python benchmarks/int8_accuracy.py                         # the demo's checkpoint, 512×512 inputs
    python benchmarks/int8_accuracy.py --scale 256 128         # the demo's own test scale (128×128 inputs)
    python benchmarks/int8_accuracy.py --weights w.pth --data ade20k --data-root data/ --variants default

For each quantisation variant (:data:`VARIANTS`: what NNCF is told to keep in float), the model is
exported as ``lrformer export --dynamic --int8`` exports it (:mod:`lrformer.deploy.exporting`),
calibrated on ``--calib-size`` training images prepared by the test pipeline, and compared with the
float PyTorch model on the held-out validation images (:func:`lrformer.deploy.exporting.held_out_agreement`:
pixel agreement and the mIoU of both). The table also gives the export time and the latency of each
IR at the benchmark's input size (OpenVINO, ``--threads`` threads, all IRs and the float IR timed
interleaved, :func:`lrformer.benchmarking.time_passes`), so each choice shows what it costs and gains.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import lrformer
from lrformer.benchmarking import latency, time_passes
from lrformer.data.datasets import load_spec
from lrformer.deploy.calibration import from_dataset, network_input
from lrformer.deploy.exporting import ExportSpec, export_float, export_int8, held_out_agreement, pipeline_config
from lrformer.deploy.openvino import compile_cpu, read_model
from lrformer.deploy.quantize import FLOAT_MODULES, Int8Settings
from lrformer.utils import CACHE_DIR

FIRST, LAST = FLOAT_MODULES[0], FLOAT_MODULES[1]
ATTENTION = r".*\.attn"  # the attention itself (pooling, scaled dot product, resize), not its projections
RESIZES = ("Interpolate",)
QUERY_HEADS = r"decode_head\.(cls_embed|mask_embed)"  # LRFormer+'s classifier: the class and mask embeddings
VARIANTS = {
    "all int8 (NNCF defaults)": Int8Settings(model_type=None, float_modules=(), float_types=()),
    "transformer rules": Int8Settings(float_modules=(), float_types=()),
    "transformer + first conv float": Int8Settings(float_modules=(FIRST,), float_types=()),
    "transformer + classifier float": Int8Settings(float_modules=(LAST,), float_types=()),
    "transformer + first conv, classifier float": Int8Settings(float_modules=(FIRST, LAST), float_types=()),
    "transformer + first conv, classifier, resizes float": Int8Settings(
        float_modules=(FIRST, LAST), float_types=RESIZES
    ),
    "transformer + first conv, classifier, resizes, attention float": Int8Settings(
        float_modules=(FIRST, LAST, ATTENTION), float_types=RESIZES
    ),
    "transformer + first conv, classifier, resizes, query heads float": Int8Settings(
        float_modules=(FIRST, LAST, QUERY_HEADS), float_types=RESIZES
    ),
    "NNCF defaults + first conv, classifier, resizes float": Int8Settings(
        model_type=None, float_modules=(FIRST, LAST), float_types=RESIZES
    ),
    "NNCF defaults + first conv, classifier, resizes, attention float": Int8Settings(
        model_type=None, float_modules=(FIRST, LAST, ATTENTION), float_types=RESIZES
    ),
}
"""Quantisation variants by name; ``default`` names :class:`Int8Settings()` (what ``--int8`` does)."""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights", default="work_dirs/demo/iter_500.pth", help="a checkpoint written by lrformer train"
    )
    parser.add_argument("--data", default=str(CACHE_DIR / "demo_data" / "dataset.yaml"), help="dataset name or YAML")
    parser.add_argument("--data-root", default=str(CACHE_DIR / "demo_data"))
    parser.add_argument("--scale", nargs=2, type=int, default=(512, 512), metavar=("LONG", "SHORT"),
                        help="keep-ratio resize bound of the test pipeline (default 512 512: the demo's 128×128 "
                        "images become 512×512 network inputs)")  # fmt: skip
    parser.add_argument("--calib-size", type=int, default=100)
    parser.add_argument("--held-out", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names from VARIANTS, or 'default'")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    settings = {v: Int8Settings() if v == "default" else VARIANTS[v] for v in args.variants}
    model = lrformer.reparameterize_model(lrformer.create_model(args.weights).eval())
    spec = load_spec(args.data)
    images = from_dataset(spec, args.data_root, size=args.calib_size, held_out=args.held_out)
    config = replace(pipeline_config(model, images), scale=tuple(args.scale))
    size = tuple(network_input(images.held_out[0], config).shape[2:])  # the network input of the first image
    export = ExportSpec("openvino", (1, 3, 512, 512), dynamic=True)
    print(f"{args.weights}: {len(images.calibration)} calibration images, {len(images.held_out)} held-out images, "
          f"scale {tuple(args.scale)}, {args.threads} threads")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        export_float(model, Path(folder) / "fp32.xml", export)
        print(f"fp32 export (dynamic ONNX -> OpenVINO): {time.perf_counter() - began:.0f} s", flush=True)
        rows, files = [], {"fp32": Path(folder) / "fp32.xml"}
        for index, (name, setting) in enumerate(settings.items()):
            files[name] = Path(folder) / f"int8_{index}.xml"
            began = time.perf_counter()
            export_int8(model, files[name], export, images, config, setting)
            seconds = time.perf_counter() - began
            agreement = held_out_agreement(model, files[name], export, images, config)
            rows.append((name, seconds, agreement))
            print(f"{name}: {agreement.summary()} ({seconds:.0f} s)", flush=True)
        timings = timed(files, size, args.threads)
    report(rows, timings, size)


def timed(files: dict[str, Path], size: tuple[int, int], threads: int) -> dict[str, float]:
    """Median latency (ms) of each IR on one ``size`` input, interleaved."""
    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    runs = {name: compile_cpu(read_model(path), threads) for name, path in files.items()}
    times = time_passes({name: (lambda run=run: run(x)) for name, run in runs.items()}, warmup=2, iters=10)
    return {name: latency(values, 1)["median_ms"] for name, values in times.items()}


def report(rows: list, timings: dict[str, float], size: tuple[int, int]) -> None:
    print(f"\n| variant | pixel agreement | mIoU fp32 | mIoU int8 | Δ mIoU | export s | ms at {size[0]}×{size[1]} |")
    print("|---|---|---|---|---|---|---|")
    print(f"| fp32 (OpenVINO) | | | | | | {timings['fp32']:.0f} |")
    for name, seconds, agreement in rows:
        float_miou, int8_miou = agreement.miou_float * 100, agreement.miou_quantised * 100
        print(f"| {name} | {agreement.pixels * 100:.2f}% | {float_miou:.2f} | {int8_miou:.2f} | "
              f"{int8_miou - float_miou:+.2f} | {seconds:.0f} | {timings[name]:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
