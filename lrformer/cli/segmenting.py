"""The work of one ``lrformer predict`` process: its share of the images and videos segmented and
written, each input's result added to the manifest, and one progress bar for the whole job.

Decoding overlaps the network (``--workers`` loader processes decode and prepare the next images)
and so does encoding: a writer thread encodes and writes each image's outputs while the network runs
on the next batch, at most two batches behind.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .manifest import Manifest, record
from .sharding import Job


class Progress:
    """One progress bar for the whole job, shown by the main process: every process adds what it
    finished to counters in the job's store, and a thread of the main process shows their sum
    (also while it waits for the others at the end)."""

    def __init__(self, total: int, is_main: bool) -> None:
        from tqdm import tqdm

        from ..engine.distributed import SharedCounter

        self.done, self.failed = SharedCounter("predict/done"), SharedCounter("predict/failed")
        self.bar = tqdm(total=total, unit="input", disable=not is_main or total < 2, file=sys.stderr)
        self._stop = threading.Event()
        self._thread = None
        if not self.bar.disable:
            self._thread = threading.Thread(target=self._follow, name="lrformer-progress", daemon=True)
            self._thread.start()

    def add(self, done: int, failed: int = 0) -> None:
        self.done.add(done)
        if failed:
            self.failed.add(failed)

    def _follow(self) -> None:
        while not self._stop.wait(0.5):
            self._show()

    def _show(self) -> None:
        self.bar.n = self.done.read()
        self.bar.set_postfix(failed=self.failed.read(), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._show()
        self.bar.close()


def segment_images(
    jobs: list[Job], predictor, outputs, args: argparse.Namespace, rank: int, manifest: Manifest, progress: Progress
) -> list[str]:
    """Segment the images of ``jobs`` into ``outputs``; returns the problems (a file that fails is
    recorded as failed and does not stop the run; a failed write stops it with one line)."""
    import torch

    from ..inference import PreparedImages

    dataset = PreparedImages([job.path for job in jobs], predictor.config, outputs.keep_image, args.max_pixels,
                             return_errors=True)  # fmt: skip
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.workers if jobs else 0, collate_fn=list, shuffle=False
    )
    problems: list[str] = []
    pending: deque[Future] = deque()

    def write(job: Job, prepared, label) -> tuple[dict, list[str]]:
        found = outputs.write(job.name, job.path, prepared.bgr, label)
        prepared.bgr = None  # drawn into; free it
        written = [o for o in job.outputs if (outputs.out / o).exists()]
        unwritable = [o for o in job.outputs if o not in written] if found else []  # too large for a JPEG
        return record(job.path, job.name, written, rank=rank, unwritable=unwritable), found

    def finish(records: list[dict], keep: int) -> None:
        while len(pending) > keep:
            entry, found = pending.popleft().result()  # a failed write raises here
            records.append(entry)
            problems.extend(found)

    with ThreadPoolExecutor(1, thread_name_prefix="lrformer-writer") as writer:
        for batch in loader:
            records: list[dict] = []
            for item in batch:
                if item.error:
                    problems.append(item.error)
                    records.append(record(jobs[item.index].path, jobs[item.index].name, [], item.error, rank))
            good = [item for item in batch if item.error is None]
            labels = predictor.predict_prepared([item.prepared for item in good], args.batch_size) if good else []
            for item, label in zip(good, labels):
                pending.append(writer.submit(write, jobs[item.index], item.prepared, label))
            finish(records, keep=2 * args.batch_size)
            _report(records, manifest, progress)
        records = []
        finish(records, keep=0)
        _report(records, manifest, progress)
    return problems


def _report(records: list[dict], manifest: Manifest, progress: Progress) -> None:
    manifest.append(records)
    progress.add(len(records), sum(entry["status"] == "failed" for entry in records))


def segment_videos(
    jobs: list[Job], out: Path, predictor, legend, args: argparse.Namespace, rank: int, manifest: Manifest,
    progress: Progress,
) -> tuple[int, list[str]]:  # fmt: skip
    """Segment the videos of ``jobs`` one after the other (:func:`~.video.segment_video`); returns the
    frames segmented and the problems. An unreadable or unwritable video is recorded as failed and
    does not stop the run."""
    from ..errors import ImageReadError, VideoWriteError
    from .video import segment_video

    frames, problems = 0, []
    for job in jobs:
        try:
            done, errors, remarks = segment_video(job.path, job.name, out, predictor, legend, args, rank == 0)
        except (ImageReadError, VideoWriteError) as exc:
            problems.append(str(exc))
            _report([record(job.path, job.name, [], str(exc), rank)], manifest, progress)
            continue
        frames += done
        problems += errors
        for remark in remarks:
            print(f"note: {remark}", file=sys.stderr)
        written = [o for o in job.outputs if (out / o).exists()]
        _report([record(job.path, job.name, written, rank=rank)], manifest, progress)
    return frames, problems
