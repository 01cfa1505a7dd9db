"""``lrformer predict VIDEO``: segment a video frame by frame into an overlay video (same frame rate
and size), optionally a panel video, per-frame label maps and class fractions."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..engine.distributed import stop_if_aborted
from ..image import ImageReadError, VideoReader, overlay, panel, save_label_png, video_writer
from ..image.visualize import class_pixels, class_rows
from ..inference import Predictor, prepare
from .outputs import Legend, write_json, writing


class VideoOutputs:
    """The outputs of one video named ``name``: writers opened together, committed together
    (atomically, when the video is done), per-frame label maps and the class-fraction summary."""

    def __init__(self, out: Path, name: str, legend: Legend, args: argparse.Namespace) -> None:
        self.out, self.name, self.legend, self.args = out, name, legend, args
        self.counts = np.zeros(0, dtype=np.int64)  # pixels per class over all frames
        self.per_frame: list[dict] = []
        self.done = 0
        self.overlay = self.panel = None

    def open(self, stack: contextlib.ExitStack, fps: float, size: tuple[int, int]) -> None:
        """Open the video writers at ``fps`` for frames of ``size`` ``(H, W)``; ``stack`` commits them."""
        self.size = size
        if not self.args.no_overlay:
            self.overlay = stack.enter_context(video_writer(self.out / f"{self.name}_overlay.mp4", fps, size))
        if self.args.panel:
            wide = (size[0], 2 * size[1])
            self.panel = stack.enter_context(video_writer(self.out / f"{self.name}_panel.mp4", fps, wide))

    def frame(self, index: int, frame: np.ndarray | None, label: np.ndarray | None) -> None:
        """Write frame ``index``; an undecodable frame (``None``) is written black, keeping the timing."""
        palette = self.legend.palette
        if label is None:
            frame = np.zeros((*self.size, 3), dtype=np.uint8)
        elif self.args.frames:
            path = self.out / f"{self.name}_frames" / f"{index:06d}.png"
            with writing(path, self.done, "frame(s)"):
                save_label_png(path, label, palette)
        if self.panel is not None:
            self.panel.write(
                panel(frame, label, palette, legend=False) if label is not None else np.hstack([frame] * 2)
            )
        if self.overlay is not None:
            self.overlay.write(
                frame if label is None else overlay(frame, label, palette, self.args.opacity, inplace=True)
            )
        if label is not None:
            self.done += 1
            if self.args.json:
                self._count(index, class_pixels(label))

    def _count(self, index: int, counts: np.ndarray) -> None:
        if len(counts) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(counts) - len(self.counts)))
        self.counts[: len(counts)] += counts
        total = int(counts.sum())
        fractions = {str(i): round(int(c) / total, 6) for i, c in enumerate(counts) if c}
        self.per_frame.append({"frame": index, "fractions": fractions})


def segment_video(
    path: Path, name: str, out: Path, predictor: Predictor, legend: Legend, args: argparse.Namespace,
    show_progress: bool = True,
) -> tuple[int, list[str], list[str]]:  # fmt: skip
    """Segment the video at ``path`` into the outputs named ``name``, ``args.batch_size`` frames
    per forward pass (``show_progress``: a frame bar). Decoding and encoding overlap the network: a
    reader thread decodes the next batch and a writer thread encodes the last ones (OpenCV works
    without the GIL), so at most four batches of frames are in memory.

    Returns:
        ``(frames segmented, errors, notes)``: undecodable frames are errors (each written black,
        so the output keeps the input's frame count and timing); a video shorter than its header
        announces is a note. A video with no decodable frame raises ``ImageReadError``, one
        OpenCV cannot encode ``VideoWriteError``; either leaves no output behind.
    """
    from tqdm import tqdm

    outputs = VideoOutputs(out, name, legend, args)
    with VideoReader(path) as video, contextlib.ExitStack() as stack:
        outputs.open(stack, video.info.fps, video.info.size)
        frames = iter(video)

        def read() -> list[tuple[int, np.ndarray | None]]:
            """The next ``batch_size`` decodable frames, with the undecodable ones among them."""
            batch, good = [], 0
            for index, frame in frames:
                batch.append((index, frame))
                good += frame is not None
                if good == args.batch_size:
                    break
            return batch

        def write(batch: list[tuple[int, np.ndarray | None]], labels: list[np.ndarray]) -> None:
            found = iter(labels)
            for index, frame in batch:
                outputs.frame(index, frame, next(found) if frame is not None else None)
            bar.update(len(batch))

        with tqdm(total=video.info.frames or None, unit="frame", desc=name, file=sys.stderr, leave=False,
                  disable=not show_progress) as bar, ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:  # fmt: skip
            upcoming, written = reader.submit(read), deque()
            while batch := upcoming.result():
                stop_if_aborted()  # another process of a torchrun job failed: stop writing into --out
                upcoming = reader.submit(read)  # decoded while the network runs
                prepared = [prepare(frame, predictor.config, input_format="bgr") for _, frame in batch if frame is not None]
                labels = predictor.predict_prepared(prepared, args.batch_size) if prepared else []
                written.append(writer.submit(write, batch, labels))
                while len(written) > 2 or (written and written[0].done()):
                    written.popleft().result()  # a failed write raises here
            while written:
                written.popleft().result()
        if not outputs.done:
            raise ImageReadError(f"{path}: no frame of the video could be decoded")
    if args.json:  # once the videos are in place
        json_path = out / f"{name}.json"
        with writing(json_path, outputs.done, "frame(s)"):
            write_json(json_path, {
                "input": str(path), "size": list(video.info.size), "fps": video.info.fps,
                "frames": outputs.done, "classes": class_rows(outputs.counts, legend.names),
                "per_frame": outputs.per_frame,
            })  # fmt: skip
    return outputs.done, video.errors, video.notes
