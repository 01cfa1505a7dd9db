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
    parser.add_argument("--shard", type=shard, default=None, metavar="K/N",
                        help="segment only share K of N (K = 0..N-1, inputs dealt by sorted path), for N independent "
                        "jobs such as a SLURM array: --shard $SLURM_ARRAY_TASK_ID/N (under torchrun the processes "
                        "share the job themselves)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="segment every input again, also those an earlier run in --out finished (default: a "
                        "re-run does only what is missing, and refuses to mix in outputs of other settings or of "
                        "other inputs of the same names: see OUT/manifest.jsonl)")  # fmt: skip
    add_max_pixels_argument(parser)
    parser.epilog = EXAMPLE


def shard(text: str) -> tuple[int, int]:
    """argparse type: ``K/N`` with ``0 <= K < N``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return index, count


def run(args: argparse.Namespace) -> int:
    from ..deploy.runtimes import is_exported
    from ..engine.distributed import init_distributed, shutdown
    from ..errors import ConfigError
    from .common import check_run_options

    check_run_options(args)
    if args.shard and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--shard splits a job among independent runs; under torchrun its processes share the job "
                          "already: drop --shard")  # fmt: skip
    info = init_distributed("cpu" if is_exported(args.weights) else args.device)  # torchrun: one share per process
    try:
        return _run(args, info)
    finally:
        shutdown()


def _run(args: argparse.Namespace, info) -> int:
    """The main process collects the inputs and locks ``--out`` (the others wait and get the list),
    then every process segments its share of the job (all of it without torchrun)."""
    from ..engine.distributed import abort_others, on_main
    from ..utils import remove_stale_temporaries
    from .out_lock import lock_output

    out, locks = Path(args.out), []

    def prepare() -> tuple[Named, Named, list[str]]:
        collected = _collect(args)
        locks.append(lock_output(out, args.shard))  # before anything is written
        if not args.shard:  # shards of an array may be writing beside this run
            stale = remove_stale_temporaries(out, "*", recursive=True)
            if stale:
                print(f"note: removed {len(stale)} temporary file(s) an interrupted run left in {out}", file=sys.stderr)
        return collected

    try:
        images, videos, errors = on_main(prepare)
        return _share(args, info, images, videos, errors, out)
    except BaseException:
        abort_others()  # before the lock goes: the others stop waiting, or writing at their next batch
        raise
    finally:
        for lock in locks:  # the outputs folder keeps only outputs and the manifest
            lock.release()


def _share(args: argparse.Namespace, info, images: Named, videos: Named, errors: list[str], out: Path) -> int:
    """Plan the job, segment this process's share, gather the summary; returns the exit code."""
    import functools
    import time

    from ..engine.distributed import all_gather_objects, on_main, wait_for_every_rank
    from ..inference import Predictor
    from ..inference.predictor import model_defaults
    from .common import inference_config, load_model, predictor_options
    from .manifest import Manifest, record
    from .outputs import ImageOutputs, Legend
    from .segmenting import Progress, Recorder, segment_images, segment_videos
    from .sharding import Job, Outputs, finished, plan, settings_fingerprint

    manifest = Manifest(out)
    # by output name, whichever path an input was given by; ~0.7 KB per record, freed once planned
    earlier, note = manifest.read(keep=finished)
    if note and info.is_main:
        print(f"note: {note}", file=sys.stderr)
    settings, wanted = settings_fingerprint(args), Outputs(args)
    jobs = [Job(path, name, video) for video, named in ((False, images), (True, videos)) for path, name in named]
    jobs.sort(key=lambda job: os.fspath(job.path))
    if not args.overwrite:  # before planning reads every header; by the main process (its view of the files)
        own = jobs[args.shard[0] :: args.shard[1]] if args.shard else jobs  # a shard checks only its own inputs
        on_main(functools.partial(_check_earlier, own, earlier, settings, out))
    rank, world = args.shard or (info.rank, info.world_size)
    plan(jobs, wanted, out, earlier, args.overwrite, rank, world, balance=args.shard is None)
    if args.shard:  # the other shards' inputs are not this run's to report or compact
        jobs = [job for job in jobs if job.rank == rank]
    if info.is_main:  # outputs a killed run wrote before it could record them, or recorded under an old path
        manifest.append(record(job.path, job.name, wanted.written(job, out), settings=settings, shard=args.shard)
                        for job in jobs if job.done and getattr(earlier.get(job.name), "input", None) != str(job.path))  # fmt: skip
    del earlier
    args.device = _process_device(args, info)
    model = load_model(args, exported=True)
    predictor = Predictor(model, inference_config(args, model_defaults(model)), **predictor_options(model, args))
    legend = Legend.for_model(predictor.network.description, predictor.num_classes, args.palette)
    outputs = ImageOutputs(out, legend, args)
    mine = [job for job in jobs if not job.done and job.rank == rank]
    progress = Progress(sum(not job.done for job in jobs), info.is_main)
    began = time.perf_counter()
    recorder = Recorder(manifest, progress, wanted, out, info.rank, settings, args.shard)
    try:
        problems = segment_images([j for j in mine if not j.video], predictor, outputs, args, recorder)
        frames, video_problems = segment_videos([j for j in mine if j.video], predictor, outputs.legend, args, recorder)
        stats = {"rank": info.rank, "images": outputs.done, "frames": frames, "videos": sum(j.video for j in mine),
                 "seconds": time.perf_counter() - began, "problems": problems + video_problems,
                 "failed": recorder.failed}  # fmt: skip
        wait_for_every_rank()  # shares end at different times; the main process's bar counts on meanwhile
        every = all_gather_objects(stats)
    finally:
        progress.close()
    if info.is_main:
        _summarise(every, jobs, errors, out, manifest, args.shard)
    return 1 if errors or any(s["failed"] for s in every) else 0


def _check_earlier(jobs: list, earlier: dict, settings: str, out: Path) -> None:
    """Refuse to take the outputs another input left under the same name for this one's, or to mix
    outputs of other settings (model, weights, test settings, palette) with this run's."""
    from ..errors import ConfigError

    other, clashes = 0, []
    for job in jobs:
        found = earlier.get(job.name)
        if found is not None and found.input != str(job.path) and _another_file(found.input, job.path):
            clashes.append((job, found))  # (also when it failed: its partial outputs are there)
        elif found is not None and not found.failed and found.settings not in (None, settings):
            other += 1
    if clashes:
        job, found = clashes[0]
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        error = ConfigError(
            f"{out} holds the outputs of {found.input} under the name {job.name!r}, which {job.path} would take too"
            f"{more}: choose another --out, or pass --overwrite to replace them"
        )
    elif other:
        error = ConfigError(
            f"{other} input(s) in {out} were segmented with other settings (another model, weights file, test "
            "settings, palette or opacity): pass --overwrite to segment them again with these, or choose another --out"
        )
    else:
        return
    raise error


def _another_file(recorded: str, path: Path) -> bool:
    """Whether ``recorded`` is an existing file other than ``path`` and not a copy of it (one that
    is gone was moved, or is mounted elsewhere here: taken as the same input)."""
    from .sharding import file_identity

    try:
        return not os.path.samefile(recorded, path) and file_identity(recorded) != file_identity(str(path))
    except OSError:
        return False


def _process_device(args: argparse.Namespace, info) -> str:
    """This process's device: under torchrun ``cuda`` (an exported model's too) becomes
    ``cuda:LOCAL_RANK``, and an OpenVINO ``gpu`` ``gpu.LOCAL_RANK``."""
    from ..deploy.runtimes import is_exported, resolve_device
    from ..engine.distributed import device_for

    if not is_exported(args.weights):
        return str(device_for(args.device, info, "--device", "--device cpu"))
    device, local = resolve_device(args.weights, args.device), info.local_rank
    if info.enabled and device == "cuda":
        return f"cuda:{local}"
    if info.enabled and device == "gpu":  # OpenVINO calls a machine's only GPU "GPU", several "GPU.0", "GPU.1", ...
        from ..deploy.openvino import openvino_module

        numbered = f"GPU.{local}" in openvino_module().Core().available_devices
        return f"gpu.{local}" if numbered or local else "gpu"
    return device


MAX_LISTED = 20
"""Failures listed in the summary (the manifest has them all)."""


def _summarise(every: list[dict], jobs: list, errors: list[str], out: Path, manifest, part=None) -> None:
    """Print the job's summary (one line, then the problems and the rate) and compact the manifest
    (not for one shard of several)."""
    images, frames = sum(s["images"] for s in every), sum(s["frames"] for s in every)
    videos = sum(s["videos"] for s in every)
    failed = len(errors) + sum(s["failed"] for s in every)
    problems = errors + [p for s in every for p in s["problems"]]
    skipped = sum(job.done for job in jobs)
    summary = f"segmented {images} image(s)" + (f" and {frames} frame(s) of {videos} video(s)" if videos else "")
    summary += f" into {out}" + (f" (shard {part[0]}/{part[1]})" if part else "")
    summary += f"; {skipped} input(s) already done, skipped" if skipped else ""
    print(summary + (f"; {failed} failed:" if failed else ""))
    for problem in problems[:MAX_LISTED]:
        print(f"  {problem}")
    if len(problems) > MAX_LISTED:
        print(f"  ... and {len(problems) - MAX_LISTED} more (every input's result: {manifest.path})")
    seconds = max(max(s["seconds"] for s in every), 1e-9)
    for count, unit in ((images, "images"), (frames, "frames")):
        if count:
            rates = ", ".join(f"{s['rank']}: {s[unit] / max(s['seconds'], 1e-9):.2f}" for s in every)
            print(f"{count / seconds:.2f} {unit}/s overall" + (f"; per process {rates}" if len(every) > 1 else ""))
    if not part or part[1] == 1:
        manifest.compact([job.name for job in jobs])


Named = list[tuple[Path, str]]
"""Input files with the names of their outputs."""


def _collect(args: argparse.Namespace) -> tuple[Named, Named, list[str]]:
    """The images and videos to segment, each with its output name, and the inputs that could not
    be used (notes on what was skipped are printed); refuses an unusable ``--out`` or set of
    options before the model is loaded."""
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
