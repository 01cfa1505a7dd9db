"""An ADE20K-shaped stand-in for measuring the training data pipeline without the real dataset.

Writes ``ROOT/ADEChallengeData2016/{images,annotations}/{training,validation}``: JPEG photos of
683×512 (ADE20K's most common size, quality 95) drawn by :mod:`lrformer.data.synthetic`, and PNG
label maps with values in 0..150 (0: "other", ignored after ``reduce_zero_label``), so the shipped
ADE20K configs read it as they read the real dataset:

    python benchmarks/ade_like_data.py /tmp/ade_like --images 64
    lrformer benchmark --data configs/lrformer_t_ade20k.yaml --set data.root=/tmp/ade_like --workers 0 1 2

Decoding a JPEG of this size, the random resize to 2048×512 × [0.5, 2], the category-ratio crop,
the flip and the photometric distortion cost what they cost on ADE20K; the scenes have fewer
classes per image than ADE20K's (4 to 6), which makes the crop's retries (``cat_max_ratio``) rarer
or more frequent only where one class covers more than 3/4 of a crop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from lrformer.data.synthetic import draw_scene
from lrformer.utils import atomic_path

HEIGHT, WIDTH = 512, 683


def write_split(root: Path, split: str, count: int, seed: int) -> None:
    """``count`` image/label pairs of ``split`` (``training`` or ``validation``), skipping existing ones."""
    images, labels = root / "images" / split, root / "annotations" / split
    for i in range(count):
        stem = f"ADE_{split[:5]}_{i:08d}"
        if (images / f"{stem}.jpg").exists() and (labels / f"{stem}.png").exists():
            continue
        rng = np.random.default_rng([seed, i])
        image, label = draw_scene(rng, WIDTH)  # (683, 683): cut to 512 rows
        image, label = image[:HEIGHT], label[:HEIGHT]
        ade = rng.permutation(np.arange(1, 151))[label]  # each synthetic class → a random ADE class 1..150
        ade[rng.random(label.shape) < 0.02] = 0  # a few "other" pixels, as ADE20K has
        for path, array, params in (
            (images / f"{stem}.jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95]),
            (labels / f"{stem}.png", ade.astype(np.uint8), []),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                if not cv2.imwrite(str(tmp), array, params):
                    raise SystemExit(f"could not write {path}: check the folder is writable and has space")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder to hold ADEChallengeData2016 (created)")
    parser.add_argument("--images", type=int, default=64, help="training images (default 64)")
    args = parser.parse_args()
    root = args.root / "ADEChallengeData2016"
    write_split(root, "training", args.images, seed=0)
    write_split(root, "validation", 2, seed=1)
    print(f"wrote {args.images} training images under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
