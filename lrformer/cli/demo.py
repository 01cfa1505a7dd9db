"""``lrformer demo``: generate a synthetic dataset, train LRFormer-T on it on CPU, evaluate, draw overlays."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "offline end-to-end demo: synthetic data, CPU training of LRFormer-T, evaluation, overlays"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import positive_int

    parser.add_argument("--work-dir", default="work_dirs/demo", help="checkpoints, logs, overlays")
    parser.add_argument(
        "--data-dir", default=None, help="where the synthetic dataset is cached (default ~/.cache/lrformer/demo_data)"
    )
    parser.add_argument(
        "--iters", type=positive_int, default=None, help="training iterations (default: demo.yaml's 500)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from ..data import synthetic
    from ..data.datasets import SegmentationDataset, load_spec
    from ..devices import check_device
    from ..engine.config import load_config
    from ..engine.trainer import Trainer
    from ..evaluation import evaluate
    from ..image import panel
    from ..inference import Predictor, read_image, save_image
    from ..utils import cache_dir

    args.device = check_device(args.device, "--device", "--device cpu")
    began = time.perf_counter()
    data_dir = Path(args.data_dir) if args.data_dir else cache_dir() / "demo_data"
    print(f"[1/3] synthetic dataset in {data_dir}")
    spec_path = synthetic.generate(data_dir)
    overrides = [f"data.dataset={spec_path}", f"data.root={data_dir}", f"train.device={args.device}", *args.overrides]
    if args.iters:
        overrides.append(f"schedule.max_iters={args.iters}")
    config = load_config("demo", overrides)  # the packaged recipe
    with Trainer(config, args.work_dir, force=True) as trainer:  # a re-run replaces the previous demo run
        print(f"[2/3] training {config.model.name} for {config.schedule.max_iters} iterations on {trainer.device}")
        trainer.train()
    print("[3/3] evaluating on the validation images and drawing overlays")
    dataset = SegmentationDataset(load_spec(spec_path), data_dir, "val")
    model = trainer.model.eval()
    metrics = evaluate(model, dataset, dataset.spec.test, workers=0, device=trainer.device)
    print(metrics.table())
    predictor = Predictor(model, dataset.spec.test, device=trainer.device)
    palette = np.asarray(dataset.spec.palette, dtype=np.uint8)
    out = Path(args.work_dir) / "overlays"
    for index, (image_path, _) in enumerate(dataset.samples[:8]):
        truth = dataset.load_label(index).astype(np.uint8)
        picture = panel(read_image(image_path), predictor(image_path), palette, dataset.classes, truth)
        save_image(out / f"{Path(image_path).stem}.png", picture)
    minutes = (time.perf_counter() - began) / 60
    print(
        f"validation mIoU {metrics.mIoU * 100:.2f}; panels (image | prediction | ground truth | legend) in {out}; "
        f"{minutes:.1f} min"
    )
    return 0
