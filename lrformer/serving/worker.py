"""The inference worker of ``lrformer serve``: one thread owns the model and takes prepared images
from a bounded queue, several at a time (micro-batching), so requests never run the network
concurrently and the queue can never grow without bound."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..inference import Predictor, PreparedImage


class Busy(Exception):
    """The queue is full: the caller should answer 503 with ``Retry-After``."""


class Closed(Exception):
    """The worker is shutting down and takes no new work."""


@dataclass
class Job:
    """One request's prepared image and the future its label map ``(H, W)`` goes to."""

    prepared: PreparedImage
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


class InferenceWorker:
    """Runs ``predictor`` on a thread; :meth:`submit` enqueues, :meth:`close` drains and stops.

    Args:
        predictor: the predictor (model loaded once, fast path).
        max_queue: jobs waiting at most; :meth:`submit` raises :class:`Busy` beyond.
        max_batch: jobs taken together; the predictor batches the views of equal network-input
            shape into one forward pass (1: no micro-batching).
    """

    def __init__(self, predictor: Predictor, max_queue: int = 32, max_batch: int = 8) -> None:
        self.predictor, self.max_batch = predictor, max_batch
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self.batches: list[int] = []  # sizes of the batches run (for tests and stats)
        self._thread = threading.Thread(target=self._run, name="lrformer-inference", daemon=True)
        self._thread.start()

    def submit(self, prepared: PreparedImage) -> Future:
        """Queue ``prepared``; the future resolves to its label map, or raises what inference raised."""
        if self._closed:
            raise Closed("the server is shutting down")
        job = Job(prepared)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy(f"{self._queue.maxsize} requests are already waiting") from None
        return job.future

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _take(self) -> list[Job] | None:
        """The next jobs: one (waiting for it), then whatever else is queued, up to ``max_batch``."""
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # keep the stop marker for after this batch
                break
            jobs.append(job)
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            self.batches.append(len(jobs))
            try:
                labels = self.predictor.predict_prepared([job.prepared for job in jobs], self.max_batch)
            except Exception as exc:  # reported to every request of the batch
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            for job, label in zip(jobs, labels):
                job.future.set_result(label)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish every queued job, then stop the thread."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
