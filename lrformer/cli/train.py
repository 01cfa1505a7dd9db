"""``lrformer train``: train or fine-tune from a YAML config, on one process or under torchrun."""

from __future__ import annotations

import argparse

HELP = "train a segmentation model from a YAML config (one process, or many with torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config YAML (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-4 --set data.root=/data")  # fmt: skip
    parser.add_argument("--work-dir", default=None, help="checkpoints and logs (default work_dirs/<config name>)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                        help="continue from CKPT, or from the newest readable checkpoint in the work dir")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="delete the checkpoints and logs of an earlier run in the work dir and start over")  # fmt: skip
    parser.add_argument("--dump-config", action="store_true",
                        help="print the resolved config (defaults, _base_ files, --set) as YAML and exit without "
                             "training")  # fmt: skip
    parser.epilog = (
        "examples:\n  lrformer train configs/lrformer_t_ade20k.yaml --set data.root=data/\n"
        "  lrformer train configs/lrformer_t_ade20k.yaml --set optim.lr=1e-4 --dump-config > my_config.yaml\n"
        "  torchrun --nproc-per-node 8 -m lrformer train configs/lrformer_b_ade20k.yaml --resume"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from ..engine.config import dump_config, load_config
    from ..engine.trainer import Trainer
    from ..errors import WorkDirError

    config = load_config(args.config, args.overrides)
    if args.dump_config:
        print(dump_config(config), end="")
        return 0
    work_dir = Path(args.work_dir or Path("work_dirs") / Path(args.config).stem)
    if work_dir.exists() and not work_dir.is_dir():
        raise WorkDirError(f"--work-dir {work_dir} is a file: give a folder (it is created if missing)")
    if os.path.realpath(args.config) == os.path.realpath(work_dir / "config.yaml"):
        raise WorkDirError(
            f"the config {args.config} is the file the run writes its resolved config to: move it out of "
            f"{work_dir}, or choose another --work-dir"
        )
    if args.resume and args.force:
        raise WorkDirError("--resume continues the earlier run and --force deletes it: give one of them")
    with Trainer(config, work_dir, resume=args.resume, force=args.force) as trainer:  # leaves the process group
        last = trainer.train()
    print(f"done: last checkpoint {last}")
    return 0
