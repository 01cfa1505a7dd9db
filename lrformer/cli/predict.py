"""``lrformer predict``: segment image and video files, folders or globs; write label PNGs, overlays
with a legend, panels and class fractions (naming and ``--out`` rules: :mod:`.inputs`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "segment images and videos: label maps (palette PNG), overlays with a legend, panels, class fractions"
EXAMPLE = (
    "examples:\n  lrformer predict --model lrformer_t --weights lrformer_t_ade20k.pth photos/ --out out/ --json\n"
    "  lrformer predict --weights work_dirs/run/best.pth clip.mp4 --out out/ --batch-size 8 --frames\n"
    "  lrformer predict --weights lrformer_t_int8.xml photos/ --out out/ --threads 4   # an exported model"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import (
        add_max_pixels_argument,
        add_model_arguments,
        add_precision_argument,
        add_test_arguments,
        add_threads_argument,
        fraction,
        non_negative_int,
        positive_int,
    )

    add_model_arguments(parser)
    add_precision_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image or video files, folders (recursive) or globs; videos: anything OpenCV "
                        "decodes (mp4, avi, mov, mkv, webm, ...)")  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder")
    add_test_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1,
                        help="images, video frames (or windows) per forward pass")  # fmt: skip
    parser.add_argument(
        "--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1), help="image-decoding processes"
    )
    parser.add_argument("--palette", default=None,
                        help="ade20k | cityscapes | cocostuff | random | a dataset YAML with a palette (colours and "
                        "legend names; default: a checkpoint's own, else from the class count: 150 ade20k, "
                        "19 cityscapes, 171 cocostuff, else random)")  # fmt: skip
    parser.add_argument("--opacity", type=fraction, default=0.5, help="overlay opacity of the label colours (0-1)")
    parser.add_argument("--no-overlay", action="store_true", help="no overlay (NAME_overlay.jpg / .mp4)")
    parser.add_argument("--panel", action="store_true",
                        help="also write image | prediction side by side (NAME_panel.jpg / .mp4)")  # fmt: skip
    parser.add_argument("--no-legend", action="store_true", help="no legend of the classes present on the pictures")
    parser.add_argument("--json", action="store_true",
                        help="also write NAME.json: the fraction of pixels per class (videos: overall and per frame)")  # fmt: skip
    parser.add_argument("--frames", action="store_true", help="videos: also write a label PNG per frame (NAME_frames/)")
    add_max_pixels_argument(parser)
    parser.epilog = EXAMPLE


def run(args: argparse.Namespace) -> int:
    from ..inference import Predictor
    from ..inference.predictor import model_defaults
    from .common import check_run_options, inference_config, load_model, predictor_options
    from .outputs import ImageOutputs, Legend

    check_run_options(args)
    images, videos, errors = _collect(args)
    model = load_model(args, exported=True)
    predictor = Predictor(model, inference_config(args, model_defaults(model)), **predictor_options(model, args))
    out = Path(args.out)
    legend = Legend.for_model(predictor.network.description, predictor.num_classes, args.palette)
    outputs = ImageOutputs(out, legend, args)
    _segment_images(images, predictor, outputs, args, errors)
    frames = _segment_videos(videos, out, predictor, outputs.legend, args, errors)
    summary = f"segmented {outputs.done} image(s)" + (
        f" and {frames} frame(s) of {len(videos)} video(s)" if videos else ""
    )
    print(f"{summary} into {out}" + (f"; {len(errors)} failed:" if errors else ""))
    for error in errors:
        print(f"  {error}")
    return 1 if errors else 0


Named = list[tuple[Path, str]]
"""Input files with the names of their outputs."""


def _collect(args: argparse.Namespace) -> tuple[Named, Named, list[str]]:
    """The images and videos to segment, each with its output name, and the inputs that could not
    be used; refuses an unusable ``--out`` or set of options before the model is loaded."""
    from ..errors import InputError
    from .inputs import check_output_folder, collect_inputs, is_video_file, output_names

    files, errors, notes = collect_inputs(args.inputs)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not files:
        raise InputError(f"no input images or videos: {'; '.join(errors)}; give files, folders or quoted globs")
    names = output_names(files)
    if not args.out.strip():
        raise InputError("--out is empty: give the folder to write to (an unset shell variable?)")
    check_output_folder(Path(args.out), args.inputs, files)
    images: Named = []
    videos: Named = []
    for file, name in zip(files, names):
        (videos if is_video_file(file) else images).append((file, name))
    if videos and args.no_overlay and not (args.panel or args.frames or args.json):
        raise InputError(
            f"{videos[0][0]} is a video, and with --no-overlay nothing would be written for it: add --frames "
            "(a label map per frame), --json (class fractions) or --panel"
        )
    return images, videos, errors


def _segment_images(images: Named, predictor, outputs, args: argparse.Namespace, errors: list[str]) -> None:
    """Segment ``images`` into ``outputs``, decoded and prepared in ``args.workers`` loader processes
    and run ``args.batch_size`` at a time; a file that fails is added to ``errors`` (shown in the
    progress bar's count) and does not stop the run."""
    import torch
    from tqdm import tqdm

    from ..inference import PreparedImages

    dataset = PreparedImages(
        [path for path, _ in images], predictor.config, outputs.keep_image, args.max_pixels, return_errors=True
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.workers if images else 0, collate_fn=list, shuffle=False
    )
    with tqdm(total=len(images), unit="img", disable=len(images) < 2, file=sys.stderr) as bar:
        for batch in loader:
            for item in batch:
                if item.error:
                    errors.append(item.error)
                    tqdm.write(f"error: {item.error}", file=sys.stderr)
            good = [item for item in batch if item.error is None]
            labels = predictor.predict_prepared([item.prepared for item in good], args.batch_size) if good else []
            for item, label in zip(good, labels):
                path, name = images[item.index]
                errors += outputs.write(name, path, item.prepared.bgr, label)
                item.prepared.bgr = None  # drawn into; free it before the next image
            bar.update(len(batch))
            bar.set_postfix(failed=len(errors))


def _segment_videos(videos: Named, out: Path, predictor, legend, args: argparse.Namespace, errors: list[str]) -> int:
    """Segment ``videos`` one after the other (:func:`~.video.segment_video`) and return the frames
    segmented; an unreadable or unwritable video or frame is added to ``errors`` and does not stop the run."""
    from ..errors import ImageReadError, VideoWriteError
    from .video import segment_video

    frames = 0
    for path, name in videos:
        try:
            done, problems, remarks = segment_video(path, name, out, predictor, legend, args)
        except (ImageReadError, VideoWriteError) as exc:
            errors.append(str(exc))
            continue
        frames += done
        errors += problems
        for remark in remarks:
            print(f"note: {remark}", file=sys.stderr)
    return frames
