"""Do float32 exports give PyTorch's labels? LRFormer and LRFormer+ at four sizes, two aspect ratios.

Usage (from the repository root)::

    python benchmarks/export_agreement.py                       # the models below, 3 images per size
    python benchmarks/export_agreement.py --images 5 --models lrformer_t_plus

Each model is exported once with ``--dynamic`` for each runtime, as ``lrformer export`` does
(:func:`lrformer.deploy.exporting.export_float`: ONNX for ONNX Runtime, the OpenVINO IR converted
from it), and run at 384×384, 512×512, 384×768 and 512×1024 on synthetic scenes
(:func:`lrformer.data.synthetic.draw_scene`, resized and normalised as the test pipeline
normalises). For each runtime and size the table gives the share of pixels whose label (the
argmax of the scores) is PyTorch's, and the largest score difference relative to the largest
score. PyTorch is the plain eval-mode model, as the export checks compare with.

Models: the demo's trained LRFormer-T (``work_dirs/demo/iter_500.pth``, when it is there), and
LRFormer-T and LRFormer-T+ with seeded random weights and 150 classes (random weights have more
near-ties between classes than trained ones, so their agreement is the harder case).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

import lrformer
from lrformer.data.synthetic import draw_scene
from lrformer.deploy.exporting import ExportSpec, export_float
from lrformer.deploy.runtimes import load_network
from lrformer.image.transforms import normalize

SIZES = ((384, 384), (512, 512), (384, 768), (512, 1024))
DEMO = "work_dirs/demo/iter_500.pth"
RUNTIMES = {"onnxruntime": ("onnx", "model.onnx"), "openvino": ("openvino", "model.xml")}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["demo", "lrformer_t", "lrformer_t_plus"],
                        help="'demo' (the demo's checkpoint), variant names, or checkpoint paths")  # fmt: skip
    parser.add_argument("--images", type=int, default=3, help="synthetic scenes per size")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def model_of(name: str) -> torch.nn.Module:
    """The eval-mode model ``name`` names (seeded random weights for a variant name)."""
    torch.manual_seed(0)
    if name == "demo":
        name = DEMO
    if Path(name).is_file():
        return lrformer.create_model(name).eval()
    return lrformer.create_model(name, num_classes=150).eval()


def inputs(count: int, size: tuple[int, int]) -> list[torch.Tensor]:
    """``count`` normalised ``(1, 3, H, W)`` synthetic scenes of ``size``."""
    rng = np.random.default_rng(0)
    scenes = [draw_scene(rng, max(size))[0] for _ in range(count)]
    return [normalize(cv2.resize(scene, size[::-1], interpolation=cv2.INTER_LINEAR))[None] for scene in scenes]


def agreement(model: torch.nn.Module, network, images: list[torch.Tensor]) -> tuple[float, float]:
    """(share of identical labels, max |Δ score| / max |score|) of ``network`` against ``model``."""
    same = total = 0
    worst = 0.0
    for x in images:
        with torch.no_grad():
            expected = model(x)
        scores = network(x)
        same += int((scores.argmax(1) == expected.argmax(1)).sum())
        total += expected[:, 0].numel()
        worst = max(worst, float((scores - expected).abs().max() / expected.abs().max()))
    return same / total, worst


def main() -> None:
    args = arguments()
    torch.set_num_threads(args.threads)
    print("| model | runtime | " + " | ".join(f"{h}×{w}" for h, w in SIZES) + " |")
    print("|---|---|" + "---|" * len(SIZES))
    for name in args.models:
        model = model_of(name)
        for runtime, (format, file) in RUNTIMES.items():
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / file
                export_float(model, path, ExportSpec(format, (1, 3, 512, 512), dynamic=True))
                network = load_network(path, "cpu", threads=args.threads)
                cells = []
                for size in SIZES:
                    share, worst = agreement(model, network, inputs(args.images, size))
                    cells.append(f"{share * 100:.3f}% ({worst:.1e})")
                del network
            print(f"| {name} | {runtime} fp32 | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
