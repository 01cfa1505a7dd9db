"""Label converters: Cityscapes ``labelIds`` → 19 train ids, COCO-Stuff stuffthingmaps → 171 train ids."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, MissingFileError, UnknownNameError
from ..utils import atomic_path
from .datasets import read_label

CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
"""cityscapesScripts' ``labels.py``: every other id (void, parking, rail track, ...) → 255."""

COCO_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
"""The 11 COCO thing ids without annotations; the remaining 171 of 0..181 become train ids 0..170."""


def _lookup(mapping: dict[int, int]) -> np.ndarray:
    table = np.full(256, 255, dtype=np.uint8)
    for source, target in mapping.items():
        table[source] = target
    return table


CITYSCAPES_LUT = _lookup(CITYSCAPES_ID_TO_TRAIN_ID)
COCO_STUFF_LUT = _lookup({cid: i for i, cid in enumerate(c for c in range(182) if c not in COCO_UNUSED_IDS)})


def _convert_one(job: tuple[Path, Path, np.ndarray, str]) -> str | None:
    source, target, table, dataset = job  # the name travels with the job: spawned workers get a copy of the table
    try:
        label = read_label(source)
    except InputError as exc:
        return str(exc)
    if label.max(initial=0) > 255:
        return f"{source}: value {label.max()} is not a {dataset} label id"
    with atomic_path(target) as tmp:
        if not cv2.imwrite(str(tmp), table[label.astype(np.uint8)]):
            return f"{target}: cannot write"
    return None


def convert(kind: str, root: str | Path, workers: int = 4, force: bool = False) -> tuple[int, int, list[str]]:
    """Convert every source label map under ``root``; returns (converted, skipped, errors).

    ``cityscapes``: ``gtFine/**/*_gtFine_labelIds.png`` → ``*_gtFine_labelTrainIds.png`` beside it.
    ``cocostuff``: ``annotations/**/<id>.png`` (the extracted stuffthingmaps) → ``<id>_labelTrainIds.png``.
    Existing outputs are skipped (idempotent) unless ``force``.
    """
    from tqdm import tqdm

    root = Path(root)
    if kind == "cityscapes":
        base, table = root / "gtFine", CITYSCAPES_LUT
        sources = sorted(base.rglob("*_gtFine_labelIds.png"))
        target = lambda p: p.with_name(p.name.replace("_labelIds.png", "_labelTrainIds.png"))  # noqa: E731
    elif kind == "cocostuff":
        base, table = root / "annotations", COCO_STUFF_LUT
        sources = sorted(p for p in base.rglob("*.png") if not p.name.endswith("_labelTrainIds.png"))
        target = lambda p: p.with_name(p.stem + "_labelTrainIds.png")  # noqa: E731
    else:
        raise UnknownNameError(f"unknown converter {kind!r}: cityscapes or cocostuff")
    if not base.is_dir():
        raise MissingFileError(f"{base} does not exist: ROOT must hold {base.name}/ ({kind} layout)")
    dataset = {"cityscapes": "Cityscapes", "cocostuff": "COCO-Stuff"}[kind]
    jobs = [(p, target(p), table, dataset) for p in sources if force or not target(p).exists()]
    errors: list[str] = []
    with multiprocessing.get_context("spawn").Pool(max(1, workers)) as pool:
        for error in tqdm(pool.imap_unordered(_convert_one, jobs, chunksize=16), total=len(jobs), file=sys.stderr):
            if error:
                errors.append(error)
    return len(jobs) - len(errors), len(sources) - len(jobs), errors
