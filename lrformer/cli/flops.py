"""``lrformer flops``: multiply-accumulates and parameters of a model at an input size."""

from __future__ import annotations

import argparse

HELP = "count multiply-accumulates (the paper's FLOPs) and parameters"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import positive_int

    parser.add_argument("--model", required=True, help="variant name (lrformer_t|s|b|l|xl), a released model's tag (lrformer_t.cityscapes: its class count) or a model YAML/JSON")
    parser.add_argument("--size", nargs=2, type=positive_int, default=[512, 512], metavar=("H", "W"), help="input size")
    parser.add_argument("--num-classes", type=positive_int, default=None, help="decode-head classes (default 150)")
    parser.epilog = "example: lrformer flops --model lrformer_t --size 512 512"


def run(args: argparse.Namespace) -> int:

    from ..flops import count_macs
    from ..models import create_model

    model = create_model(args.model, num_classes=args.num_classes)
    result = count_macs(model, tuple(args.size))
    name = model.config.get("name", args.model)
    print(f"model:  {name}  input 1x3x{args.size[0]}x{args.size[1]}")
    print(f"MACs:   {result.macs / 1e9:.2f} G  (the paper's 'FLOPs')")
    for module, macs in result.by_module.items():
        print(f"  {module + ':':<14}{macs / 1e9:.2f} G")
    print(
        f"params: {result.params / 1e6:.2f} M  ({result.params:,} state-dict elements, "
        f"{result.learnable_params:,} learnable)"
    )
    return 0
