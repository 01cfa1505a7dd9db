"""``lrformer export``: ONNX or OpenVINO (fixed or symbolic input size, float32 or int8), the model
description inside, checked against PyTorch (float32) or on held-out images (int8)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a model to ONNX or OpenVINO (fp32 or int8, fixed or any input size) and check it against PyTorch"
DYNAMIC_EXAMPLE_SIZE = (512, 512)
TOLERANCE = 1e-4
"""Largest difference accepted, relative to the largest score (absolute below 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import add_model_arguments, positive_int

    add_model_arguments(parser)
    parser.add_argument("--format", choices=("onnx", "openvino"), default=None,
                        help="onnx (.onnx, ONNX Runtime) or openvino (.xml + .bin, OpenVINO); default: from --out's "
                        "suffix")  # fmt: skip
    parser.add_argument("--size", nargs=2, type=positive_int, default=None, metavar=("H", "W"),
                        help="input size the graph is fixed to (required without --dynamic); with --dynamic, the "
                        "example size traced and the base of the checked sizes (default 512 512)")  # fmt: skip
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="symbolic height and width (any H, W >= 32); checked against PyTorch at several sizes",
    )
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (7 to the newest torch supports)")
    parser.add_argument("--out", required=True, help="output file: .onnx, or .xml (its .bin beside it)")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    group = parser.add_argument_group("int8 (post-training static quantisation with NNCF, OpenVINO)")
    group.add_argument("--int8", action="store_true", help="quantise to int8 (needs --calib and --format openvino)")
    group.add_argument("--calib", default=None, metavar="SOURCE",
                       help="calibration images: a folder of images, a dataset (ade20k, cityscapes, cocostuff or a "
                       "dataset YAML) with --data-root, or a training config (its data section)")  # fmt: skip
    group.add_argument("--data-root", default=None, help="folder holding the --calib dataset")
    group.add_argument("--calib-size", type=positive_int, default=None,
                       help="images calibrated on (default 300); other images are held out to check the result")  # fmt: skip
    parser.epilog = (
        "examples: lrformer export --weights w.pth --size 512 512 --out lrformer_t.onnx; "
        "lrformer export --weights w.pth --dynamic --out lrformer_t.xml; "
        "lrformer export --weights w.pth --dynamic --out lrformer_t_int8.xml --int8 --calib ade20k --data-root data/"
    )


def run(args: argparse.Namespace) -> int:
    import time

    from ..deploy.exporting import export_float, export_int8, pipeline_config
    from .common import load_model

    began = time.perf_counter()
    spec = check_arguments(args)
    images = calibration_images(args) if args.int8 else None
    model = load_model(args).to(args.device)
    if args.dynamic:
        print("exporting with symbolic height and width (this can take a few minutes)", flush=True)
    config = pipeline_config(model, images) if images else None
    if images is None:
        export_float(model, args.out, spec)
    else:
        print(f"quantising to int8 on {len(images.calibration)} calibration images", flush=True)
        export_int8(model, args.out, spec, images, config)
    size = ["height", "width"] if spec.dynamic else list(spec.shape[2:])
    written = f"{args.out} and {Path(args.out).with_suffix('.bin')}" if spec.format == "openvino" else args.out
    print(f"wrote {written} in {time.perf_counter() - began:.0f} s: input 'image' {[*spec.shape[:2], *size]}, "
          f"output 'scores', {'int8' if images else 'fp32'}")  # fmt: skip
    if args.no_check:
        return 0
    return check_int8(model, args.out, spec, images, config) if images else check_float(model, args.out, spec)


def check_arguments(args: argparse.Namespace):
    """Every option checked, and the extras they need present, before the model is loaded or
    anything written: the :class:`~lrformer.deploy.exporting.ExportSpec`."""
    from ..deploy.exporting import ExportSpec, format_of
    from ..deploy.onnx import check_opset
    from ..errors import ConfigError
    from ..models.backbone import MIN_INPUT_SIZE
    from .common import check_output_file, check_run_options

    if args.size is None and not args.dynamic:
        raise ConfigError("--size H W is required: the input size the graph is fixed to (or give --dynamic)")
    if args.size and min(args.size) < MIN_INPUT_SIZE:
        raise ConfigError(
            f"--size {args.size[0]} {args.size[1]}: LRFormer takes H, W >= {MIN_INPUT_SIZE}; e.g. --size 512 512"
        )
    if args.int8 and not args.calib:
        raise ConfigError("--int8 needs --calib SOURCE: a folder of images, a dataset with --data-root, or a "
                          "training config")  # fmt: skip
    for option in ("calib", "data_root", "calib_size"):
        if getattr(args, option) is not None and not args.int8:
            raise ConfigError(f"--{option.replace('_', '-')} is for --int8: add --int8, or drop it")
    inputs = (args.weights, args.model, args.calib)
    check_output_file(args.out, "--out", inputs)  # before its suffix: overwriting an input is the worse mistake
    spec = ExportSpec(format_of(args.out, args.format), (args.batch, 3, *(args.size or DYNAMIC_EXAMPLE_SIZE)),
                      args.dynamic, args.opset)  # fmt: skip
    if args.int8 and spec.format != "openvino":
        raise ConfigError("--int8 writes an OpenVINO IR (ONNX Runtime ran int8 no faster than fp32): give --out "
                          f"{Path(args.out).with_suffix('.xml').name}")  # fmt: skip
    _require_extras(spec.format, args.int8)
    check_run_options(args)
    if spec.format == "openvino":
        check_output_file(str(Path(args.out).with_suffix(".bin")), "--out's .bin", inputs)
    check_opset(args.opset)
    return spec


def _require_extras(format: str, int8: bool) -> None:
    """The libraries the export needs, or a one-line ``pip install`` error."""
    from ..utils import require_extra

    require_extra("onnx", "export", "ONNX export")
    require_extra("onnxscript", "export", "ONNX export")
    if format == "openvino":
        require_extra("openvino", "deploy", "OpenVINO export")
    if int8:
        require_extra("nncf", "deploy", "int8 quantisation")


def calibration_images(args: argparse.Namespace):
    """The :class:`~lrformer.deploy.calibration.CalibrationImages` of ``--calib``: a folder of
    images, a dataset (with ``--data-root``) or a training config (its dataset, root and splits)."""
    from ..data.datasets import BUILTIN, load_spec
    from ..deploy import calibration
    from ..errors import ConfigError, MissingFileError
    from ..utils import read_mapping

    source, size = args.calib, args.calib_size or calibration.CALIBRATION_SIZE
    path = Path(source)
    if path.is_dir():
        if args.data_root:
            raise ConfigError(f"--calib {source} is a folder of images: drop --data-root (it is for a dataset)")
        images = calibration.from_folder(path, size)
    else:
        if source not in BUILTIN and not path.is_file():
            raise MissingFileError(f"--calib {source} does not exist: give a folder of images, a dataset ("
                                   f"{', '.join(BUILTIN)} or a YAML) with --data-root, or a training config")  # fmt: skip
        dataset, root, splits = source, args.data_root, ("train", "val")
        if path.is_file() and "img_dir" not in read_mapping(path, "--calib file", "a dataset or a training config"):
            from ..engine.config import load_config

            data = load_config(path).data
            dataset, root, splits = data.dataset, args.data_root or data.root, (data.train_split, data.val_split)
        if root is None:
            raise ConfigError(f"--calib {source} is a dataset: give the folder holding it with --data-root")
        images = calibration.from_dataset(load_spec(dataset), root, splits, size)
    for note in images.notes:
        print(f"note: {note}")
    return images


def check_float(model, out: str, spec) -> int:
    """Compare the float export with PyTorch at ``spec``'s check shapes; 1 when one differs."""
    from ..deploy.exporting import compare_export

    check = compare_export(model, out, spec)
    runtime = "onnxruntime" if spec.format == "onnx" else "OpenVINO"
    failed = False
    for checked in spec.check_shapes():
        error, scale = check(checked)
        tolerance = TOLERANCE * max(1.0, scale)  # float32 rounding grows with the scores' magnitude
        print(f"{runtime} vs PyTorch at {checked[2]}x{checked[3]}: max abs difference {error:.2e} "
              f"(scores up to {scale:.3g}, tolerance {tolerance:.1e})")  # fmt: skip
        failed |= not error <= tolerance
    if failed:
        print(f"error: the exported model differs from PyTorch by more than {TOLERANCE:g} of the scores' scale")
        return 1
    return 0


def check_int8(model, out: str, spec, images, config) -> int:
    """Print the int8 export's agreement with the float model on the held-out images."""
    from ..deploy.exporting import held_out_agreement

    if not images.held_out:
        print("note: no held-out images (the calibration source holds one image): the int8 model was not checked")
        return 0
    print(held_out_agreement(model, out, spec, images, config).summary())
    return 0
