"""Sharing a ``lrformer predict`` job among the processes of a torchrun job, and resuming it.

Every process collects the same inputs (files, folders and globs expand the same way everywhere),
sorts them by path and looks at a slice of them (``i::world_size``): whether the input is already
done (:func:`is_done`) and how many pixels it has (image header, or frames × frame size of a video).
The slices are gathered, so every process knows every input, and the inputs still to do are dealt
out by pixel count, largest first, each to the process with the fewest pixels so far (ties: the
lower rank): a deterministic plan in which no process gets all the large images. A process whose
share is empty just joins the summary.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import FRAMES_FOLDER


@dataclass
class Job:
    """One input of the job: its file, output name, kind, and the plan's verdict."""

    path: Path
    name: str
    video: bool
    pixels: int = 0
    done: bool = False
    rank: int = 0
    outputs: list[str] = field(default_factory=list)


def requested_outputs(name: str, video: bool, args) -> list[str]:
    """The files (relative to ``--out``) ``predict`` writes for an input named ``name`` with these options."""
    if video:
        wanted = [("{}_overlay.mp4", not args.no_overlay), ("{}_panel.mp4", args.panel), ("{}.json", args.json),
                  (FRAMES_FOLDER, args.frames)]  # fmt: skip
    else:
        wanted = [("{}.png", True), ("{}_overlay.jpg", not args.no_overlay), ("{}_panel.jpg", args.panel),
                  ("{}.json", args.json)]  # fmt: skip
    return [pattern.format(name) for pattern, on in wanted if on]


def is_done(job: Job, out: Path, earlier: dict | None) -> bool:
    """Whether an earlier run finished ``job``: every requested output is there (files are written
    atomically, so a file that exists is complete); a video's per-frame folder, and a picture an
    earlier run could not write (too large for a JPEG), count only with the manifest's ``done`` record
    listing what was written."""
    recorded = earlier is not None and earlier.get("status") == "done" and earlier.get("name") == job.name
    if recorded and all((out / output).exists() for output in earlier["outputs"]):
        return set(job.outputs) <= set(earlier["outputs"]) | set(earlier.get("unwritable") or [])
    return all((out / output).is_file() for output in job.outputs)


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
    jobs: list[Job], out: Path, earlier: dict[str, dict], overwrite: bool, rank: int, world_size: int,
    balance: bool = True,
) -> None:  # fmt: skip
    """Sort ``jobs`` by path, look at this process's slice (done? pixels?), gather every slice and
    deal the inputs still to do (see the module docstring). Collective under torchrun. Without
    ``balance`` (``--shard K/N``: independent runs that cannot talk), share ``rank`` is every
    ``world_size``-th input by path, the same in every run; the others are marked ``rank -1``."""
    from ..engine.distributed import all_gather_objects

    jobs.sort(key=lambda job: os.fspath(job.path))
    if not balance:
        for index, job in enumerate(jobs):
            job.rank = rank if index % world_size == rank else -1
            job.done = job.rank == rank and not overwrite and is_done(job, out, earlier.get(str(job.path)))
        return
    mine = [
        (not overwrite and is_done(job, out, earlier.get(str(job.path))), pixel_count(job.path, job.video))
        for job in jobs[rank::world_size]
    ]
    for start, slice_ in enumerate(all_gather_objects(mine)):
        for job, (done, pixels) in zip(jobs[start::world_size], slice_):
            job.done, job.pixels = done, pixels
    deal(jobs, world_size)
