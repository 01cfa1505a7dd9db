"""``lrformer export``: ONNX export (fixed or symbolic input size), checked with onnxruntime."""

from __future__ import annotations

import argparse

HELP = "export a model to ONNX (fixed or, with --dynamic, any input size) and check it against PyTorch"
DYNAMIC_EXAMPLE_SIZE = (512, 512)
TOLERANCE = 1e-4
"""Largest difference accepted, relative to the largest score (absolute below 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import add_model_arguments, positive_int

    add_model_arguments(parser)
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--size", nargs=2, type=positive_int, default=None, metavar=("H", "W"),
                        help="input size the graph is fixed to (required without --dynamic); with --dynamic, the "
                        "example size traced and the base of the checked sizes (default 512 512)")  # fmt: skip
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="symbolic height and width (any H, W >= 32); checked with onnxruntime at several sizes",
    )
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (7 to the newest torch supports)")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    parser.epilog = (
        "examples: lrformer export --model lrformer_t --weights w.pth --size 512 512 --out lrformer_t.onnx; "
        "lrformer export --model lrformer_t --weights w.pth --dynamic --out lrformer_t_dynamic.onnx"
    )


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..export import check_opset, compare_onnx, dynamic_check_shapes, export_onnx
    from ..models.backbone import MIN_INPUT_SIZE
    from .common import check_output_file, check_run_options, load_model

    if args.size is None and not args.dynamic:
        raise ConfigError("--size H W is required: the input size the ONNX graph is fixed to (or give --dynamic)")
    if args.size and min(args.size) < MIN_INPUT_SIZE:
        raise ConfigError(
            f"--size {args.size[0]} {args.size[1]}: LRFormer takes H, W >= {MIN_INPUT_SIZE}; e.g. --size 512 512"
        )
    check_run_options(args)  # before anything is written
    check_output_file(args.out, "--out", (args.weights, args.model))
    check_opset(args.opset)
    model = load_model(args).to(args.device)
    shape = (args.batch, 3, *(args.size or DYNAMIC_EXAMPLE_SIZE))
    if args.dynamic:
        print("exporting with symbolic height and width (this can take a few minutes)")
    export_onnx(model, shape, args.out, args.opset, dynamic=args.dynamic)
    size = ["height", "width"] if args.dynamic else list(shape[2:])
    print(f"wrote {args.out}: input 'image' {[*shape[:2], *size]}, output 'scores'")
    if args.no_check:
        return 0
    failed = False
    for checked in dynamic_check_shapes(shape) if args.dynamic else [shape]:
        error, scale = compare_onnx(model, args.out, checked)
        tolerance = TOLERANCE * max(1.0, scale)  # float32 rounding grows with the scores' magnitude
        print(f"onnxruntime vs PyTorch at {checked[2]}x{checked[3]}: max abs difference {error:.2e} "
              f"(scores up to {scale:.3g}, tolerance {tolerance:.1e})")  # fmt: skip
        failed |= not error <= tolerance
    if failed:
        print(f"error: the exported model differs from PyTorch by more than {TOLERANCE:g} of the scores' scale")
        return 1
    return 0
