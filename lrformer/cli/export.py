"""``lrformer export``: ONNX export at a fixed input size, checked with onnxruntime."""

from __future__ import annotations

import argparse

HELP = "export a model to ONNX (fixed input size) and check it against PyTorch with onnxruntime"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import add_model_arguments, positive_int

    add_model_arguments(parser)
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--size", nargs=2, type=positive_int, required=True, metavar=("H", "W"), help="input size")
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (7 to the newest torch supports)")
    parser.add_argument("--out", required=True, help="output .onnx file")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    parser.epilog = "example: lrformer export --model lrformer_t --weights w.pth --size 512 512 --out lrformer_t.onnx"


def run(args: argparse.Namespace) -> int:
    from ..export import check_onnx, check_opset, export_onnx
    from .common import check_output_file, load_model

    check_output_file(args.out, "--out", (args.weights, args.model))
    check_opset(args.opset)
    model = load_model(args)
    shape = (args.batch, 3, *args.size)
    export_onnx(model, shape, args.out, args.opset)
    print(f"wrote {args.out}: input 'image' {list(shape)}, output 'scores'")
    if not args.no_check:
        error = check_onnx(model, args.out, shape)
        print(f"onnxruntime vs PyTorch: max abs difference {error:.2e}")
        if error > 1e-4:
            print("error: the exported model differs from PyTorch by more than 1e-4")
            return 1
    return 0
