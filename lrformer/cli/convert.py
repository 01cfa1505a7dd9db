"""``lrformer convert``: dataset label converters (Cityscapes, COCO-Stuff) and checkpoint slimming."""

from __future__ import annotations

import argparse
import os

HELP = "convert Cityscapes / COCO-Stuff labels to train ids, or a checkpoint to its weights alone"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import positive_int

    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{cityscapes,cocostuff,weights}")
    for kind, folder in (("cityscapes", "gtFine/"), ("cocostuff", "annotations/")):
        labels = kinds.add_parser(kind, help=f"{kind} label maps to train ids (once per dataset)")
        labels.add_argument("root", help=f"dataset root (holding {folder})")
        labels.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="processes")
        labels.add_argument("--force", action="store_true", help="rewrite outputs that already exist")
        labels.epilog = f"example: lrformer convert {kind} data/{kind}"
    weights = kinds.add_parser(
        "weights", help="a checkpoint without optimiser / RNG state, keeping its model description"
    )
    weights.add_argument("input", help="checkpoint: path, http(s) URL or hf-hub:OWNER/REPO/PATH[@REV]")
    weights.add_argument("output", help="file to write (.pth, or .safetensors)")
    weights.add_argument("--fp16", action="store_true", help="store floating-point weights in half precision")
    weights.add_argument("--safetensors", action="store_true", help="write safetensors (also implied by the suffix)")
    weights.epilog = "example: lrformer convert weights work_dirs/run/iter_160000.pth model.safetensors --fp16"


def run(args: argparse.Namespace) -> int:
    if args.kind == "weights":
        return convert_weights(args)
    from ..data.convert import convert

    converted, skipped, errors = convert(args.kind, args.root, args.workers, args.force)
    print(
        f"converted {converted} label map(s), {skipped} already done" + (f", {len(errors)} failed:" if errors else "")
    )
    for error in errors:
        print(f"  {error}")
    return 1 if errors else 0


def convert_weights(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..models.weights import read_checkpoint, save_weights
    from .common import check_output_file

    check_output_file(args.output, "OUTPUT", (args.input,))
    checkpoint = read_checkpoint(args.input)
    safetensors = args.safetensors or Path(args.output).suffix.lower() == ".safetensors"
    save_weights(args.output, checkpoint.state_dict, checkpoint.description, args.fp16, safetensors)
    before, after = checkpoint.path.stat().st_size, Path(args.output).stat().st_size
    described = (
        "with its model description" if checkpoint.description else "no model description (not from lrformer train)"
    )
    print(f"wrote {args.output}: {len(checkpoint.state_dict)} tensors, {after / 2**20:.1f} MiB "
          f"(input {before / 2**20:.1f} MiB), {described}")  # fmt: skip
    return 0
