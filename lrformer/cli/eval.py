"""``lrformer eval``: mIoU / aAcc / mAcc of a model on a dataset, as mmsegmentation reports them."""

from __future__ import annotations

import argparse
import json

HELP = "evaluate mIoU on ADE20K, Cityscapes, COCO-Stuff or a dataset described in YAML"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import add_model_arguments, add_test_arguments, non_negative_int, positive_int

    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="ade20k | cityscapes | cocostuff | path to a dataset YAML")
    parser.add_argument("--data-root", required=True, help="folder holding the dataset")
    parser.add_argument("--split", default="val", help="split (default val)")
    add_test_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1, help="images (or windows) per forward pass")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="data-loading processes")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.epilog = (
        "example: lrformer eval --model lrformer_t --weights lrformer_t_ade20k.pth --data ade20k --data-root data/\n"
        "many processes: torchrun --nproc-per-node 4 -m lrformer eval ... --device cuda"
    )


def run(args: argparse.Namespace) -> int:
    from ..data.datasets import SegmentationDataset, load_spec
    from ..engine.distributed import device_for, init_distributed, shutdown
    from ..evaluation import evaluate
    from ..inference.predictor import model_defaults
    from ..utils import atomic_path
    from .common import check_output_file, inference_config, load_model

    check_output_file(args.json, "--json", (args.weights, args.model, args.data), (args.data_root,))
    info = init_distributed(args.device)
    try:
        spec = load_spec(args.data)
        dataset = SegmentationDataset(spec, args.data_root, args.split)
        if args.num_classes is None and not str(args.model).endswith((".yaml", ".yml", ".json")):
            args.num_classes = len(spec.classes)
        model = load_model(args)
        config = inference_config(args, model_defaults(model, spec.test))
        metrics = evaluate(model, dataset, config, args.batch_size, args.workers, device_for(args.device, info))
        if info.is_main:
            print(f"{spec.name} {args.split}: {len(dataset)} images")
            print(metrics.table())
            if args.json:
                with atomic_path(args.json) as tmp:
                    tmp.write_text(json.dumps(metrics.as_percent(), indent=2))
    finally:
        shutdown()
    return 0
