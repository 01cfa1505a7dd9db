"""The work of one ``lrformer predict`` process: its share of the images and videos segmented and
written, each input's result added to the manifest, and one progress bar for the whole job.

Decoding overlaps the network (``--workers`` loader processes decode and prepare the next images)
and so does encoding: a writer thread encodes and writes each image's outputs while the network runs
on the next batch, at most two batches behind.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .manifest import Manifest, record
from .sharding import Job, Outputs


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


@dataclass
class Recorder:
    """How a process reports each input's result: a manifest line (what was written, the error, who
    wrote it with which settings) and a step of the progress bar."""

    manifest: Manifest
    progress: Progress
    wanted: Outputs
    out: Path
    rank: int = 0
    settings: str | None = None
    shard: tuple[int, int] | None = None
    failed: int = 0
    """Inputs recorded as failed so far."""

    def entry(self, job: Job, problems: list[str] = ()) -> dict:
        """``job``'s manifest line: ``failed`` with the first problems, if any, else ``done``."""
        error = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        written = self.wanted.written(job, self.out)
        return record(job.path, job.name, written, error or None, self.rank, self.settings, self.shard)

    def report(self, entries: list[dict]) -> None:
        """Record ``entries``; stop (:class:`~lrformer.errors.JobAbortedError`) when another process
        of the job has failed, as its main process may have released ``--out`` to another job."""
        from ..engine.distributed import stop_if_aborted

        stop_if_aborted()
        self.manifest.append(entries)
        failed = sum(entry["status"] == "failed" for entry in entries)
        self.failed += failed
        self.progress.add(len(entries), failed)


def segment_images(jobs: list[Job], predictor, outputs, args: argparse.Namespace, recorder: Recorder) -> list[str]:
    """Segment the images of ``jobs`` into ``outputs``; returns the problems (a file that fails, or a
    picture no format could hold, is recorded as failed and does not stop the run; a failed write
    stops it with one line, after the writes under way are finished and recorded)."""
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
        found = outputs.write(job.name, job.path, prepared.bgr, label)  # pictures too large for any format
        prepared.bgr = None  # drawn into; free it
        return recorder.entry(job, found), found

    def finish(keep: int) -> None:
        """Record the writes done until at most ``keep`` are pending; after a failed write, wait for
        the others and raise its error."""
        entries, error = [], None
        while pending and (len(pending) > keep or error):
            try:
                entry, found = pending.popleft().result()
            except Exception as exc:
                error = error or exc
                continue
            entries.append(entry)
            problems.extend(found)
        recorder.report(entries)
        if error is not None:
            raise error

    with ThreadPoolExecutor(1, thread_name_prefix="lrformer-writer") as writer:
        try:
            for batch in loader:
                failed = [item for item in batch if item.error]
                problems.extend(item.error for item in failed)
                recorder.report([recorder.entry(jobs[item.index], [item.error]) for item in failed])
                good = [item for item in batch if item.error is None]
                labels = predictor.predict_prepared([item.prepared for item in good], args.batch_size) if good else []
                for item, label in zip(good, labels):
                    pending.append(writer.submit(write, jobs[item.index], item.prepared, label))
                finish(2 * args.batch_size)
        except BaseException:
            with contextlib.suppress(Exception):  # record the writes under way; the first error stands
                finish(0)
            raise
        finish(0)
    return problems


def segment_videos(
    jobs: list[Job], predictor, legend, args: argparse.Namespace, recorder: Recorder
) -> tuple[int, list[str]]:
    """Segment the videos of ``jobs`` one after the other (:func:`~.video.segment_video`); returns the
    frames segmented and the problems. An unreadable or unwritable video, or one with frames that
    could not be segmented, is recorded as failed and does not stop the run."""
    from ..errors import ImageReadError, VideoWriteError
    from .video import segment_video

    frames, problems = 0, []
    for job in jobs:
        try:
            done, errors, remarks = segment_video(job.path, job.name, recorder.out, predictor, legend, args,
                                                  recorder.rank == 0)  # fmt: skip
        except (ImageReadError, VideoWriteError) as exc:
            done, errors, remarks = 0, [str(exc)], []
        frames += done
        problems += errors
        for remark in remarks:
            print(f"note: {remark}", file=sys.stderr)
        recorder.report([recorder.entry(job, errors)])
    return frames, problems
