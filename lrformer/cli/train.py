"""``lrformer train``: train or fine-tune from a recipe name or a YAML config, on one process or under torchrun."""

from __future__ import annotations

import argparse

HELP = "train a segmentation model from a recipe or a YAML config (one process, or many with torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config: a recipe name (see `lrformer configs`) or a YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-4 --set data.root=/data")  # fmt: skip
    parser.add_argument("--work-dir", default=None,
                        help="checkpoints and logs (default work_dirs/<recipe name or config file name>)")  # fmt: skip
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                        help="continue from CKPT, or from the newest readable checkpoint in the work dir")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="delete the checkpoints and logs of an earlier run in the work dir and start over")  # fmt: skip
    parser.add_argument("--dump-config", action="store_true",
                        help="print the resolved config (defaults, _base_ files, --set) as YAML and exit without "
                             "training")  # fmt: skip
    parser.epilog = (
        "examples:\n  lrformer train lrformer_t_ade20k --set data.root=data/\n"
        "  lrformer train lrformer_t_ade20k --set optim.lr=1e-4 --dump-config > my_config.yaml\n"
        "  lrformer train my_config.yaml --work-dir work_dirs/mine\n"
        "  torchrun --nproc-per-node 8 -m lrformer train lrformer_b_ade20k --resume\n"
        "recipes: `lrformer configs` lists them; a YAML file of your own can start from one with\n"
        "`_base_: lrformer_t_ade20k` and change only what differs"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from ..engine.config import dump_config, load_config
    from ..engine.recipes import resolve_config_argument
    from ..engine.trainer import Trainer
    from ..errors import WorkDirError

    path = resolve_config_argument(args.config)  # a file, or the packaged recipe of that name
    config = load_config(path, args.overrides)
    if args.dump_config:
        print(dump_config(config), end="")
        return 0
    work_dir = Path(args.work_dir or Path("work_dirs") / Path(args.config).stem)
    if work_dir.exists() and not work_dir.is_dir():
        raise WorkDirError(f"--work-dir {work_dir} is a file: give a folder (it is created if missing)")
    if os.path.realpath(path) == os.path.realpath(work_dir / "config.yaml"):
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
