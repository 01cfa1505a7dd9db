"""``lrformer eval``: mIoU / aAcc / mAcc of a model on a dataset, as mmsegmentation reports them."""

from __future__ import annotations

import argparse
import json

HELP = "evaluate mIoU on ADE20K, Cityscapes, COCO-Stuff or a dataset described in YAML"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import (
        add_model_arguments,
        add_precision_argument,
        add_test_arguments,
        add_threads_argument,
        non_negative_int,
        positive_int,
    )

    add_model_arguments(parser)
    add_precision_argument(parser)
    add_threads_argument(parser)
    parser.add_argument("--data", required=True, help="ade20k | cityscapes | cocostuff | path to a dataset YAML")
    parser.add_argument("--data-root", required=True, help="folder holding the dataset")
    parser.add_argument("--split", default="val", help="split (default val)")
    add_test_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1, help="images (or windows) per forward pass")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="data-loading processes")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--show-dir", default=None,
                        help="also write image | prediction | ground truth panels with a legend, one JPEG per image "
                        "(named after the image's path in the dataset)")  # fmt: skip
    parser.epilog = (
        "example: lrformer eval --model lrformer_t --weights lrformer_t_ade20k.pth --data ade20k --data-root data/\n"
        "many processes: torchrun --nproc-per-node 4 -m lrformer eval ... --device cuda\n"
        "an exported model (what int8 costs): lrformer eval --weights lrformer_t_int8.xml --data ade20k --data-root data/"
    )


def run(args: argparse.Namespace) -> int:
    from ..data.datasets import SegmentationDataset, load_spec
    from ..deploy.runtimes import is_exported
    from ..engine.distributed import device_for, init_distributed, shutdown
    from ..evaluation import evaluate
    from ..inference.predictor import model_defaults
    from ..models.zoo import is_tag
    from ..utils import atomic_path
    from .common import check_output_file, check_run_options, check_tag, inference_config, load_model

    check_run_options(args)  # before anything is written
    check_output_file(args.json, "--json", (args.weights, args.model, args.data), (args.data_root,))
    check_show_dir(args.show_dir, args.data_root)
    exported = is_exported(args.weights)  # runs where its runtime runs it: the processes share no device
    info = init_distributed("cpu" if exported else args.device)
    try:
        spec = load_spec(args.data)
        released = is_tag(args.model or args.weights)
        if released:  # a released model's classes must be the dataset's
            check_tag(args.model or args.weights, args.num_classes or len(spec.classes), f"--data {args.data}")
        dataset = SegmentationDataset(spec, args.data_root, args.split)
        describes_itself = released or exported or str(args.model).endswith((".yaml", ".yml", ".json"))
        if args.num_classes is None and not describes_itself:
            args.num_classes = len(spec.classes)
        model = load_model(args, exported=True)
        config = inference_config(args, model_defaults(model, spec.test))
        device = None if exported else device_for(args.device, info, "--device", "--device cpu")
        show = panel_writer(args.show_dir, dataset) if args.show_dir else None
        metrics = evaluate(
            model, dataset, config, args.batch_size, args.workers, device, precision=args.precision, show=show
        )
        if info.is_main:
            print(f"{spec.name} {args.split}: {len(dataset)} images")
            print(metrics.table())
            if args.json:
                with atomic_path(args.json) as tmp:
                    tmp.write_text(json.dumps(metrics.as_percent(), indent=2))
    finally:
        shutdown()
    return 0


def check_show_dir(show_dir: str | None, data_root: str) -> None:
    """Refuse a ``--show-dir`` that is empty, a file, or inside the dataset; create it otherwise."""
    from pathlib import Path

    from ..errors import InputError
    from .common import ensure_writable, is_inside

    if show_dir is None:
        return
    if not show_dir.strip():
        raise InputError("--show-dir is empty: give the folder to write the panels to")
    if Path(show_dir).exists() and not Path(show_dir).is_dir():
        raise InputError(f"--show-dir {show_dir} is a file: give a folder (it is created if missing)")
    if is_inside(show_dir, data_root) or is_inside(data_root, show_dir):
        raise InputError(f"--show-dir {show_dir} overlaps the dataset {data_root}; write the panels somewhere else")
    ensure_writable(show_dir, "--show-dir")


def panel_writer(show_dir: str, dataset):
    """``show(image_bgr, prediction, label, image_path)`` writing ``image | prediction | ground truth |
    legend`` to ``show_dir/<name>.jpg``, ``<name>`` as ``lrformer predict`` names its outputs (the
    image's path relative to the deepest folder holding all the images, without suffix)."""
    from pathlib import Path

    from ..image import panel, save_image
    from .inputs import output_names
    from .outputs import Legend, writing

    legend = Legend.for_dataset(dataset.spec)
    images = [Path(image) for image, _ in dataset.samples]
    names = dict(zip(map(str, images), output_names(images)))
    done = 0

    def show(image_bgr, prediction, label, image_path) -> None:
        nonlocal done
        path = Path(show_dir) / f"{names[str(image_path)]}.jpg"
        picture = panel(
            image_bgr, prediction, legend.palette, legend.names, label, ignore_index=dataset.spec.ignore_index
        )
        with writing(path, done, option="--show-dir"):
            save_image(path, picture)
        done += 1

    return show
