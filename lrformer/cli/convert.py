"""``lrformer convert``: dataset label converters (Cityscapes, COCO-Stuff)."""

from __future__ import annotations

import argparse
import os

HELP = "convert Cityscapes / COCO-Stuff labels to train ids"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import positive_int

    parser.add_argument("kind", choices=("cityscapes", "cocostuff"))
    parser.add_argument("root", help="dataset root (holding gtFine/ or annotations/)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--force", action="store_true", help="rewrite outputs that already exist")
    parser.epilog = "example: lrformer convert cityscapes data/cityscapes"


def run(args: argparse.Namespace) -> int:
    from ..data.convert import convert

    converted, skipped, errors = convert(args.kind, args.root, args.workers, args.force)
    print(
        f"converted {converted} label map(s), {skipped} already done" + (f", {len(errors)} failed:" if errors else "")
    )
    for error in errors:
        print(f"  {error}")
    return 1 if errors else 0
