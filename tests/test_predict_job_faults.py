"""``lrformer predict`` jobs meeting each other and going wrong: locks of whole jobs and shards, a
re-run with other settings, a failed write with others under way, a process failing under torchrun,
a manifest shared with earlier jobs and other programs."""

from __future__ import annotations

import json
import os
import re
import sys
from argparse import Namespace
from pathlib import Path

import cv2
import pytest

from lrformer.cli.main import main
from lrformer.cli.manifest import Manifest, record
from lrformer.cli.out_lock import lock_output
from lrformer.engine.distributed import DistInfo
from lrformer.engine.workdir import WorkDirLock
from lrformer.errors import WorkDirError
from lrformer.locking import lock, same_file

from .helpers import error_line, run_bounded, synthetic_photo


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, (height, width) in enumerate([(40, 56), (48, 48), (36, 64)]):
        cv2.imwrite(str(folder / f"p{index}.png"), synthetic_photo(height, width, index))
    return folder


def predict(model_file: Path, inputs: Path, out: Path, *options: str) -> list[str]:
    return ["predict", "--model", str(model_file), str(inputs), "--out", str(out), "--workers", "0", *options]


@pytest.mark.parametrize(
    "held, wanted, refused",
    [(None, (0, 2), True), ((0, 2), None, True), ((0, 2), (0, 4), True), ((1, 4), (0, 2), True),
     ((0, 2), (1, 2), False), ((0, 2), (0, 2), True)],
)  # fmt: skip
def test_whole_jobs_and_shards_of_other_splits_exclude_each_other(tmp_path, held, wanted, refused):
    first = lock_output(tmp_path, held)
    try:
        if refused:
            with pytest.raises(WorkDirError, match=rf"in use by another lrformer predict job.*pid {os.getpid()}"):
                lock_output(tmp_path, wanted)
        else:
            lock_output(tmp_path, wanted).release()
    finally:
        first.release()
    assert not list(tmp_path.iterdir())  # lock files go with their jobs


def test_a_killed_jobs_lock_file_is_harmless_and_removed(tmp_path):
    (tmp_path / ".lock-shard-1-of-4").write_text("pid 1 on gone, started long ago")  # nobody holds it
    (tmp_path / ".lock").write_text("pid 2 on gone, started long ago")
    lock_output(tmp_path, (0, 2)).release()
    assert not list(tmp_path.iterdir())


def test_a_lock_file_removed_by_its_holder_is_not_locked_again(tmp_path):
    holder = WorkDirLock(tmp_path, name=".lock", remove=True)
    late = os.open(tmp_path / ".lock", os.O_RDWR)  # opened just before the holder ends
    holder.release()
    try:
        lock(late, blocking=False)  # the old file can be locked, but it is not the lock file any more
        assert not same_file(late, tmp_path / ".lock")
        second = WorkDirLock(tmp_path, name=".lock", remove=True)  # a new file, exclusive as ever
        with pytest.raises(WorkDirError):
            WorkDirLock(tmp_path, name=".lock")
        second.release()
    finally:
        os.close(late)


def test_compaction_keeps_earlier_jobs_records_and_other_programs_lines(tmp_path):
    manifest = Manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"tool": "labeller", "version": 2}\n')
    manifest.append([record(Path("/old/x.png"), "x", ["x.png"]), record(Path("/b.png"), "b", [], "unreadable")])
    manifest.append([record(Path("/a.png"), "a", ["a.png"]), record(Path("/b.png"), "b", ["b.png"])])
    with open(tmp_path / "manifest.jsonl", "a") as handle:
        handle.write('{"command": "predict", "input": "/c.png", "status": "done", "outputs": []}\n')  # no name
        handle.write('{"command": "predict", "inp')  # cut short by a kill
    assert "3 line(s) of" in manifest.read()[1]
    assert list(manifest.compact(["a", "b"])) == ["a", "b"]
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert lines[0] == '{"tool": "labeller", "version": 2}' and '"/c.png"' in lines[1]  # kept as they were
    assert [(json.loads(line)["input"], json.loads(line)["status"]) for line in lines[2:]] == [
        ("/a.png", "done"), ("/b.png", "done"), ("/old/x.png", "done")]  # fmt: skip


def test_a_rerun_with_other_settings_is_refused_until_overwrite(tiny_model_file, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(predict(tiny_model_file, photos, out)) == 0
    before = (out / "p0_overlay.jpg").read_bytes()
    capsys.readouterr()
    assert main(predict(tiny_model_file, photos, out, "--opacity", "0.8")) == 2
    assert error_line(capsys).endswith(
        f"3 input(s) in {out} were segmented with other settings (another model, weights file, test settings, "
        "palette or opacity): pass --overwrite to segment them again with these, or choose another --out"
    )
    assert (out / "p0_overlay.jpg").read_bytes() == before
    assert main(predict(tiny_model_file, photos, out, "--threads", "1", "--batch-size", "2")) == 0  # same outputs
    assert "3 input(s) already done, skipped" in capsys.readouterr().out
    assert main(predict(tiny_model_file, photos, out, "--opacity", "0.8", "--overwrite")) == 0
    assert (out / "p0_overlay.jpg").read_bytes() != before
    assert main(predict(tiny_model_file, photos, out, "--opacity", "0.8")) == 0
    assert "3 input(s) already done, skipped" in capsys.readouterr().out


def test_a_failed_write_ends_the_run_after_recording_the_writes_under_way(tiny_model_file, photos, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "p1_overlay.jpg").mkdir(parents=True)  # nothing can be written in its place
    assert main(predict(tiny_model_file, photos, out)) == 2
    assert "p1_overlay.jpg" in error_line(capsys)
    done = {Path(e["input"]).name for e in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert "p0.png" in done and "p1.png" not in done  # p0 written before p1 failed; p1 is retried
    assert (out / "p0_overlay.jpg").is_file()


def test_the_summary_lists_twenty_failures_and_points_to_the_manifest(tiny_model_file, tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    for index in range(23):
        (folder / f"b{index:02d}.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert main(predict(tiny_model_file, folder, out)) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("23 failed:") and len([line for line in printed if "b" in line and ".jpg" in line]) == 20
    assert printed[21] == f"  ... and 3 more (every input's result: {out / 'manifest.jsonl'})"


@pytest.mark.parametrize("found, info, gpus, expected", [
    ("cuda", DistInfo(1, 2, 1), [], "cuda:1"), ("cuda", DistInfo(), [], "cuda"), ("cpu", DistInfo(1, 2, 1), [], "cpu"),
    ("cuda:0", DistInfo(1, 2, 1), [], "cuda:0"), ("gpu", DistInfo(3, 4, 3), ["CPU", "GPU.0", "GPU.3"], "gpu.3"),
    ("gpu", DistInfo(0, 2, 0), ["CPU", "GPU"], "gpu"),  # a node's only GPU has no number
    ("gpu", DistInfo(1, 2, 1), ["CPU", "GPU"], "gpu.1"),  # (which OpenVINO then refuses, naming what it sees)
])  # fmt: skip
def test_an_exported_model_runs_on_the_processs_own_gpu(monkeypatch, found, info, gpus, expected):
    from types import SimpleNamespace

    from lrformer.cli import predict as predict_module
    from lrformer.deploy import openvino, runtimes

    monkeypatch.setattr(runtimes, "resolve_device", lambda path, device: found)
    core = SimpleNamespace(available_devices=gpus)
    monkeypatch.setattr(openvino, "openvino_module", lambda: SimpleNamespace(Core=lambda: core))
    assert predict_module._process_device(Namespace(weights="model.onnx", device="auto"), info) == expected


def _torchrun(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "lrformer",
            *arguments]  # fmt: skip


def test_a_process_failing_under_torchrun_ends_the_job(tiny_model_file, photos, tmp_path):
    out = tmp_path / "out"
    (out / "p2_overlay.jpg").mkdir(parents=True)  # process 1's write fails (p1, p0 go to 0); 0 waits for it
    done = run_bounded(_torchrun(*predict(tiny_model_file, photos, out)), capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode != 0
    said = re.findall(r"lrformer predict: error: .*", done.stderr)  # (after the progress bar's carriage return)
    failed = [line for line in said if "p2_overlay.jpg" in line]
    stopped = [line for line in said if "another process of this job failed" in line]  # unless torchrun was faster
    assert len(failed) == 1 and len(stopped) <= 1 and len(said) == len(failed) + len(stopped), done.stderr[-2000:]
    records = out / "manifest.jsonl"  # process 0 stops at its next batch, or is stopped by torchrun
    for entry in map(json.loads, records.read_text().splitlines() if records.exists() else []):
        assert entry["name"] != "p2" and all((out / output).is_file() for output in entry["outputs"])


def test_a_mistake_found_by_the_main_process_is_said_once_under_torchrun(tiny_model_file, photos, tmp_path):
    done = run_bounded(_torchrun(*predict(tiny_model_file, photos, photos / "out")), capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode != 0
    said = re.findall(r"lrformer predict: error: .*", done.stderr)  # (after the progress bar's carriage return)
    assert len(said) == 1 and "inside" in said[0], done.stderr[-2000:]


def test_an_input_whose_latest_record_failed_is_retried_though_its_files_exist(tiny_model_file, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(predict(tiny_model_file, photos, out)) == 0
    # e.g. a damaged video's overlay is written (black frames) and its record says failed
    Manifest(out).append([record(photos / "p0.png", "p0", ["p0.png", "p0_overlay.jpg"], "frame 3 damaged")])
    capsys.readouterr()
    assert main(predict(tiny_model_file, photos, out)) == 0
    assert "segmented 1 image(s)" in (printed := capsys.readouterr().out) and "2 input(s) already done" in printed


def test_inputs_given_by_another_path_are_checked_against_their_outputs_records(
    tiny_model_file, photos, tmp_path, capsys
):
    out, link = tmp_path / "out", tmp_path / "same_photos"
    link.symlink_to(photos)
    assert main(predict(tiny_model_file, photos, out)) == 0
    assert main(predict(tiny_model_file, link, out, "--opacity", "0.8")) == 2
    assert "3 input(s) in" in error_line(capsys)
    assert main(predict(tiny_model_file, link, out)) == 0
    assert "3 input(s) already done, skipped" in capsys.readouterr().out


def test_other_inputs_of_the_same_names_do_not_take_an_earlier_jobs_outputs(tiny_model_file, photos, tmp_path, capsys):
    out, others = tmp_path / "out", tmp_path / "others"
    others.mkdir()
    cv2.imwrite(str(others / "p1.png"), synthetic_photo(30, 30, 9))  # another picture named like photos/p1.png
    assert main(predict(tiny_model_file, photos, out)) == 0
    assert main(predict(tiny_model_file, others, out)) == 2
    assert error_line(capsys).endswith(
        f"{out} holds the outputs of {photos / 'p1.png'} under the name 'p1', which {others / 'p1.png'} would take "
        "too: choose another --out, or pass --overwrite to replace them"
    )
    assert main(predict(tiny_model_file, others, out, "--overwrite")) == 0  # others/p1.png's outputs now
    assert main(predict(tiny_model_file, others, out)) == 0  # (the compacted manifest says so)
    assert "1 input(s) already done, skipped" in capsys.readouterr().out
    assert main(predict(tiny_model_file, photos, out)) == 2  # photos/p1.png would take them for its own
    assert f"holds the outputs of {others / 'p1.png'} under the name 'p1'" in error_line(capsys)
    assert main(predict(tiny_model_file, photos, out, "--overwrite")) == 0
    moved = tmp_path / "moved"
    photos.rename(moved)  # the same pictures in a new place are the same inputs
    assert main(predict(tiny_model_file, moved, out)) == 0
    assert "3 input(s) already done, skipped" in capsys.readouterr().out
    assert main(predict(tiny_model_file, moved, out, "--opacity", "0.8", "--overwrite")) == 0
    assert main(predict(tiny_model_file, moved, out, "--opacity", "0.8")) == 0  # records under the new paths
    assert "3 input(s) already done, skipped" in capsys.readouterr().out
    copies = tmp_path / "copies"
    copies.mkdir()
    for picture in moved.iterdir():  # copies of the pictures are the same inputs too
        (copies / picture.name).write_bytes(picture.read_bytes())
    assert main(predict(tiny_model_file, copies, out, "--opacity", "0.8")) == 0
    assert "3 input(s) already done, skipped" in capsys.readouterr().out


def test_what_the_fingerprint_sees_of_files(tmp_path):
    from lrformer.cli.sharding import settings_fingerprint

    graph, weights, checkpoint = tmp_path / "m.xml", tmp_path / "m.bin", tmp_path / "w.pth"
    graph.write_text("<net/>")
    weights.write_bytes(b"\x00" * 10)
    checkpoint.write_bytes(b"\x01" * (3 << 20))  # larger than the two MiB read of it
    (tmp_path / "model.json").write_text(json.dumps({"name": "lrformer_t", "pretrained": "w.pth"}))

    def fingerprint(**options) -> str:
        return settings_fingerprint(Namespace(**{"weights": str(graph), **options}))

    first = fingerprint()
    weights.write_bytes(b"\x02" * 10)  # an OpenVINO model re-exported from other weights: same graph
    assert fingerprint() != first
    model = str(tmp_path / "model.json")
    with_model, with_weights = fingerprint(model=model, weights=None), fingerprint(model=model)
    with open(checkpoint, "r+b") as handle:  # retrained in place: the model file's text is the same
        handle.seek((3 << 20) - 1)
        handle.write(b"\x03")
    assert fingerprint(model=model, weights=None) != with_model
    assert fingerprint(model=model) == with_weights  # --weights replaces the model file's checkpoint
    assert fingerprint(threads=1, device="cuda", batch_size=8) == fingerprint()  # do not shape the outputs
    assert fingerprint(max_attention_elements=1) != fingerprint()


def test_the_same_model_file_elsewhere_counts_as_the_same_settings(tiny_model_file, photos, tmp_path, capsys):
    out, staged = tmp_path / "out", tmp_path / "node_local" / "model.json"
    staged.parent.mkdir()
    staged.write_bytes(tiny_model_file.read_bytes())  # a copy: another path and time, the same content
    assert main(predict(tiny_model_file, photos, out)) == 0
    capsys.readouterr()
    assert main(predict(staged, photos, out)) == 0
    assert "3 input(s) already done, skipped" in capsys.readouterr().out


def test_a_shard_is_checked_against_its_own_inputs_only(tiny_model_file, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(predict(tiny_model_file, photos, out, "--shard", "0/2")) == 0  # p0, p2
    assert main(predict(tiny_model_file, photos, out, "--shard", "1/2", "--opacity", "0.8")) == 0  # p1: its own
    assert "segmented 1 image(s)" in capsys.readouterr().out.splitlines()[-2]
    assert main(predict(tiny_model_file, photos, out, "--shard", "0/2", "--opacity", "0.8")) == 2  # p0, p2 were 0.5


GROUP_SCRIPT = """
import sys, torch.distributed as dist
from lrformer.engine import distributed
from lrformer.errors import JobAbortedError

dist.init_process_group("gloo")  # joined by the caller's code, not by lrformer
rank = dist.get_rank()
distributed.SharedCounter("seen").add(1)
distributed.wait_for_every_rank()
assert distributed.SharedCounter("seen").read() == 2
store = distributed._job_store()
if rank == 1:
    distributed.abort_others()
    store.wait(["finished"])
else:
    try:
        distributed.wait_for_every_rank()  # rank 1 never comes: it failed
    except JobAbortedError as error:
        print("stopped:", error, flush=True)
    store.set("finished", "1")
"""


def test_ranks_meet_in_a_group_joined_by_other_code_and_stop_when_one_fails(tmp_path):
    script = tmp_path / "group.py"
    script.write_text(GROUP_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    done = run_bounded(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped: another process of this job failed (its error is above)" in done.stdout


def test_a_process_stops_reporting_once_another_has_failed(tmp_path, monkeypatch):
    from lrformer.cli.segmenting import Progress, Recorder
    from lrformer.cli.sharding import Outputs
    from lrformer.engine import distributed
    from lrformer.errors import JobAbortedError

    options = Namespace(no_overlay=False, panel=False, json=False, frames=False)
    recorder = Recorder(Manifest(tmp_path), Progress(1, False), Outputs(options), tmp_path)
    monkeypatch.setattr(distributed, "aborted", lambda: True)
    with pytest.raises(JobAbortedError, match="another process of this job failed"):
        recorder.report([record(Path("/a.png"), "a", ["a.png"])])
    assert not (tmp_path / "manifest.jsonl").exists()  # nothing written after the others' lock went
