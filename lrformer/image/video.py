"""Reading and writing videos with OpenCV (FFmpeg): frames one at a time, never the whole video.

Frames are ``(H, W, 3)`` uint8 **BGR**, as OpenCV decodes them. A frame the decoder cannot read
is reported and skipped instead of ending the video; output videos are written atomically.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import ImageReadError, VideoWriteError
from ..utils import atomic_path

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
"""Suffixes treated as videos when folders and globs are expanded (a file named directly may be any
format OpenCV decodes)."""

MAX_CONSECUTIVE_FAILURES = 25
"""Undecodable frames in a row after which the rest of the video is taken as missing (truncated file)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: frame rate, frame size ``(H, W)`` and frame count (0: unknown)."""

    fps: float
    size: tuple[int, int]
    frames: int


def is_video(path: str | Path) -> bool:
    """Whether OpenCV can open ``path`` as a video and decode its first frame."""
    capture = cv2.VideoCapture(str(path))
    try:
        return capture.isOpened() and capture.read()[0]
    finally:
        capture.release()


class VideoReader:
    """The frames of a video file, decoded one at a time.

    Iterating yields ``(index, frame)``: ``frame`` is ``(H, W, 3)`` uint8 BGR at the size of
    :attr:`info`, or ``None`` for a frame that could not be decoded (its reason is appended to
    :attr:`errors`). Frames of another size (a resolution change mid-stream) are resized to it,
    with a note. Frames missing at the end (a truncated file, or a header announcing more frames
    than there are) end the iteration and are described in :attr:`notes`.

    Example::

        with VideoReader("clip.mp4") as video:
            print(video.info.fps, video.info.size)
            for index, frame in video:
                ...
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ImageReadError(f"{path}: no such video file")
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise ImageReadError(f"{path}: not a video OpenCV can decode (corrupt, or a codec FFmpeg lacks)")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        frames = max(int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        if height <= 0 or width <= 0:
            self.close()
            raise ImageReadError(f"{path}: the video has no readable frame size")
        self.info = VideoInfo(fps if fps > 0 else 25.0, (height, width), frames)
        self.errors: list[str] = []
        self.notes: list[str] = []

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | None]]:
        index, failed, resized = 0, [], False  # failed: undecodable frames not yet followed by a good one
        while len(failed) < MAX_CONSECUTIVE_FAILURES:
            ok, frame = self._capture.read()
            if not ok or frame is None:
                if self.info.frames and index + len(failed) >= self.info.frames:
                    break  # the announced end
                if not self.info.frames and not failed:
                    break  # no count to go by: the first failure is the end
                failed.append(index + len(failed))
                continue
            for lost in failed:
                self.errors.append(f"{self.path}: frame {lost} could not be decoded (damaged); it is skipped")
                yield lost, None
            index += len(failed)
            failed = []
            if frame.shape[:2] != self.info.size:
                if not resized:
                    self.notes.append(
                        f"{self.path}: from frame {index} the frames are {frame.shape[1]}x{frame.shape[0]}, not the "
                        f"video's {self.info.size[1]}x{self.info.size[0]}; they are resized to it"
                    )
                resized = True
                frame = cv2.resize(frame, self.info.size[::-1], interpolation=cv2.INTER_LINEAR)
            yield index, frame
            index += 1
        if failed or (self.info.frames and index < self.info.frames):
            self.notes.append(
                f"{self.path}: the video ends after frame {index - 1} although its header announces "
                f"{self.info.frames} frames (a truncated file, or an estimated count)"
            )

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Writer:
    """``cv2.VideoWriter`` counting the frames written (OpenCV reports no write errors)."""

    def __init__(self, writer: cv2.VideoWriter) -> None:
        self._writer, self.frames = writer, 0

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(frame)
        self.frames += 1


@contextlib.contextmanager
def video_writer(path: str | Path, fps: float, size: tuple[int, int]) -> Iterator[_Writer]:
    """A writer of MPEG-4 video (``mp4v``) at ``fps`` with frames of ``size`` ``(H, W)``.

    The file appears at ``path`` only when the block finishes without an error and the written
    file holds every frame (OpenCV's writer reports no errors, so a full disk is caught by reading
    the frame count back); it is never left half-written. MPEG-4 needs even sizes: the encoder
    drops the last row or column of an odd one.
    """
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
        if not writer.isOpened():
            raise VideoWriteError(f"cannot write {path}: OpenCV cannot encode a {size[1]}x{size[0]} MPEG-4 video")
        counting = _Writer(writer)
        try:
            yield counting
        finally:
            writer.release()
        capture = cv2.VideoCapture(str(tmp))
        written = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        if written != counting.frames:
            raise OSError(
                f"cannot write {path}: it holds {written} of its {counting.frames} frames (is the disk full?); free some "
                "space and rerun"
            )
