"""``lrformer predict`` as a sharded, resumable job: two CPU processes under torchrun, a run killed
half-way and re-run, and a single uninterrupted process all write the same bytes; the manifest
names every input once with its final status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from lrformer.cli.main import main
from lrformer.cli.manifest import Manifest
from lrformer.cli.sharding import Job, deal
from lrformer.engine.workdir import WorkDirLock

from .helpers import communicate_bounded, error_line, run_bounded, synthetic_photo, wait_until

SIZES = [(40, 40), (64, 48), (48, 96), (90, 60), (32, 120), (72, 72), (50, 150), (120, 80), (36, 36), (96, 128)]
OPTIONS = ["--workers", "1", "--panel", "--json", "--frames"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """~20 images of mixed sizes in two folders, a short video and two corrupt files."""
    folder = tmp_path_factory.mktemp("collection") / "photos"
    for index in range(20):
        height, width = SIZES[index % len(SIZES)]
        sub = folder / ("street" if index % 3 else "drone")
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"img{index:02d}.{'png' if index % 4 else 'jpg'}"), synthetic_photo(height, width, index))
    (folder / "drone" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "street" / "empty.png").write_bytes(b"")
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for seed in range(4):
        writer.write(synthetic_photo(48, 64, seed=seed))
    writer.release()
    return folder


def predict_command(model_file: Path, inputs: Path, out: Path) -> list[str]:
    return ["predict", "--model", str(model_file), str(inputs), "--out", str(out), *OPTIONS]


def outputs_of(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.jsonl"}  # fmt: skip


def final_manifest(out: Path) -> dict[str, str]:
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == len({entry["input"] for entry in lines})  # every input once
    return {Path(entry["input"]).name: entry["status"] for entry in lines}


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory, request) -> tuple[Path, dict[str, bytes]]:
    """One process, uninterrupted."""
    model_file = request.getfixturevalue("module_model_file")
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(predict_command(model_file, inputs, out)) == 1  # the two corrupt files fail
    return out, outputs_of(out)


@pytest.fixture(scope="module")
def module_model_file(tmp_path_factory) -> Path:
    import torch

    cases = torch.load(Path(__file__).parent / "data" / "tiny_cases.pt", weights_only=True)
    path = tmp_path_factory.mktemp("model") / "tiny.json"
    checkpoint = Path(__file__).parent / "data" / "tiny_released_layout.pth"
    path.write_text(json.dumps({**cases["config"], "name": "lrformer_t", "pretrained": str(checkpoint)}))
    return path


def test_the_reference_run_records_every_input(reference):
    out, written = reference
    statuses = final_manifest(out)
    assert len(statuses) == 23 and statuses.pop("broken.jpg") == statuses.pop("empty.png") == "failed"
    assert set(statuses.values()) == {"done"}
    assert {"drone/img00.png", "drone/img00_overlay.jpg", "drone/img00_panel.jpg", "drone/img00.json",
            "clip_overlay.mp4", "clip_panel.mp4", "clip.json", "clip_frames/000003.png"} <= set(written)  # fmt: skip


def test_two_processes_under_torchrun_write_the_same_bytes(reference, inputs, module_model_file, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "lrformer", *predict_command(module_model_file, inputs, out)]  # fmt: skip
    done = run_bounded(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1, done.stderr[-3000:]  # the corrupt files
    assert outputs_of(out) == reference[1]
    assert final_manifest(out) == final_manifest(reference[0])
    summary = done.stdout
    assert summary.count("segmented 20 image(s) and 4 frame(s) of 1 video(s)") == 1  # one summary, by the main process
    assert "2 failed:" in summary and "broken.jpg" in summary and "per process 0: " in summary
    ranks = {json.loads(line)["rank"] for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert ranks == {0, 1}


def test_a_killed_run_resumes_and_finishes_with_the_same_bytes(reference, inputs, module_model_file, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lrformer", *predict_command(module_model_file, inputs, out)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    records = out / "manifest.jsonl"
    try:
        wait_until(lambda: records.is_file() and len(records.read_text().splitlines()) >= 6, "six inputs done")
    finally:
        child.send_signal(signal.SIGKILL)
        communicate_bounded(child)
    first = {json.loads(line)["input"] for line in records.read_text().splitlines() if line.endswith("}")}
    with open(records, "a") as handle:
        handle.write('{"command": "predict", "input": "/cut sh')  # a line a kill cut short
    again = run_bounded(command, capture_output=True, text=True)
    assert again.returncode == 1, again.stderr[-3000:]
    assert "already done, skipped" in again.stdout
    assert "1 line(s) of" in again.stderr and "the outputs on disk decide what is done" in again.stderr
    assert outputs_of(out) == reference[1]
    assert final_manifest(out) == final_manifest(reference[0])
    redone = [json.loads(line)["input"] for line in records.read_text().splitlines()]
    assert len(first) >= 6 and len(redone) == 23


def test_more_processes_than_inputs(module_model_file, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "only.png"), synthetic_photo(40, 56, 3))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "lrformer", "predict", "--model", str(module_model_file), str(photos), "--out", str(tmp_path / "o"),
               "--workers", "0"]  # fmt: skip
    done = run_bounded(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "segmented 1 image(s)" in done.stdout and (tmp_path / "o" / "only.png").is_file()


def test_overwrite_redoes_everything(reference, inputs, module_model_file, tmp_path, capsys):
    out = tmp_path / "out"
    photo = inputs / "street" / "img01.png"
    assert main(["predict", "--model", str(module_model_file), str(photo), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(module_model_file), str(photo), "--out", str(out)]) == 0
    assert "segmented 0 image(s) into" in capsys.readouterr().out
    assert main(["predict", "--model", str(module_model_file), str(photo), "--out", str(out), "--overwrite"]) == 0
    assert "segmented 1 image(s) into" in capsys.readouterr().out


def test_a_second_job_on_the_same_out_is_refused(module_model_file, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = WorkDirLock(out, "lrformer predict job", "--out")
    try:
        assert main(["predict", "--model", str(module_model_file), str(inputs / "drone"), "--out", str(out)]) == 2
    finally:
        holder.release()
    line = error_line(capsys)
    assert line.startswith(f"lrformer predict: error: {out} is in use by another lrformer predict job (pid {os.getpid()}")
    assert line.endswith("wait for it to end, or choose another --out")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written


def test_a_manifest_of_another_command_is_named_and_the_outputs_decide(module_model_file, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_text('{"command": "export", "input": "x"}\n')
    assert main(["predict", "--model", str(module_model_file), str(inputs / "street" / "img01.png"), "--out",
                 str(out)]) == 0  # fmt: skip
    assert "1 line(s) of" in capsys.readouterr().err
    foreign, *ours = (out / "manifest.jsonl").read_text().splitlines()
    assert foreign == '{"command": "export", "input": "x"}'  # another program's line is kept as it was
    assert [(Path(json.loads(line)["input"]).name, json.loads(line)["status"]) for line in ours] == [("img01.png", "done")]


def test_the_plan_balances_pixels_and_is_deterministic():
    jobs = [Job(Path(f"{i:02d}.png"), str(i), False, pixels=p) for i, p in enumerate([100, 10, 10, 10, 10, 90, 5, 5])]
    deal(jobs, 2)
    loads = [sum(j.pixels for j in jobs if j.rank == r) for r in (0, 1)]
    assert loads == [120, 120] and jobs[0].rank != jobs[5].rank
    again = [Job(j.path, j.name, False, pixels=j.pixels) for j in jobs]
    deal(again, 2)
    assert [j.rank for j in again] == [j.rank for j in jobs]


def test_manifest_appends_and_compacts(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.append([{"command": "predict", "input": "a", "name": "a", "outputs": [], "status": "failed", "error": "x"}])
    manifest.append([{"command": "predict", "input": "a", "name": "a", "outputs": ["a.png"], "status": "done",
                      "error": None}, {"command": "predict", "input": "b", "name": "b", "outputs": [], "status": "done",
                                       "error": None}])  # fmt: skip
    records, note = manifest.read()
    assert note is None and records["a"]["status"] == "done"
    final = manifest.compact(["b", "a", "c"])
    assert list(final) == ["b", "a"]
    assert [json.loads(line)["input"] for line in (tmp_path / "manifest.jsonl").read_text().splitlines()] == ["b", "a"]


def test_shards_of_a_slurm_array_together_write_the_same_bytes(reference, inputs, module_model_file, tmp_path, capsys):
    out = tmp_path / "out"
    for index in (1, 0):  # array tasks finish in any order
        assert main([*predict_command(module_model_file, inputs, out), "--shard", f"{index}/2"]) in (0, 1)
        assert f"(shard {index}/2)" in capsys.readouterr().out
    assert outputs_of(out) == reference[1]
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(Path(entry["input"]).name for entry in lines) == sorted(final_manifest(reference[0]))
    assert not list(out.glob(".lock*"))
    assert main([*predict_command(module_model_file, inputs, out), "--shard", "2/2"]) == 2
    assert "expected K/N with 0 <= K < N, got '2/2'" in capsys.readouterr().err


def test_a_rerun_with_more_outputs_writes_them_and_cleanup_spares_other_files(module_model_file, inputs, tmp_path):
    out, photo = tmp_path / "out", inputs / "street" / "img01.png"
    base = ["predict", "--model", str(module_model_file), str(photo), "--out", str(out)]
    assert main([*base, "--no-overlay"]) == 0
    (out / ".notes.tmpl").write_text("mine")  # a user's hidden file that merely looks temporary
    assert main(base) == 0  # the overlay asked for now is written, not skipped
    assert (out / "img01_overlay.jpg").is_file() and (out / ".notes.tmpl").read_text() == "mine"
