"""torch.distributed set-up for runs started by ``torchrun`` (one process per device, one or many nodes).

Under torchrun's elastic agent (``--max-restarts K``), a worker that dies makes the agent stop the
group and start it again: :func:`restart_count` tells which attempt this is, :func:`run_id` names the
run across attempts, and every attempt joins its own process group in its own namespace of the
rendezvous store (see :func:`attempt_store`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from ..devices import check_device, resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def restart_count() -> int:
    """How many times torchrun has restarted this run's workers (``TORCHELASTIC_RESTART_COUNT``; 0 otherwise)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def run_id() -> str | None:
    """The elastic run's id, the same in every attempt (``TORCHELASTIC_RUN_ID``: ``--rdzv-id``, or a
    fresh one per ``--standalone`` launch); ``None`` outside torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID") or None


def attempt_store(rank: int, world_size: int) -> dist.Store:
    """The key-value store this attempt's process group is built on: the one torchrun points at
    (``MASTER_ADDR:MASTER_PORT``), under the prefix ``lrformer/attempt_N``.

    When the rendezvous store is the agent's (``TORCHELASTIC_USE_AGENT_STORE``, the c10d rendezvous),
    it outlives the workers: without the prefix a restarted gloo group could read the addresses the
    dead group published there and fail with ``connectFullMesh ... Connection refused``. Otherwise
    global rank 0 hosts the store, as ``init_method="env://"`` does.
    """
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
        is_master=not agent_store and rank == 0, timeout=dist.default_pg_timeout, multi_tenant=not agent_store,
    )  # fmt: skip
    return dist.PrefixStore(f"lrformer/attempt_{restart_count()}", store)


_STORE: dist.Store | None = None
"""The store of the process group :func:`init_distributed` joined (for :class:`SharedCounter`)."""


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): NCCL for CUDA, gloo for CPU.

    Without torchrun it returns a single-process :class:`DistInfo` and initialises nothing.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = resolve_device(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(info.local_rank)
        global _STORE
        _STORE = attempt_store(info.rank, world_size)
        dist.init_process_group(
            backend="nccl" if cuda else "gloo", store=_STORE, rank=info.rank, world_size=world_size
        )
    return info


def process_group_exists() -> bool:
    """Whether this process has joined a process group (by :func:`init_distributed` or otherwise)."""
    return dist.is_available() and dist.is_initialized()


def broadcast_from_main(value):
    """``value`` of global rank 0 on every rank (a picklable object; a collective when distributed)."""
    if not process_group_exists():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(value) -> list:
    """``value`` of every rank, in rank order (a picklable object; a collective when distributed)."""
    if not process_group_exists():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


_meetings = 0
_ABORT = "lrformer/abort"


def wait_for_every_rank(poll: float = 0.2) -> None:
    """Like ``torch.distributed.barrier``, without its time limit: every rank counts itself in at the job's store
    and waits until all have (NCCL's collectives give up after 10 minutes, and a rank whose share of
    a job ends early may wait longer). Every rank must call it the same number of times. A rank that
    fails calls :func:`abort_others`, and the waiting ones raise
    :class:`~lrformer.errors.JobAbortedError` (torchrun stops them anyway; other launchers may not)."""
    global _meetings
    if not process_group_exists():
        return
    if _job_store() is None:  # a process group joined by other code, on a store we cannot reach
        dist.barrier()
        return
    import time

    _meetings += 1
    arrived = SharedCounter(f"meeting/{_meetings}")
    arrived.add(1)
    while arrived.read() < dist.get_world_size():
        if aborted() and arrived.read() < dist.get_world_size():  # (all may have come before one failed later)
            raise _aborted_error()
        time.sleep(poll)


def aborted() -> bool:
    """Whether a process of this job has called :func:`abort_others` (``False`` in a single process)."""
    store = _job_store() if process_group_exists() else None
    try:
        return bool(store is not None and store.add(_ABORT, 0))
    except Exception:  # the store went with the process that hosted it (rank 0 of a launcher without an agent)
        return True


def stop_if_aborted() -> None:
    """Raise :class:`~lrformer.errors.JobAbortedError` (said by the main process only) when another
    process of this job has failed."""
    if aborted():
        raise _aborted_error()


def _aborted_error() -> Exception:
    from ..errors import JobAbortedError

    error = JobAbortedError("another process of this job failed (its error is above); rerun the same command to "
                            "finish what is missing")  # fmt: skip
    error.on_every_rank = True
    return error


def abort_others() -> None:
    """Tell the ranks waiting in :func:`wait_for_every_rank` that this one failed."""
    store = _job_store() if process_group_exists() else None
    if store is not None:
        with contextlib.suppress(Exception):  # the store may be gone with the failure
            store.add(_ABORT, 1)


def on_main(work: Callable[[], T]) -> T:
    """``work()`` done by the main process alone, its result given to every rank, or the error it
    raised raised on every rank (said once, by the main process). The others wait without a time
    limit (:func:`wait_for_every_rank`), however long the work takes."""
    if not process_group_exists():
        return work()
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = work()
        except Exception as exc:
            error = exc
    wait_for_every_rank()
    result, shared = broadcast_from_main((result, _picklable(error)))
    if error is not None:
        raise error
    if shared is not None:
        shared.on_every_rank = True  # one line, by the main process
        raise shared
    return result


def _picklable(error: Exception | None) -> Exception | None:
    """``error``, or a ``RuntimeError`` saying it where it cannot be sent to the other ranks."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _job_store() -> dist.Store | None:
    """The store of this process's group: the one :func:`init_distributed` made, else the default
    group's (when other code joined it), else ``None``."""
    if _STORE is not None:
        return _STORE
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:
        return None


class SharedCounter:
    """A count every rank adds to and any rank reads, kept in the job's rendezvous store (a plain
    integer in a single process): e.g. images done, for the main process's progress bar."""

    def __init__(self, key: str) -> None:
        self.key, self.value = f"lrformer/counter/{key}", 0
        self.store = _job_store() if process_group_exists() else None

    def add(self, amount: int) -> int:
        if self.store is None:
            self.value += amount
            return self.value
        return int(self.store.add(self.key, amount))

    def read(self) -> int:
        return self.add(0)


def device_for(
    device: str, info: DistInfo, option: str = "train.device", fix: str = "--set train.device=cpu"
) -> torch.device:
    """``auto`` resolved (:func:`~lrformer.devices.resolve_device`), then ``cuda`` becomes
    ``cuda:LOCAL_RANK`` under torchrun; other devices are unchanged.

    Raises :class:`~lrformer.errors.ConfigError` naming ``option`` and ``fix`` for a device this
    machine does not have.
    """
    device = check_device(device, option, fix)
    if device == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return torch.device(device)


def shutdown() -> None:
    """Leave the process group, if there is one."""
    if process_group_exists():
        dist.destroy_process_group()
