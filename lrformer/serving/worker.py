"""The inference worker of ``lrformer serve``: one thread owns the model and takes prepared images
from a bounded queue, several at a time (micro-batching), so requests never run the network
concurrently and the queue can never grow without bound.

Work nobody waits for is not done: a job whose future was cancelled (its client hung up, or its
deadline passed while it waited) is skipped, one that can no longer finish before its deadline is
answered with :class:`~lrformer.errors.DeadlineError` without running, and a batch takes only the
jobs that can all finish before the earliest of their deadlines (deadline-aware micro-batching):
one slow batch cannot turn into many timeouts. Cheap jobs go first unless an expensive one would
then be late, so a client sending costly images cannot hold up everyone else's ordinary ones.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from ..errors import DeadlineError, ServerBusyError, ServerClosingError
from ..inference import Predictor, PreparedImage
from .admission import CostModel, Work

logger = logging.getLogger(__name__)
Busy, Closed = ServerBusyError, ServerClosingError
"""The former names of the errors :meth:`InferenceWorker.submit` raises."""


@dataclass(eq=False)  # a job is itself (the queue removes jobs by identity, never by comparing images)
class Job:
    """One request's prepared image, its work and predicted seconds, its deadline (on the worker's
    clock) and the future its label map ``(H, W)`` goes to."""

    prepared: PreparedImage
    work: Work = field(default_factory=Work)
    seconds: float = 0.0
    deadline: float = math.inf
    future: Future = field(default_factory=Future)


class InferenceWorker:
    """Runs ``predictor`` on a thread; :meth:`submit` enqueues, :meth:`close` drains and stops.

    Args:
        predictor: the predictor (model loaded once, fast path).
        max_queue: jobs waiting at most; :meth:`submit` raises :class:`~lrformer.errors.ServerBusyError` beyond.
        max_batch: jobs taken together; the predictor batches the views of equal network-input
            shape into one forward pass (1: no micro-batching).
        cost: the model of seconds per work, corrected after each batch (default: priors).
        clock: the time deadlines are on (:func:`time.monotonic`).
    """

    def __init__(
        self,
        predictor: Predictor,
        max_queue: int = 32,
        max_batch: int = 8,
        cost: CostModel | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.predictor, self.max_queue, self.max_batch = predictor, max_queue, max_batch
        self.cost, self.clock = cost or CostModel(), clock
        self._jobs: collections.deque[Job] = collections.deque()
        self._changed = threading.Condition()  # guards _jobs, _closed and _running_until
        self._closed = False
        self._running_until = 0.0  # predicted end of the running batch
        self.batches: collections.deque[int] = collections.deque(maxlen=1000)  # recent batch sizes
        self._thread = threading.Thread(target=self._run, name="lrformer-inference", daemon=True)
        self._thread.start()

    def submit(
        self, prepared: PreparedImage, work: Work | None = None, seconds: float = 0.0, deadline: float = math.inf
    ) -> Future:
        """Queue ``prepared`` (its ``work``, ``seconds`` predicted, to finish by ``deadline``); the
        future resolves to its label map, or raises what inference raised."""
        job = Job(prepared, work or Work(), seconds, deadline)
        with self._changed:
            if self._closed:
                raise ServerClosingError("the server is shutting down")
            if len(self._jobs) >= self.max_queue:
                raise ServerBusyError(f"busy: {self.max_queue} requests are already waiting; retry later")
            self._jobs.append(job)
            self._changed.notify()
        return job.future

    @property
    def waiting(self) -> int:
        """Jobs in the queue (cancelled ones included until the worker reaches them)."""
        return len(self._jobs)

    def backlog(self) -> float:
        """Predicted seconds until the worker is free: the running batch's rest and every live queued job."""
        with self._changed:
            queued = sum(job.seconds for job in self._jobs if not job.future.cancelled())
            return max(self._running_until - self.clock(), 0.0) + queued

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closed:
                    self._changed.wait()
                if not self._jobs:  # closed and drained
                    return
                try:
                    jobs = self._take_batch()
                except Exception as exc:  # a bug: fail what is queued (loudly) rather than leave it hanging
                    logger.exception("the inference worker could not form a batch")
                    jobs = []
                    while self._jobs:
                        job = self._jobs.popleft()
                        if job.future.set_running_or_notify_cancel():
                            job.future.set_exception(exc)
                self._running_until = self.clock() + sum(job.seconds for job in jobs)
            if jobs:
                self._run_batch(jobs)
            with self._changed:
                self._running_until = 0.0

    def _take_batch(self) -> list[Job]:
        """Up to ``max_batch`` live jobs that all finish, as predicted, before the earliest of their
        deadlines. Called holding the lock.

        Cheapest first (shortest job first: a few expensive images cannot hold up the ordinary
        ones queued behind them), except that a job which would be late if every cheaper one ran
        before it goes first. Cancelled jobs are dropped; a job that can no longer finish in time is
        answered :class:`~lrformer.errors.DeadlineError` without running."""
        now = self.clock()
        for job in list(self._jobs):
            if job.future.cancelled() or now + job.seconds > job.deadline:
                self._jobs.remove(job)
                if job.future.set_running_or_notify_cancel():  # not cancelled: late
                    job.future.set_exception(DeadlineError("the prediction could not finish within the timeout"))
        order = sorted(self._jobs, key=lambda job: job.seconds)  # stable: first come, first served at equal cost
        ahead, urgent = now, []
        for job in order:
            ahead += job.seconds
            if ahead > job.deadline:
                urgent.append(job)
        if urgent:
            first = min(urgent, key=lambda job: job.deadline - job.seconds)
            order.remove(first)
            order.insert(0, first)
        batch, end, deadline = [], now, math.inf
        for job in order[: self.max_batch]:
            if batch and end + job.seconds > min(deadline, job.deadline):
                break  # it waits for the next batch rather than make this one late
            self._jobs.remove(job)
            if job.future.set_running_or_notify_cancel():
                batch.append(job)
                end, deadline = end + job.seconds, min(deadline, job.deadline)
        return batch

    def _run_batch(self, jobs: list[Job]) -> None:
        self.batches.append(len(jobs))
        started = time.perf_counter()
        try:
            labels = self.predictor.predict_prepared([job.prepared for job in jobs], self.max_batch)
            if len(labels) != len(jobs):
                raise RuntimeError(f"the predictor returned {len(labels)} label maps for {len(jobs)} images")
        except Exception as exc:  # reported to every request of the batch; the worker carries on
            for job in jobs:
                job.future.set_exception(exc)
            return
        total = Work()
        for job in jobs:
            total += job.work
        self.cost.observe(total, time.perf_counter() - started)
        for job, label in zip(jobs, labels):
            job.future.set_result(label)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, finish every queued job, then stop the thread (waiting ``timeout`` s at most)."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout)
