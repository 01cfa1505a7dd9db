"""Frames/s of ``lrformer predict`` on a video: decoding, the network and encoding overlapped.

Usage::

    python benchmarks/predict_video.py [--frames 48] [--size 360 640] [--batch-size 4] [--threads 2] [--repeat 3] [--small]

Writes a synthetic photo-like mp4 (``--frames`` frames of ``--size`` H W at 25 fps), then runs the
real command on it ``--repeat`` times with seeded LRFormer-T weights (150 classes; ``--small``: a
LRFormer a tenth of T's width, so that decoding and encoding weigh as they do next to a GPU) into a fresh
``--out`` with every video output (overlay and panel videos, a label PNG per frame, class
fractions), and prints the frames/s of the job's summary and the wall time of the whole command.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def write_clip(path: Path, frames: int, size: tuple[int, int]) -> None:
    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for index in range(frames):  # a moving gradient with a few shapes: compresses like footage
        frame = np.dstack([(xx + 4 * index) % 256, (yy + 2 * index) % 256, (xx + yy) / 4 % 256]).astype(np.uint8)
        for _ in range(3):
            x, y = rng.integers(0, width - 60), rng.integers(0, height - 60)
            cv2.rectangle(frame, (int(x), int(y)), (int(x) + 60, int(y) + 40), rng.integers(0, 255, 3).tolist(), -1)
        writer.write(frame)
    writer.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, nargs=2, default=[360, 640], metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="a network a tenth of LRFormer-T's width")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        import torch

        from lrformer import create_model

        weights, model = Path(folder) / "seeded.pth", Path(folder) / "model.json"
        config = {"num_classes": 150}
        if args.small:
            config.update(embed_dims=[16, 32, 80, 64], depths=[1, 1, 2, 1], num_heads=[2, 4, 10, 16], head_channels=32,
                          head_num_heads=8)  # fmt: skip
        torch.manual_seed(0)
        torch.save(create_model("lrformer_t", **config).state_dict(), weights)
        model.write_text(json.dumps({"name": "lrformer_t", **config}))
        clip = Path(folder) / "clip.mp4"
        write_clip(clip, args.frames, tuple(args.size))
        for run in range(args.repeat):
            out = Path(folder) / f"out{run}"
            command = [sys.executable, "-m", "lrformer", "predict", "--model", str(model), "--weights", str(weights), str(clip), "--out", str(out), "--batch-size", str(args.batch_size),
                       "--threads", str(args.threads), "--panel", "--frames", "--json"]  # fmt: skip
            began = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - began
            rate = re.search(r"([\d.]+) frames/s overall", done.stdout)
            print(f"run {run}: {rate[1] if rate else '?'} frames/s (job), {args.frames / wall:.2f} frames/s (wall, "
                  f"{wall:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
