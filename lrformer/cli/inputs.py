"""What ``lrformer predict`` reads and writes: inputs expanded into image and video files, output
names that cannot collide, and an ``--out`` folder that cannot mix with the inputs."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..files import GLOB_CHARS, glob_files, walk_files
from ..image.io import IMAGE_SUFFIXES
from ..image.video import VIDEO_SUFFIXES, is_video
from .common import ensure_writable, is_inside

IMAGE_OUTPUTS = ("{}.png", "{}_overlay.jpg", "{}_panel.jpg", "{}.json")
VIDEO_OUTPUTS = ("{}_overlay.mp4", "{}_panel.mp4", "{}.json")
FRAMES_FOLDER = "{}_frames"
"""Files (and the per-frame folder) written for an input named ``name``: label map, overlay, panel, class
fractions; a video's segmented videos and its per-frame label maps."""


def is_video_file(path: Path) -> bool:
    """Videos by suffix; a file of another, unknown suffix is a video if OpenCV reads it as one and
    it is not an image."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES or suffix in IMAGE_SUFFIXES:
        return suffix in VIDEO_SUFFIXES
    import cv2

    return not cv2.haveImageReader(str(path)) and is_video(path)


def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[str], list[str]]:
    """Expand files, folders (recursive) and globs into image and video files, each once.

    Returns:
        ``(files, errors, notes)``: the files in input order, one error per input that yields no
        image, and one note per symbolic link skipped (loops, broken links).
    """
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES

    def is_media(path: Path) -> bool:
        return path.suffix.lower() in suffixes

    files: list[Path] = []
    errors: list[str] = []
    notes: list[str] = []
    for entry in inputs:
        path = Path(entry)
        if not entry.strip():
            errors.append("an input is an empty string (an unset shell variable?)")
            continue
        if path.is_dir():
            found, skipped = walk_files(path, is_media)
            if not found:
                errors.append(f"{entry}: folder holds no images or videos ({', '.join(suffixes)})")
        elif path.is_file():
            found, skipped = [path], []
        elif any(c in entry for c in GLOB_CHARS):
            found, skipped = glob_files(entry, is_media)
            if not found:
                errors.append(f"{entry}: no image or video matches this pattern")
        else:
            found, skipped = [], []
            errors.append(f"{entry}: no such file or folder")
        files += found
        notes += skipped
    unique = list(dict.fromkeys(Path(os.path.abspath(f)) for f in files))  # an image given twice runs once
    return unique, errors, notes


def output_names(files: list[Path]) -> list[str]:
    """Output names (without suffix) that cannot collide: each file's path relative to the deepest
    folder holding all the inputs, without its suffix (``d1/a.png`` → ``d1/a``); if two inputs
    differ only by suffix, every name keeps its suffix (``d1/a.png``), unique as the paths are."""
    if not files:
        return []
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    relative = [f.relative_to(root) for f in files]
    stems = [str(r.with_suffix("")) for r in relative]
    if len(set(stems)) == len(stems) and not _clash(stems):
        return stems
    full = [str(r) for r in relative]
    if _clash(full):  # an output file would be a folder of another output: only contrived trees do this
        raise InputError(f"the inputs' names give outputs that collide ({_clash(full)}); rename or split the inputs")
    return full


def _clash(names: list[str]) -> str:
    """An output file of one name that is a folder of another's outputs (``d`` and ``d.png/x``) or
    lies in another's per-frame folder (``v`` and ``v_frames/x``), or ``""``."""
    frames = {FRAMES_FOLDER.format(name) for name in names}
    folders = {str(parent) for name in names for parent in Path(name).parents} | frames
    for name in names:
        for output in (pattern.format(name) for pattern in IMAGE_OUTPUTS + VIDEO_OUTPUTS):
            if output in folders or any(str(parent) in frames for parent in Path(output).parents):
                return output
    return ""


def check_output_folder(out: Path, inputs: list[str], files: list[Path]) -> None:
    """Refuse an ``--out`` that is a file, sits inside an input folder, holds an input (so outputs
    would land among the user's files), or cannot be written to; create it otherwise."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder (it is created if missing)")
    for entry in inputs:
        if Path(entry).is_dir() and is_inside(out, entry):
            raise InputError(
                f"--out {out} is inside the input folder {entry}: outputs would mix with the images (and be "
                f"read as inputs next time); choose a folder outside it, e.g. --out {entry.rstrip('/')}_segmented"
            )
    for image in files:
        if is_inside(image, out):
            raise InputError(
                f"--out {out} holds the input {image}: outputs would be written among your files (and could "
                "replace some); choose a folder that holds no input, e.g. a new one"
            )
    ensure_writable(out, "--out")
