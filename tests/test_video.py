"""Videos: ``lrformer predict VIDEO`` and ``Predictor.predict_video`` segment each frame exactly as
the same frame given as an image, keep the input's frame count, size and rate, and survive
undecodable frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from lrformer import Predictor
from lrformer.cli.main import main
from lrformer.image import video as video_module
from lrformer.image.io import to_bgr

from .helpers import error_line, synthetic_photo

FPS, SIZE, FRAMES = 12.5, (72, 104), 6
VideoCapture = cv2.VideoCapture  # the real one, before a test replaces it


def _frames() -> list[np.ndarray]:
    """Frames with content that moves and changes colour (BGR)."""
    base = synthetic_photo(*SIZE, seed=3)
    frames = []
    for i in range(FRAMES):
        frame = np.roll(base, 9 * i, axis=1).copy()
        cv2.rectangle(frame, (5 + 10 * i, 10), (40 + 10 * i, 50), (255, 40 * i, 0), -1)
        frames.append(frame)
    return frames


@pytest.fixture()
def clip(tmp_path):
    """A synthetic MPEG-4 clip made with OpenCV's writer, and its frames as OpenCV decodes them."""
    path = tmp_path / "in" / "clip.mp4"
    path.parent.mkdir()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE[::-1])
    for frame in _frames():
        writer.write(frame)
    writer.release()
    return path, _decode(path)


def _decode(path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_video_equals_its_frames_as_images(clip, tmp_path, tiny_model_file, tiny_model, capsys):
    path, decoded = clip
    assert len(decoded) == FRAMES
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(tiny_model_file), str(path), "--out", str(out), "--frames", "--panel",
               "--batch-size", "4", "--workers", "0"])  # fmt: skip
    assert rc == 0, capsys.readouterr()
    assert "segmented 0 image(s) and 6 frame(s) of 1 video(s)" in capsys.readouterr().out
    # the same frames, written as PNG files and segmented as images by the CLI
    (tmp_path / "as_images").mkdir()
    for i, frame in enumerate(decoded):
        cv2.imwrite(str(tmp_path / "as_images" / f"{i:06d}.png"), frame)
    assert main(["predict", "--model", str(tiny_model_file), str(tmp_path / "as_images"), "--out",
                 str(tmp_path / "images_out"), "--no-overlay", "--workers", "0"]) == 0  # fmt: skip
    from_video = [np.asarray(Image.open(out / "clip_frames" / f"{i:06d}.png")) for i in range(FRAMES)]
    from_images = [np.asarray(Image.open(tmp_path / "images_out" / f"{i:06d}.png")) for i in range(FRAMES)]
    for a, b in zip(from_video, from_images, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in from_video}) > 1  # the frames differ: a per-frame result, not one repeated
    # the Python API: frames in order, arrays given as BGR, one batch at a time
    predictor = Predictor(tiny_model)
    for a, b in zip(predictor.predict_video(path, batch_size=4), from_video, strict=True):
        np.testing.assert_array_equal(a, b)
    by_array = Predictor(tiny_model, input_format="bgr").predict(decoded)
    for a, b in zip(by_array, from_video, strict=True):
        np.testing.assert_array_equal(a, b)
    # the segmented videos: same frame count, size and rate (the panel is twice as wide)
    for name, width in (("clip_overlay.mp4", SIZE[1]), ("clip_panel.mp4", 2 * SIZE[1])):
        capture = cv2.VideoCapture(str(out / name))
        assert capture.get(cv2.CAP_PROP_FPS) == FPS
        assert (capture.get(cv2.CAP_PROP_FRAME_HEIGHT), capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == (SIZE[0], width)
        assert len(_decode(out / name)) == FRAMES
    assert not list(out.glob(".*"))  # no temporary file left


def test_array_channel_order():
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    np.testing.assert_array_equal(to_bgr(rgb)[0, 0], [0, 0, 200])
    np.testing.assert_array_equal(to_bgr(rgb, "bgr")[0, 0], [200, 0, 0])  # taken as it is: blue
    np.testing.assert_array_equal(to_bgr(np.dstack([rgb, rgb[..., :1]]), "bgr")[0, 0], [200, 0, 0])  # BGRA
    with pytest.raises(ValueError, match="input_format must be 'rgb' or 'bgr'"):
        to_bgr(rgb, "hsv")


def test_predict_video_reads_one_batch_ahead(clip, tiny_model, monkeypatch):
    reads = []

    class Counting:
        def __init__(self, *args):
            self.capture = VideoCapture(*args)

        def read(self):
            reads.append(1)
            return self.capture.read()

        def __getattr__(self, name):
            return getattr(self.capture, name)

    monkeypatch.setattr(video_module.cv2, "VideoCapture", Counting)
    labels = Predictor(tiny_model).predict_video(clip[0], batch_size=2)
    next(labels)
    assert len(reads) == 2  # the first label map came after decoding one batch, not the video


class _Damaged:
    """A capture whose ``bad`` reads fail (as FFmpeg does for a damaged frame) while the rest decode."""

    def __init__(self, path, bad):
        self.capture, self.bad, self.calls = VideoCapture(str(path)), bad, 0

    def read(self):
        self.calls += 1
        ok, frame = self.capture.read()
        return (False, None) if self.calls - 1 in self.bad else (ok, frame)

    def __getattr__(self, name):
        return getattr(self.capture, name)


def test_a_damaged_frame_is_reported_and_the_rest_is_segmented(
    clip, tmp_path, tiny_model_file, tiny_model, capsys, monkeypatch
):
    path, decoded = clip
    monkeypatch.setattr(video_module.cv2, "VideoCapture", lambda p: _Damaged(p, bad={2}))
    out = tmp_path / "out"
    rc = main(["predict", "--model", str(tiny_model_file), str(path), "--out", str(out), "--frames",
               "--json", "--workers", "0"])  # fmt: skip
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 1, captured.err
    assert "frame 2 could not be decoded (damaged); it is skipped" in printed
    assert "and 5 frame(s) of 1 video(s)" in printed
    monkeypatch.undo()
    written = _decode(out / "clip_overlay.mp4")
    assert len(written) == FRAMES  # timing kept: the damaged frame is written black
    assert written[2].max() < 20 and written[3].max() > 100
    assert sorted(p.name for p in (out / "clip_frames").iterdir()) == [f"{i:06d}.png" for i in (0, 1, 3, 4, 5)]
    import json

    summary = json.loads((out / "clip.json").read_text())
    assert summary["frames"] == 5 and [f["frame"] for f in summary["per_frame"]] == [0, 1, 3, 4, 5]
    assert sum(c["pixels"] for c in summary["classes"]) == 5 * SIZE[0] * SIZE[1]
    (entry,) = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert entry["status"] == "failed" and "frame 2 could not be decoded" in entry["error"]  # retried by a re-run
    assert entry["outputs"] == ["clip_overlay.mp4", "clip.json", "clip_frames"]
    # the Python API keeps the numbering: None in the damaged frame's place
    monkeypatch.setattr(video_module.cv2, "VideoCapture", lambda p: _Damaged(p, bad={2}))
    labels = list(Predictor(tiny_model).predict_video(path, batch_size=2))
    monkeypatch.undo()
    assert [label is None for label in labels] == [False, False, True, False, False, False]
    for i in (0, 1, 3, 4, 5):
        np.testing.assert_array_equal(labels[i], np.asarray(Image.open(out / "clip_frames" / f"{i:06d}.png")))


def test_truncated_video_keeps_what_decodes(clip, tmp_path, tiny_model_file, capsys, monkeypatch):
    path, _ = clip
    monkeypatch.setattr(video_module.cv2, "VideoCapture", lambda p: _Damaged(p, bad=set(range(4, 99))))
    rc = main(["predict", "--model", str(tiny_model_file), str(path), "--out", str(tmp_path / "o"), "--workers", "0"])
    captured = capsys.readouterr()
    assert rc == 0  # missing trailing frames are a note, not a failure
    assert "the video ends after frame 3 although its header announces 6 frames" in captured.err
    monkeypatch.undo()
    assert len(_decode(tmp_path / "o" / "clip_overlay.mp4")) == 4


class _Resized(_Damaged):
    """A capture whose frames from the 3rd on come at another size (a resolution change)."""

    def read(self):
        ok, frame = self.capture.read()
        self.calls += 1
        return (ok, cv2.resize(frame, (50, 30)) if ok and self.calls > 2 else frame)


def test_frames_of_another_size_are_resized_to_the_video(clip, tmp_path, tiny_model_file, capsys, monkeypatch):
    path, decoded = clip
    monkeypatch.setattr(video_module.cv2, "VideoCapture", lambda p: _Resized(p, bad=set()))
    out = tmp_path / "o"
    assert main(["predict", "--model", str(tiny_model_file), str(path), "--out", str(out), "--frames",
                 "--workers", "0"]) == 0  # fmt: skip
    assert (
        "from frame 2 the frames are 50x30, not the video's 104x72; they are resized to it" in capsys.readouterr().err
    )
    monkeypatch.undo()
    assert len(_decode(out / "clip_overlay.mp4")) == FRAMES
    assert {np.asarray(Image.open(p)).shape for p in (out / "clip_frames").iterdir()} == {SIZE}


def test_a_video_with_nothing_to_write_is_refused(clip, tmp_path, tiny_model_file, capsys):
    assert main(["predict", "--model", str(tiny_model_file), str(clip[0]), "--out", str(tmp_path / "o"),
                 "--no-overlay"]) == 2  # fmt: skip
    assert "with --no-overlay nothing would be written for it: add --frames" in error_line(capsys)


def test_not_a_video(tmp_path, tiny_model_file, capsys):
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    rc = main(["predict", "--model", str(tiny_model_file), str(tmp_path / "fake.mp4"), "--out",
               str(tmp_path / "o"), "--workers", "0"])  # fmt: skip
    assert rc == 1
    assert "fake.mp4: not a video OpenCV can decode" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["manifest.jsonl"]  # no empty video left behind
