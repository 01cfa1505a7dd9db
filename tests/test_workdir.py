"""Training never loses a run: work-dir lock, earlier runs refused, stale temporaries, resume
fallback, pruning, and a kill -9 loop that still ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.distributed as dist

from lrformer.cli.main import main
from lrformer.data import synthetic
from lrformer.engine import trainer as trainer_module
from lrformer.engine.config import load_config
from lrformer.engine.distributed import DistInfo
from lrformer.engine.trainer import Trainer
from lrformer.errors import WorkDirError

from .helpers import error_line, wait_until

TINY = {"embed_dims": [16, 32, 80, 64], "depths": [1, 1, 2, 1], "head_channels": 32}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return root, synthetic.generate(root, train=8, val=2, size=64)


def _overrides(data, iters=4, **changes):
    root, spec = data
    values = {
        "data.dataset": spec, "data.root": root, "data.resize.scale": "[128,64]", "data.crop_size": "[64,64]",
        "data.batch_size": 2, "data.workers": 0, "train.device": "cpu", "train.val_interval": 0,
        "train.log_interval": 1, "train.checkpoint_interval": 2, "schedule.max_iters": iters,
        "schedule.warmup_iters": 2, "optim.lr": "1e-3", "model.drop_path_rate": 0.1,
        "model.overrides": json.dumps(TINY), **changes,
    }  # fmt: skip
    return [f"{k}={v}" for k, v in values.items()]


def _train_cli(data, work, *flags, iters=4, **changes):
    config = work.parent / "empty.yaml"
    config.write_text("{}\n")
    argv = ["train", str(config), "--work-dir", str(work), *flags]
    return main(argv + [x for o in _overrides(data, iters, **changes) for x in ("--set", o)])


def test_a_second_run_in_the_same_dir_is_refused(tmp_path, data):
    first = Trainer(load_config(None, _overrides(data)), tmp_path / "w")
    with pytest.raises(WorkDirError, match=rf"in use by another training run \(pid {os.getpid()} on "):
        Trainer(load_config(None, _overrides(data)), tmp_path / "w")
    first.train()  # ends the first run: the lock is free again
    Trainer(load_config(None, _overrides(data)), tmp_path / "w", resume=True)


class _Stop(Exception):
    pass


def test_the_lock_is_released_by_close_and_by_leaving_the_with_block(tmp_path, data):
    work = tmp_path / "w"
    with pytest.raises(_Stop), Trainer(load_config(None, _overrides(data)), work):
        with pytest.raises(WorkDirError, match="in use by another training run"):
            Trainer(load_config(None, _overrides(data)), work)
        raise _Stop  # an error inside the block releases the lock too
    trainer = Trainer(load_config(None, _overrides(data)), work)  # free again
    with pytest.raises(WorkDirError, match="in use by another training run"):
        Trainer(load_config(None, _overrides(data)), work)
    trainer.close()
    trainer.close()  # a second close does nothing
    Trainer(load_config(None, _overrides(data)), work).close()
    # a build step failing after the lock was taken (a checkpoint past max_iters) releases it as well
    Trainer(load_config(None, _overrides(data, iters=4)), work).train()
    with pytest.raises(ValueError, match="past schedule.max_iters 2"):
        Trainer(load_config(None, _overrides(data, iters=2)), work, resume=True)
    with Trainer(load_config(None, _overrides(data, iters=4)), work, resume=True) as trainer:
        assert trainer.iteration == 4


def test_close_destroys_only_a_process_group_the_trainer_created(tmp_path, data, monkeypatch):
    def join_alone(device):  # a one-process gloo group in place of the one torchrun describes
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        return DistInfo()

    monkeypatch.setattr(trainer_module, "init_distributed", join_alone)
    with Trainer(load_config(None, _overrides(data)), tmp_path / "a"):
        assert dist.is_initialized()
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # the caller's own group
    try:
        monkeypatch.setattr(trainer_module, "init_distributed", lambda device: DistInfo())
        with Trainer(load_config(None, _overrides(data)), tmp_path / "b"):
            pass
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_an_earlier_run_is_refused_unless_resume_or_force(tmp_path, data, capsys):
    work = tmp_path / "w"
    assert _train_cli(data, work, iters=4) == 0  # iter_2, iter_4
    capsys.readouterr()
    assert _train_cli(data, work, iters=2) == 2
    line = error_line(capsys)
    assert "holds checkpoints of an earlier run (iter_2.pth, iter_4.pth): pass --resume" in line and "--force" in line
    assert sorted(p.name for p in work.glob("*.pth")) == ["iter_2.pth", "iter_4.pth"]  # untouched
    assert _train_cli(data, work, "--resume", iters=6) == 0
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_2.pth", "iter_4.pth", "iter_6.pth"]
    assert _train_cli(data, work, "--force", iters=2) == 0
    assert f"done: last checkpoint {work / 'iter_2.pth'}" in capsys.readouterr().out
    assert sorted(p.name for p in work.glob("*.pth")) == ["iter_2.pth"]  # the earlier run is gone


def test_stale_temporaries_are_removed_and_a_corrupt_latest_checkpoint_is_skipped(tmp_path, data, caplog):
    work = tmp_path / "w"
    Trainer(load_config(None, _overrides(data)), work).train()
    stale = work / ".iter_6.k2j3h4.tmp.pth"
    stale.write_bytes(b"\0" * 1000)
    (work / "iter_4.pth").write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level("WARNING", logger="lrformer.train"):
        trainer = Trainer(load_config(None, _overrides(data)), work, resume=True)
    assert not stale.exists() and trainer.iteration == 2
    assert "removed 1 temporary file(s)" in caplog.text and "skipping iter_4.pth" in caplog.text


def test_bad_resume_files_are_named(tmp_path, data, capsys):
    work = tmp_path / "w"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(os.system))  # a pickle that would import and call code
    released = tmp_path / "weights.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, released)
    cases = [(evil, "cannot be read as a training checkpoint"), (tmp_path / "none.pth", "no such file"),
             (released, "is not a training checkpoint of lrformer train (no optimizer")]  # fmt: skip
    for path, message in cases:
        assert _train_cli(data, work, "--resume", str(path)) == 2
        line = error_line(capsys)
        assert str(path) in line and message in line
    Trainer(load_config(None, _overrides(data, iters=2)), work).train()  # iter_2, and a lone iter_2
    (work / "iter_2.pth").write_bytes(b"garbage")
    assert _train_cli(data, work, "--resume") == 2
    assert "no checkpoint in" in error_line(capsys)


def test_the_users_files_and_an_earlier_best_checkpoint_are_kept(tmp_path, data, capsys, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    config = work / "config.yaml"
    config.write_text("# my config\n{}\n")
    argv = ["train", str(config), "--work-dir", str(work)]
    assert main(argv + [x for o in _overrides(data) for x in ("--set", o)]) == 2
    assert "is the file the run writes its resolved config to" in error_line(capsys)
    assert config.read_text() == "# my config\n{}\n"
    # a run that validated at 2 and 4 keeps best_mIoU_iter_4; resuming from iter_2 must not delete it
    scores = iter([10.0, 30.0, 20.0])
    monkeypatch.setattr(Trainer, "validate", lambda self: _fake_validation(self, next(scores)))
    overrides = _overrides(data, iters=4, **{"train.val_interval": 2, "train.keep_checkpoints": 3})
    Trainer(load_config(None, overrides), work / "run").train()
    assert sorted(p.name for p in (work / "run").glob("best*")) == ["best_mIoU_iter_4.pth"]
    Trainer(load_config(None, overrides), work / "run", resume=work / "run" / "iter_2.pth").train()
    assert sorted(p.name for p in (work / "run").glob("best*")) == ["best_mIoU_iter_4.pth"]  # 20 < 30: kept


def _fake_validation(trainer, miou):
    from lrformer.engine import training_checkpoints

    if miou > trainer.best_miou:
        trainer.best_miou = miou
        training_checkpoints.save_best(trainer.work_dir, trainer.state(), trainer.iteration)


def test_pruning_keeps_what_this_run_did_not_write(tmp_path, data):
    work = tmp_path / "w"
    Trainer(load_config(None, _overrides(data, iters=6, **{"train.keep_checkpoints": 3})), work).train()
    resumed = Trainer(load_config(None, _overrides(data, iters=4, **{"train.keep_checkpoints": 1})), work,
                      resume=work / "iter_2.pth")  # fmt: skip
    assert resumed.train() == work / "iter_4.pth" and (work / "iter_4.pth").is_file()
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_4.pth", "iter_6.pth"]  # iter_6: not this run's


RUNNER = """
import json, sys, time, torch
from pathlib import Path
from lrformer.engine import training_checkpoints
from lrformer.engine.config import load_config
from lrformer.engine.trainer import Trainer
from lrformer.utils import atomic_path

hold = Path(sys.argv[3])  # holds N: the write of iter_N.pth (or a later one) stays half done

def held_save(path, state):  # a disk the test controls: the kill lands while a checkpoint is half written
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        if hold.exists() and int(path.stem.split("_")[1]) >= int(hold.read_text()):
            hold.with_suffix(".holding").write_text(str(tmp))
            while hold.exists():  # until the test kills this process
                time.sleep(0.01)

training_checkpoints.save = held_save
Trainer(load_config(None, json.loads(sys.argv[1])), sys.argv[2], resume=True).train()
"""


def test_kill_9_loop_resumes_bit_identical(tmp_path, data):
    """Ten kill -9: the odd ones at a random moment of training, the even ones while a checkpoint
    is half written (its temporary file exists). The run then finishes bit-identical.

    The k-th run holds the write of the k-th of ten checkpoints drawn at random open until its kill,
    so the resumes spread over the run and, however fast or slow the machine, no run finishes before
    its kill and every even kill lands during a write."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUNNER))
    iters = 18
    overrides = _overrides(data, iters=iters, **{"train.checkpoint_interval": 1, "train.keep_checkpoints": 2})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    hold, holding, log = tmp_path / "hold", tmp_path / "hold.holding", tmp_path / "runs.log"

    def start(work):
        with log.open("a") as output:
            return subprocess.Popen([sys.executable, str(script), json.dumps(overrides), str(work), str(hold)],
                                    env=env, stdout=output, stderr=subprocess.STDOUT)  # fmt: skip

    def running_until(process, ready, what):
        wait_until(lambda: process.poll() is not None or ready(), f"a run {what}")
        assert process.poll() is None, f"the run exited ({process.returncode}) before {what}: {log.read_text()[-3000:]}"

    def finish(process):
        wait_until(lambda: process.poll() is not None, f"the run finishes (its output: {log})")
        assert process.returncode == 0, log.read_text()[-3000:]

    finish(start(tmp_path / "full"))
    work, rng, kills, during_writes, process = tmp_path / "killed", random.Random(0), 0, 0, None
    holds = sorted(rng.sample(range(1, iters + 1), 10))  # the checkpoint whose write each run holds open
    try:
        while kills < 10:
            hold.write_text(str(holds[kills]))
            holding.unlink(missing_ok=True)
            process = start(work)
            # training has begun once this process holds the lock (stale temporaries are gone by then)
            holder = f"pid {process.pid} "
            running_until(process, lambda: holder in _read(work / ".lock"), "holds the lock")  # noqa: B023
            if kills % 2:
                time.sleep(rng.uniform(0, 0.8))  # a random moment of training, up to the held write
                assert process.poll() is None, f"the run exited ({process.returncode}): {log.read_text()[-3000:]}"
            else:
                running_until(process, holding.exists, "holds a checkpoint write open")
            during_writes += bool(list(work.glob(".*.tmp.pth")))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        hold.unlink(missing_ok=True)
    assert kills == 10 and during_writes >= 5, (kills, during_writes)
    finish(start(work))  # the next start cleans up and finishes
    assert list(work.glob(".*.tmp*")) == []
    final = f"iter_{iters}.pth"
    full, resumed = (torch.load(d / final, weights_only=True)["state_dict"] for d in (tmp_path / "full", work))
    differ = [k for k in full if not torch.equal(full[k], resumed[k])]
    assert not differ, (kills, during_writes, differ[:5])


def _read(path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
