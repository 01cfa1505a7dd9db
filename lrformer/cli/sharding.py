"""Sharing a ``lrformer predict`` job among the processes of a torchrun job, and resuming it.

The main process collects the inputs (files, folders and globs) and gives the list to every process,
which sorts it by path and looks at a slice of it (``i::world_size``): whether the input is already
done (:func:`is_done`) and, if not, how many pixels it has (image header, or frames × frame size of a
video). The slices are gathered, so every process knows every input, and the inputs still to do are dealt
out by pixel count, largest first, each to the process with the fewest pixels so far (ties: the
lower rank): a deterministic plan in which no process gets all the large images. A process whose
share is empty just joins the summary.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from pathlib import Path

from .inputs import FRAMES_FOLDER


@dataclass(slots=True)
class Job:
    """One input of the job: its file, output name, kind, and the plan's verdict."""

    path: Path
    name: str
    video: bool
    pixels: int = 0
    done: bool = False
    rank: int = 0


class Outputs:
    """The files (relative to ``--out``) ``predict`` writes for each input with the given options."""

    def __init__(self, args) -> None:
        self.image = [p for p, on in (("{}.png", True), ("{}_overlay.jpg", not args.no_overlay),
                                      ("{}_panel.jpg", args.panel), ("{}.json", args.json)) if on]  # fmt: skip
        self.video = [p for p, on in (("{}_overlay.mp4", not args.no_overlay), ("{}_panel.mp4", args.panel),
                                      ("{}.json", args.json), (FRAMES_FOLDER, args.frames)) if on]  # fmt: skip

    def of(self, job: Job) -> list[str]:
        """The outputs asked for ``job``."""
        return [pattern.format(job.name) for pattern in (self.video if job.video else self.image)]

    def written(self, job: Job, out: Path) -> list[str]:
        """The outputs asked for ``job`` that are in ``out``."""
        return [output for output in self.of(job) if (out / output).exists()]


@dataclass(frozen=True, slots=True)
class Finished:
    """What the latest manifest record says about an input (all that planning needs of it)."""

    input: str
    name: str
    outputs: frozenset[str]
    settings: str | None
    failed: bool = False


def finished(entry: dict) -> Finished:
    """What planning needs of a manifest record."""
    return Finished(entry["input"], entry["name"], frozenset(entry["outputs"]), entry.get("settings"),
                    entry["status"] != "done")  # fmt: skip


OUTPUT_SETTINGS = ("model", "weights", "num_classes", "precision", "pipeline", "scale", "mode", "crop", "stride",
                   "size_divisor", "no_flip", "tta", "tta_ratios", "no_fast", "max_attention_elements", "palette",
                   "opacity", "no_legend")  # fmt: skip
"""The ``predict`` options that shape the outputs (which outputs are written is :class:`Outputs`'
business; devices, threads, batches and workers do not change them)."""


def settings_fingerprint(args) -> str:
    """A short hash of :data:`OUTPUT_SETTINGS`, local files (weights, model YAML, palette YAML) by
    their content (:func:`file_identity`, so a copy staged elsewhere counts as the same): outputs
    recorded with another fingerprint were made by another model or settings."""
    import hashlib
    import json

    settings = {key: getattr(args, key, None) for key in OUTPUT_SETTINGS}
    for key, value in settings.items():
        if isinstance(value, str) and os.path.isfile(value):  # a model file's checkpoint only when it is used
            files = _files_of(value, pretrained=key == "model" and not getattr(args, "weights", None))
            settings[key] = [file_identity(part) for part in files]
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _files_of(path: str, pretrained: bool = False) -> list[str]:
    """The files a setting's file stands for: itself, an OpenVINO graph's ``.bin`` weights, and
    with ``pretrained`` the local checkpoint a model YAML/JSON names as ``pretrained`` (``--weights``
    replaces it)."""
    files, suffix = [path], os.path.splitext(path)[1].lower()
    if suffix == ".xml":
        files.append(os.path.splitext(path)[0] + ".bin")
    elif pretrained and suffix in (".yaml", ".yml", ".json"):
        from ..errors import LRFormerError
        from ..models.factory import read_model_file

        try:
            checkpoint = read_model_file(path).get("pretrained")  # (relative to the file, as the model loads it)
        except LRFormerError:  # not a model file: loading it says so
            checkpoint = None
        if isinstance(checkpoint, str):
            files.append(checkpoint)
    return [file for file in files if os.path.isfile(file)]


def file_identity(path: str, edge: int = 1 << 20) -> str:
    """The file's size and a hash of its first and last ``edge`` bytes (the whole of a small file):
    cheap for a gigabyte checkpoint, and two checkpoints of one training run differ in both."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(handle.read(edge))
        if size > edge:
            handle.seek(max(size - edge, edge))
            digest.update(handle.read(edge))
    return f"{size}:{digest.hexdigest()[:16]}"


def is_done(job: Job, wanted: Outputs, out: Path, earlier: Finished | None) -> bool:
    """Whether an earlier run finished ``job``: not when its latest record says it failed (it is
    retried); else every requested output is there (files are written atomically, so a file that
    exists is complete), a video's per-frame folder only with a ``done`` record listing it."""
    if earlier is not None and earlier.failed:
        return False
    outputs = wanted.of(job)
    if earlier is not None and set(outputs) <= earlier.outputs:  # (found by job.name)
        return all((out / output).exists() for output in outputs)
    return all((out / output).is_file() for output in outputs)


def pixel_count(path: Path, video: bool) -> int:
    """Pixels of an image (from its header) or of all frames of a video; 0 when unreadable (it fails later)."""
    try:
        if video:
            import cv2

            capture = cv2.VideoCapture(str(path))
            try:
                props = (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT)
                frames, width, height = (max(int(capture.get(p)), 0) for p in props)
            finally:
                capture.release()
            return max(frames, 1) * width * height
        from PIL import Image

        with Image.open(path) as image:
            return image.width * image.height
    except Exception:  # any unreadable header: the decoder reports it when the input is run
        return 0


def deal(jobs: list[Job], world_size: int) -> None:
    """Give each job that is not done a ``rank``: largest first, to the least-loaded process."""
    heap = [(0, rank) for rank in range(world_size)]
    for job in sorted((j for j in jobs if not j.done), key=lambda j: -j.pixels):  # stable: ties by path
        load, rank = heapq.heappop(heap)
        job.rank = rank
        heapq.heappush(heap, (load + max(job.pixels, 1), rank))


def plan(
    jobs: list[Job], wanted: Outputs, out: Path, earlier: dict[str, Finished], overwrite: bool, rank: int,
    world_size: int, balance: bool = True,
) -> None:  # fmt: skip
    """Sort ``jobs`` by path, look at this process's slice (done? else pixels), gather every slice
    and deal the inputs still to do (see the module docstring). Collective under torchrun. Without
    ``balance`` (``--shard K/N``: independent runs that cannot talk), share ``rank`` is every
    ``world_size``-th input by path, the same in every run; the others are marked ``rank -1``."""
    from ..engine.distributed import all_gather_objects, wait_for_every_rank

    jobs.sort(key=lambda job: os.fspath(job.path))

    def done(job: Job) -> bool:
        return not overwrite and is_done(job, wanted, out, earlier.get(job.name))

    if not balance:
        for index, job in enumerate(jobs):
            job.rank = rank if index % world_size == rank else -1
            job.done = job.rank == rank and done(job)
        return
    mine = []
    for job in jobs[rank::world_size]:
        finished = done(job)
        mine.append((finished, 0 if finished else pixel_count(job.path, job.video)))
    wait_for_every_rank()  # slices of one folder may take a rank much longer than another
    for start, slice_ in enumerate(all_gather_objects(mine)):
        for job, (finished, pixels) in zip(jobs[start::world_size], slice_):
            job.done, job.pixels = finished, pixels
    deal(jobs, world_size)
