"""Training at scale with torchrun: two nodes on one machine, and a worker killed under ``--max-restarts``.

Every run is the real command (``python -m torch.distributed.run ... -m lrformer train CONFIG``) on
the same tiny config; final weights are compared with ``torch.equal``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from lrformer.data import synthetic

from .helpers import communicate_bounded, run_bounded

TINY = {"embed_dims": [16, 32, 80, 64], "depths": [1, 1, 2, 1], "head_channels": 32}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    spec = synthetic.generate(root, train=12, val=3, size=64)
    config = {
        "model": {"name": "lrformer_t", "drop_path_rate": 0.2, "overrides": TINY},
        "data": {"dataset": str(spec), "root": str(root), "resize": {"scale": [128, 64]}, "crop_size": [64, 64],
                 "batch_size": 2, "workers": 1},
        "optim": {"lr": 1e-3},
        "schedule": {"max_iters": 8, "warmup_iters": 2},
        "train": {"device": "cpu", "log_interval": 1, "val_interval": 4, "val_max_images": 3, "checkpoint_interval": 2,
                  "keep_checkpoints": 2},
    }  # fmt: skip
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def final_weights(work_dir) -> dict[str, torch.Tensor]:
    return torch.load(work_dir / "iter_8.pth", map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def scalars(work_dir, tag: str) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (work_dir / "scalars.jsonl").read_text().splitlines()]
    return [(row["iter"], row["value"]) for row in rows if row["tag"] == tag]


def standalone(
    config_file, work_dir, *launcher, entry=("-m", "lrformer"), overrides=()
) -> subprocess.CompletedProcess:
    """One node, two processes: ``torchrun --standalone --nproc-per-node 2 ... train CONFIG --set ...``."""
    command = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", *launcher, *entry, "train", str(config_file),
               "--work-dir", str(work_dir), *(f"--set={o}" for o in overrides)]  # fmt: skip
    return run_bounded(command, env=ENV, capture_output=True, text=True)


def test_two_nodes_equal_one_node(tmp_path, config_file):
    """Two launchers (``--nnodes 2``, c10d rendezvous on 127.0.0.1, one process each) train the
    same weights as one launcher with two processes; only the global rank 0 writes checkpoints."""
    single = standalone(config_file, tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [
                *TORCHRUN,
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                endpoint,
                "--rdzv-id",
                "two-nodes",
                "-m",
                "lrformer",
                "train",
                str(config_file),
                "--work-dir",
                str(tmp_path / "nodes"),
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    try:
        logs = [communicate_bounded(node)[0] for node in nodes]
    finally:
        for node in nodes:  # the other launcher, when one of them hung
            if node.poll() is None:
                node.kill()
                node.wait()
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    for name in ("iter_*.pth", "best_mIoU_iter_*.pth"):  # written once, by the global rank 0
        assert [p.name for p in (tmp_path / "nodes").glob(name)] == [p.name for p in (tmp_path / "single").glob(name)]
    assert sorted(p.name for p in (tmp_path / "nodes").glob("iter_*.pth")) == ["iter_6.pth", "iter_8.pth"]
    assert sum("done: last checkpoint" in log for log in logs) == 2  # every process finished
    assert_same_weights(final_weights(tmp_path / "nodes"), final_weights(tmp_path / "single"))
    # validation at iterations 4 and 8: each rank evaluates every second image, the sums are all-reduced
    assert scalars(tmp_path / "nodes", "val/mIoU") == scalars(tmp_path / "single", "val/mIoU")
    assert len(scalars(tmp_path / "nodes", "val/mIoU")) == 2
    (best,) = (tmp_path / "nodes").glob("best_mIoU_iter_*.pth")  # both ranks' RNG states: resuming from it is exact
    assert len(torch.load(best, map_location="cpu", weights_only=True)["rng"]) == 2


KILLER = """
import os, signal, sys
import torch.distributed as dist
from lrformer.cli.main import main
from lrformer.engine.trainer import Trainer

def kill_rank_1_at_5(trainer):
    # attempt 0 only: rank 1 dies by SIGKILL after iteration 5 (iter_4.pth is the newest checkpoint)
    if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0" and dist.get_rank() == 1 and trainer.iteration == 5:
        os.kill(os.getpid(), signal.SIGKILL)

original = Trainer.__init__
def patched(self, *args, **kwargs):
    original(self, *args, **kwargs)
    self.callbacks.append(kill_rank_1_at_5)
Trainer.__init__ = patched
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_worker_restarts_and_resumes_exactly(tmp_path, config_file):
    """``--max-restarts 1``: rank 1 is killed with SIGKILL after iteration 5; the group restarts,
    resumes by itself from iter_4.pth and ends with the weights of an uninterrupted run, bit for bit."""
    killer = tmp_path / "killer.py"
    killer.write_text(textwrap.dedent(KILLER))
    whole = standalone(config_file, tmp_path / "whole", "--max-restarts", "1")
    assert whole.returncode == 0, whole.stderr[-3000:]
    cut = standalone(config_file, tmp_path / "cut", "--max-restarts", "1", entry=(str(killer),))
    assert cut.returncode == 0, cut.stderr[-3000:]
    assert "failed (exitcode: -9) local_rank: 1" in cut.stderr, cut.stderr[-3000:]
    assert "restart 1: resuming from" in cut.stderr and "iter_4.pth at iteration 4" in cut.stderr, cut.stderr[-3000:]
    assert_same_weights(final_weights(tmp_path / "cut"), final_weights(tmp_path / "whole"))
    losses = scalars(tmp_path / "cut", "train/loss")  # iterations 5-8 again, with the uninterrupted losses
    assert [i for i, _ in losses[-4:]] == [5, 6, 7, 8]
    assert losses[-4:] == scalars(tmp_path / "whole", "train/loss")[-4:]


def test_activation_checkpointing_under_ddp_with_synchronised_batchnorm(tmp_path, config_file):
    """Two processes, SyncBN in the decode head (the default ``train.sync_bn``): with
    ``train.grad_checkpoint`` the fuse blocks' recomputation runs SyncBN's collective again during
    backward, next to DDP's gradient all-reduce; the run ends with the weights and BatchNorm
    statistics of the run without checkpointing."""
    short = ("schedule.max_iters=4", "train.val_interval=0")
    plain = standalone(config_file, tmp_path / "plain", overrides=short)
    assert plain.returncode == 0, plain.stderr[-3000:]
    checkpointed = standalone(config_file, tmp_path / "ckpt", overrides=(*short, "train.grad_checkpoint=true"))
    assert checkpointed.returncode == 0, checkpointed.stderr[-3000:]
    a, b = (torch.load(d / "iter_4.pth", map_location="cpu", weights_only=True)["state_dict"]
            for d in (tmp_path / "plain", tmp_path / "ckpt"))  # fmt: skip
    assert a.keys() == b.keys() and any("fuse_block1.norm1.running_mean" in k for k in a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    losses, plain_losses = (scalars(tmp_path / d, "train/loss") for d in ("ckpt", "plain"))
    assert [i for i, _ in losses] == [i for i, _ in plain_losses] == [1, 2, 3, 4]
    assert [v for _, v in losses] == pytest.approx([v for _, v in plain_losses], rel=1e-5)
