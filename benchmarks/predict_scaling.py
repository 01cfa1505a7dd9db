"""Images/s of ``lrformer predict`` on a folder of photos: one process, then N processes under torchrun.

Usage::

    python benchmarks/predict_scaling.py --images 48 --processes 1 2 [--model lrformer_t] [--workers 1]

Draws ``--images`` synthetic photos of mixed sizes (photo-like: 384-640 short side, 512-900 long side), then runs the real command for each process count, each process on ``cores / N`` threads,
into a fresh ``--out``, and prints the wall time of the whole command (start-up, model load and
planning included) and the job's own images/s (from its summary: network + decoding + writing).
The label maps of every run are compared with the first run's, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

SIZES = [(512, 683), (480, 640), (600, 800), (512, 512), (384, 900), (640, 480)]


def photos(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(count):
        height, width = SIZES[index % len(SIZES)]
        image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
        cv2.imwrite(str(folder / f"photo{index:04d}.jpg"), image)


def run(processes: int, threads: int, folder: Path, out: Path, args: argparse.Namespace) -> tuple[float, str]:
    command = ["-m", "lrformer", "predict", "--model", args.model, "--weights", str(args.weights), str(folder),
               "--out", str(out),
               "--workers", str(args.workers), "--threads", str(threads), "--device", "cpu"]  # fmt: skip
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *command]
    began = time.perf_counter()
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})  # fmt: skip
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{command} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def labels(out: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(out.glob("*.png")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="lrformer_t")
    parser.add_argument("--workers", type=int, default=1, help="loader processes per predict process")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per process (default: cores / processes); label maps are compared between "
                        "runs with the same count (float sums depend on how a layer is split across threads)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        import torch

        import lrformer

        torch.manual_seed(0)  # one set of weights for every process of every run
        args.weights = Path(tmp) / "weights.pth"
        torch.save({"state_dict": lrformer.create_model(args.model).state_dict()}, args.weights)
        folder = Path(tmp) / "photos"
        folder.mkdir()
        photos(folder, args.images)
        by_threads: dict[int, str] = {}
        print(f"{args.images} photos, {args.model}, {os.cpu_count()} cores, {args.workers} loader worker(s) per process")
        print(f"{'processes':>9} {'threads each':>12} {'wall s':>8} {'images/s (wall)':>16}  job's own rate")
        for processes in args.processes:
            threads = args.threads or max(1, (os.cpu_count() or 1) // processes)
            out = Path(tmp) / f"out{processes}"
            seconds, printed = run(processes, threads, folder, out, args)
            rate = re.search(r"([\d.]+) images/s overall", printed)
            digest = by_threads.setdefault(threads, labels(out))
            same = "same labels as the first run with as many threads" if labels(out) == digest else "LABELS DIFFER"
            print(f"{processes:>9} {threads:>12} {seconds:>8.1f} {args.images / seconds:>16.2f}  "
                  f"{rate.group(1) if rate else '?'} images/s  ({same})")  # fmt: skip


if __name__ == "__main__":
    main()
