"""``lrformer predict`` never overwrites inputs or its own outputs, and finds files through links once."""

from __future__ import annotations

import errno
import os
import stat

import cv2
import pytest

from lrformer.cli.inputs import collect_inputs, output_names
from lrformer.cli.main import main
from lrformer.files import glob_files, walk_files

from .helpers import error_line, synthetic_photo


def _photo(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), synthetic_photo(48, 64, seed=seed))
    return path.read_bytes()


def _predict(model_file, *args):
    return main(["predict", "--model", str(model_file), "--workers", "0", *map(str, args)])


def test_out_inside_the_input_folder_is_refused_and_inputs_are_untouched(
    tmp_path, tiny_model_file, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # an empty --out must not mean the current folder
    photos = tmp_path / "photos"
    before = {name: _photo(photos / name, i) for i, name in enumerate(["a.png", "b.jpg"])}
    for out in (photos, photos / "segmented"):
        assert _predict(tiny_model_file, photos, "--out", out) == 2
        assert f"--out {out} is inside the input folder {photos}" in error_line(capsys)
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before  # nothing written, nothing replaced
    _photo(tmp_path / "c.png")
    assert _predict(tiny_model_file, tmp_path / "c.png", "--out", tmp_path) == 2  # c.png's label is c.png
    assert f"holds the input {tmp_path / 'c.png'}" in error_line(capsys)
    mine = _photo(tmp_path / "q" / "d.png")  # a user's file next to an input: d.jpg's label would be d.png
    _photo(tmp_path / "q" / "d.jpg")
    for args in ([tmp_path / "q" / "d.jpg"], [photos]):  # --out the input's folder, or above an input folder
        assert _predict(tiny_model_file, *args, "--out", tmp_path) == 2
        assert "holds the input" in error_line(capsys)
    assert (tmp_path / "q" / "d.png").read_bytes() == mine
    assert _predict(tiny_model_file, photos, "--out", "") == 2
    assert "--out is empty" in error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "photos", "q", "tiny.json"]


def test_output_names_never_collide(tmp_path, tiny_model_file):
    inputs = [tmp_path / "d1" / "a.png", tmp_path / "d2" / "a.png", tmp_path / "d3" / "a_1.png"]
    for i, path in enumerate(inputs):
        _photo(path, i)
    assert _predict(tiny_model_file, *inputs, "--out", tmp_path / "out") == 0
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*"))
    assert written == ["d1/a.png", "d1/a_overlay.jpg", "d2/a.png", "d2/a_overlay.jpg", "d3/a_1.png",
                       "d3/a_1_overlay.jpg", "manifest.jsonl"]  # fmt: skip
    # the same stem with two suffixes in one folder: every name keeps its suffix
    assert output_names([tmp_path / "x" / "a.jpg", tmp_path / "x" / "a.png", tmp_path / "x" / "a.png.jpg"]) == [
        "a.jpg", "a.png", "a.png.jpg"
    ]  # fmt: skip
    # a file d.jpg (label d.png) beside a folder d.png/: the names keep their suffixes too
    assert output_names([tmp_path / "r" / "d.jpg", tmp_path / "r" / "d.png" / "x.png"]) == ["d.jpg", "d.png/x.png"]
    assert output_names([tmp_path / "x" / "p.jpg"]) == ["p"]


def test_out_that_is_a_file_or_cannot_be_made(tmp_path, tiny_model_file, capsys):
    _photo(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    assert _predict(tiny_model_file, tmp_path / "a.png", "--out", tmp_path / "file") == 2
    assert "is a file: give a folder" in error_line(capsys)
    assert _predict(tiny_model_file, tmp_path / "a.png", "--out", tmp_path / "file" / "sub") == 2
    assert "cannot write --out" in error_line(capsys)


def test_full_disk_leaves_no_partial_or_temporary_file(tmp_path, tiny_model_file, capsys, monkeypatch):
    _photo(tmp_path / "in" / "a.png")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the flush of the finished temporary file fails
    assert _predict(tiny_model_file, tmp_path / "in", "--out", tmp_path / "out") == 2
    assert "No space left on device" in error_line(capsys)
    assert list((tmp_path / "out").iterdir()) == []  # neither a truncated output nor a temporary file


def test_outputs_get_permissions_from_the_umask(tmp_path, tiny_model_file):
    _photo(tmp_path / "in" / "a.png")
    previous = os.umask(0o027)
    try:
        assert _predict(tiny_model_file, tmp_path / "in", "--out", tmp_path / "out") == 0
    finally:
        os.umask(previous)
    for path in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_links_are_followed_once_and_skips_are_reported(tmp_path):
    root = tmp_path / "d"
    _photo(root / "a.png")
    _photo(root / "sub" / "b.png")
    _photo(tmp_path / "elsewhere" / "c.png")
    (root / "loop").symlink_to(root)  # a loop back to the top
    (root / "sub" / "up").symlink_to(root / "sub")  # a loop to itself
    (root / "linked").symlink_to(tmp_path / "elsewhere")  # a linked folder outside: included
    (root / "broken.png").symlink_to(tmp_path / "missing.png")
    files, notes = walk_files(root)
    assert [p.relative_to(root).as_posix() for p in files] == ["a.png", "linked/c.png", "sub/b.png"]
    assert len(notes) == 3 and any("broken link" in n for n in notes)
    assert sum("already included" in n for n in notes) == 2
    matched, _ = glob_files(f"{root}/**/*.png")
    assert [p.relative_to(root).as_posix() for p in matched] == ["a.png", "linked/c.png", "sub/b.png"]
    assert [p.name for p in glob_files(f"{root}/*.png")[0]] == ["a.png"]
    assert [p.name for p in glob_files(f"{root}/s?b/*.png")[0]] == ["b.png"]
    files, errors, notes = collect_inputs([str(root), f"{root}/sub/*.png"])  # b.png twice: run once
    assert len(files) == 3 and not errors and len(notes) == 3


@pytest.mark.parametrize("pattern", ["nothing/*.png", "*.nope"])
def test_globs_without_matches_are_errors(tmp_path, pattern, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files, errors, _ = collect_inputs([pattern])
    assert files == [] and errors == [f"{pattern}: no image or video matches this pattern"]
