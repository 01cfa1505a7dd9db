"""Arguments and helpers shared by the commands that run a model on images.

Defining the arguments imports nothing heavy (``lrformer --help`` loads neither PyTorch nor
OpenCV); the helpers that run import what they need.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, InputError
from ..image.pipeline import MMSEG_TTA_RATIOS

if TYPE_CHECKING:
    from ..image.pipeline import InferenceConfig


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="a released model's tag (e.g. lrformer_t.ade20k, see `lrformer models`: its weights are "
                        "downloaded once unless --weights is given), a variant name (lrformer_t|s|b|l, ..._plus) or a "
                        "model YAML/JSON; not needed for a checkpoint written by lrformer train or a model lrformer "
                        "export wrote, which describe their model")  # fmt: skip
    parser.add_argument("--weights", default=None,
                        help="checkpoint: a path (.pth or .safetensors), an http(s) URL (URL#sha256=HEX checks it), "
                        "hf-hub:OWNER/REPO/PATH[@REV] or a released model's tag; "
                        "predict, eval and serve also run an exported model (.onnx on ONNX Runtime, .xml + .bin on "
                        "OpenVINO), which describes itself")  # fmt: skip
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        default=None,
        help="classes of the model (default: the model file's, or 150); an exported model describes its own, "
        "except one exported elsewhere",
    )
    add_device_argument(parser)
    add_fast_argument(parser)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (default: cuda if PyTorch sees a GPU, else mps, else cpu), cpu, cuda, cuda:N or mps; "
                        "an exported model: auto (cpu, or cuda with onnxruntime-gpu), cpu, cuda[:N] (ONNX Runtime), "
                        "gpu[.N] (OpenVINO on an Intel GPU)")  # fmt: skip


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads of the network: intra-op threads of ONNX Runtime / OpenVINO, or "
                        "torch.set_num_threads (default: the runtime's choice)")  # fmt: skip


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="autocast precision of a PyTorch model (scores are merged in fp32; default fp32); an "
                        "exported model runs in the precision it was exported in, so other values are refused")  # fmt: skip


def add_max_pixels_argument(
    parser: argparse.ArgumentParser, default: str = "2^28 = 268 megapixels, or LRFORMER_MAX_PIXELS"
) -> None:
    """``--max-pixels`` (``None`` unless given); ``default`` is what the help says applies then."""
    parser.add_argument("--max-pixels", type=positive_int, default=None,
                        help=f"refuse images above this many pixels before decoding them (default {default})")  # fmt: skip


def check_run_options(args: argparse.Namespace) -> None:
    """Check, before anything is written, ``--device`` (``auto`` replaced by the device it picks;
    for an exported model, the device its runtime picks), ``--precision`` on that device and, for
    the commands that have ``--max-pixels``, the pixel limit (``None`` replaced by
    ``LRFORMER_MAX_PIXELS`` or the default, so a malformed variable is named now; the limit is
    then passed to the decoders as an argument). ``--no-fast`` and ``--precision`` are refused
    for an exported model: it runs as it was exported."""
    from ..deploy.runtimes import is_exported, resolve_device
    from ..devices import autocast_dtype, check_device

    if hasattr(args, "max_pixels"):
        from ..image.io import pixel_limit

        args.max_pixels = pixel_limit(args.max_pixels)
    if is_exported(getattr(args, "weights", None)):
        _refuse_torch_options(args)
        args.device = resolve_device(args.weights, args.device)
        return
    args.device = check_device(args.device, "--device", "--device cpu")
    if getattr(args, "precision", None):
        autocast_dtype(args.precision, args.device)


def _refuse_torch_options(args: argparse.Namespace) -> None:
    """``--no-fast`` and ``--precision`` apply to PyTorch models: an exported one runs as it was exported."""
    option = "--no-fast" if getattr(args, "no_fast", False) else None
    if getattr(args, "precision", None) not in (None, "fp32"):
        option = f"--precision {args.precision}"
    if option:
        raise ConfigError(f"{option} applies to PyTorch models: the exported {args.weights} runs as it was exported "
                          f"(its precision, no fast-path switch); leave {option.split()[0]} out")  # fmt: skip


def add_fast_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-fast",
        action="store_true",
        help="run the model as loaded instead of the inference fast path (lrformer.reparameterize_model); "
        "PyTorch models only (refused for an exported model)",
    )


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    """Test-time pipeline options; ``None`` defaults mean 'the model's / dataset's official setting'."""
    group = parser.add_argument_group("test-time pipeline (default: the official one of the model)")
    group.add_argument("--mode", choices=("whole", "slide"), default=None, help="whole image or sliding windows")
    group.add_argument(
        "--crop", nargs=2, type=positive_int, metavar=("H", "W"), default=None, help="window size (slide)"
    )
    group.add_argument(
        "--stride", nargs=2, type=positive_int, metavar=("H", "W"), default=None, help="window step (slide)"
    )
    group.add_argument("--scale", nargs=2, type=positive_int, metavar=("LONG", "SHORT"), default=None,
                       help="keep-ratio resize bound (default 2048 512)")  # fmt: skip
    group.add_argument("--size-divisor", type=positive_int, default=None, help="alignment multiple (default 32)")
    group.add_argument(
        "--pipeline",
        choices=("align", "pad"),
        default=None,
        help="align: AlignResize (LRFormer); pad: resize + pad (LRFormer+); default: the model's",
    )
    group.add_argument("--max-attention-elements", type=int, default=None,
                       help="above this attention size, whole mode uses windows along the long side "
                       "(default 2^28; 0 disables the fallback)")  # fmt: skip
    group.add_argument(
        "--tta", action="store_true", help=f"multi-scale {list(MMSEG_TTA_RATIOS)} + flip test-time augmentation"
    )
    group.add_argument("--tta-ratios", nargs="+", type=float, default=None, help="scale ratios for --tta")
    group.add_argument("--no-flip", action="store_true", help="no horizontal flip in --tta")


def inference_config(args: argparse.Namespace, base: InferenceConfig) -> InferenceConfig:
    """``base`` (the model's or dataset's defaults) with the command-line options applied."""
    changes = {}
    for name in ("mode", "size_divisor", "pipeline", "max_attention_elements"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    for name in ("crop", "stride", "scale"):
        if getattr(args, name) is not None:
            changes[name] = tuple(getattr(args, name))
    if args.tta:
        changes["tta_ratios"] = tuple(args.tta_ratios or MMSEG_TTA_RATIOS)
        changes["flip"] = not args.no_flip
    elif args.tta_ratios:
        raise ConfigError("--tta-ratios needs --tta: add --tta, or drop --tta-ratios")
    return replace(base, **changes)


def load_model(args: argparse.Namespace, exported: bool = False):
    """The model of ``--model`` / ``--weights`` (a self-describing checkpoint needs no ``--model``),
    loaded strictly, in eval mode, reparameterized for inference unless ``--no-fast``.
    ``args.device`` is checked first and ``auto`` replaced by the device it picks; ``--threads``
    (where the command has it) sets PyTorch's CPU threads.

    With ``exported`` (commands that run any network: predict, eval, serve, benchmark), an
    exported ``--weights`` (``.onnx``, ``.xml``) gives a :class:`~lrformer.inference.network.Network`
    run by its runtime (:func:`lrformer.deploy.load_network`) on ``--threads`` threads; ``--model`` /
    ``--num-classes`` only describe a file exported elsewhere. Without it, an export is refused."""
    from .. import create_model, reparameterize_model
    from ..deploy.runtimes import is_exported
    from ..devices import check_device
    from ..models.zoo import is_tag

    threads = getattr(args, "threads", None)
    if is_exported(args.weights):
        if not exported:
            raise ConfigError(f"--weights {args.weights} is an exported model, which this command cannot use: give the "
                              "PyTorch checkpoint (.pth / .safetensors) it was exported from")  # fmt: skip
        from ..deploy.runtimes import load_network, resolve_device

        device = resolve_device(args.weights, args.device)
        return load_network(args.weights, device, threads, args.model, args.num_classes)
    args.device = check_device(args.device, "--device", "--device cpu")
    if args.model is None and args.weights is None:
        raise ConfigError("give --weights (a checkpoint written by lrformer train names its model) and/or --model")
    if threads:
        import torch

        torch.set_num_threads(threads)
    name, weights = (args.model, args.weights) if args.model else (args.weights, None)
    if is_tag(name):  # a released model's tag: --model TAG, or --weights TAG alone
        check_tag(name, args.num_classes)
        weights = weights or True  # the released file
    model = create_model(name, num_classes=args.num_classes, pretrained=weights, reset_classifier=False)
    if not weights and not getattr(model, "config", {}).get("pretrained"):
        print("warning: no --weights given: the model has random weights", flush=True)
    return model.eval() if args.no_fast else reparameterize_model(model, inplace=True)


def check_tag(tag: str, num_classes: int | None, option: str = "--num-classes") -> None:
    """Refuse a class count (from ``option``: ``--num-classes``, or ``--data``'s dataset) that is not
    the released model ``tag``'s (an unknown tag is an error with "did you mean"); warn that an
    ImageNet backbone's decode head is random."""
    from ..models.zoo import list_released, released_model

    released = released_model(tag)
    if released.dataset is None and option != "--num-classes":
        raise ConfigError(f"{tag} is an ImageNet backbone, whose decode head is random: evaluate a segmentation "
                          f"model, e.g. {released.variant}.ade20k (see `lrformer models`)")  # fmt: skip
    if released.dataset is None:
        print(f"warning: {tag} is an ImageNet backbone: the decode head has random weights (fine-tune it with "
              "lrformer train, model.backbone_checkpoint)", flush=True)  # fmt: skip
    if num_classes is None or released.num_classes in (None, num_classes):
        return
    others = [m.tag for m in list_released(f"{released.variant}.*") if m.num_classes == num_classes]
    raise ConfigError(
        f"--model {tag} is a {released.num_classes}-class {released.dataset} model, not the {num_classes} classes of "
        f"{option}: "
        + (
            f"use {' or '.join(others)}"
            if others
            else "fine-tune it to your classes with lrformer train (model.pretrained)"
        )
        + ("" if option != "--num-classes" else ", or drop --num-classes")
    )


def predictor_options(model, args: argparse.Namespace) -> dict:
    """The ``Predictor`` arguments of ``--device`` and ``--precision`` for a PyTorch model; a
    :class:`~lrformer.inference.network.Network` (an exported model) runs where it was loaded."""
    from ..inference.network import Network

    if isinstance(model, Network):
        return {}
    return {"device": args.device, "precision": getattr(args, "precision", "fp32")}


def check_output_file(path: str | None, option: str, inputs: tuple = (), input_folders: tuple = ()) -> None:
    """Refuse, before any work, an output file option that is empty, names a folder, one of the
    ``inputs`` (e.g. ``--weights``), a file inside one of the ``input_folders`` (e.g.
    ``--data-root``), or a place that cannot be written."""
    if path is None:
        return
    if not str(path).strip():
        raise InputError(f"{option} is empty: give a file name")
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{option} {path} is a folder: give a file name, e.g. {option} {target / 'out'}")
    for source in inputs:
        if source and "://" not in str(source) and os.path.realpath(source) == os.path.realpath(target):
            raise InputError(f"{option} {path} would overwrite the input {source}; choose another file name")
    for folder in input_folders:
        if folder and is_inside(target, folder):
            raise InputError(f"{option} {path} is inside the input folder {folder}; write it somewhere else")
    ensure_writable(target.parent, option)


def is_inside(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or below it, links resolved."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def ensure_writable(folder, option: str) -> None:
    """Create ``folder`` and check that a file can be written there, or raise ``InputError`` naming ``option``."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot write {option} {folder} ({exc.strerror or exc}); choose a folder you can write to"
        ) from None
