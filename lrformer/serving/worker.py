"""The inference worker of ``lrformer serve``: one thread owns the model and takes prepared images
from a bounded queue, several at a time (micro-batching), so requests never run the network
concurrently and the queue can never grow without bound."""

from __future__ import annotations

import collections
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..errors import ServerBusyError, ServerClosingError
from ..inference import Predictor, PreparedImage

Busy, Closed = ServerBusyError, ServerClosingError
"""The former names of the errors :meth:`InferenceWorker.submit` raises."""


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
        max_queue: jobs waiting at most; :meth:`submit` raises :class:`~lrformer.errors.ServerBusyError` beyond.
        max_batch: jobs taken together; the predictor batches the views of equal network-input
            shape into one forward pass (1: no micro-batching).
    """

    def __init__(self, predictor: Predictor, max_queue: int = 32, max_batch: int = 8) -> None:
        self.predictor, self.max_batch = predictor, max_batch
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue + 1)  # + the stop marker
        self._max_queue = max_queue
        self._lock = threading.Lock()  # submit and close: no job can land behind the stop marker
        self._closed = False
        self.batches: collections.deque[int] = collections.deque(maxlen=1000)  # recent batch sizes
        self._thread = threading.Thread(target=self._run, name="lrformer-inference", daemon=True)
        self._thread.start()

    def submit(self, prepared: PreparedImage) -> Future:
        """Queue ``prepared``; the future resolves to its label map, or raises what inference raised."""
        job = Job(prepared)
        with self._lock:
            if self._closed:
                raise ServerClosingError("the server is shutting down")
            if self._queue.qsize() >= self._max_queue:
                raise ServerBusyError(f"busy: {self._max_queue} requests are already waiting; retry later")
            self._queue.put_nowait(job)
        return job.future

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self.max_batch:  # whatever else is waiting now
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:  # nothing can follow the stop marker: finish this batch, then stop
                    stop = True
                    break
                jobs.append(job)
            self._run_batch(jobs)

    def _run_batch(self, jobs: list[Job]) -> None:
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # skip timed-out ones
        if not jobs:
            return
        self.batches.append(len(jobs))
        try:
            labels = self.predictor.predict_prepared([job.prepared for job in jobs], self.max_batch)
            if len(labels) != len(jobs):
                raise RuntimeError(f"the predictor returned {len(labels)} label maps for {len(jobs)} images")
        except Exception as exc:  # reported to every request of the batch; the worker carries on
            for job in jobs:
                job.future.set_exception(exc)
            return
        for job, label in zip(jobs, labels):
            job.future.set_result(label)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish every queued job, then stop the thread (waiting ``timeout`` s at most)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put_nowait(None)  # the queue keeps one place for it
        self._thread.join(timeout)
