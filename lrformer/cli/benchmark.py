"""``lrformer benchmark``: latency, throughput and peak memory of a model over input sizes; with
``--backend`` the same for its ONNX Runtime and OpenVINO exports (float32 and int8) side by side
(:mod:`lrformer.deploy.speed`); with ``--train`` the time and memory of a training step (with and
without activation checkpointing); with ``--data`` the images/s of the training data pipeline."""

from __future__ import annotations

import argparse

HELP = (
    "measure latency (median, p90), images/s and peak memory over one or many resolutions, in PyTorch and, with "
    "--backend, in ONNX Runtime and OpenVINO (fp32, int8) side by side; --train: a training step's time and memory "
    "with/without activation checkpointing; --data: the training data pipeline"
)

OPTIONS = {  # dest → (flag, modes that use it)
    "model": ("--model", ("inference", "train")),
    "backend": ("--backend", ("inference",)),
    "int8": ("--int8", ("inference",)),
    "weights": ("--weights", ("inference",)),
    "device": ("--device", ("inference", "train")),
    "size": ("--size", ("inference", "train")),
    "batch": ("--batch", ("inference", "train")),
    "precision": ("--precision", ("inference", "train")),
    "compile": ("--compile", ("inference",)),
    "no_fast": ("--no-fast", ("inference",)),
    "threads": ("--threads", ("inference", "train")),
    "warmup": ("--warmup", ("inference", "train")),
    "iters": ("--iters", ("inference", "train")),
    "plot": ("--plot", ("inference",)),
    "grad_checkpoint": ("--grad-checkpoint", ("train",)),
    "cudnn_benchmark": ("--cudnn-benchmark", ("inference", "train")),
    "overrides": ("--set", ("data",)),
    "workers": ("--workers", ("data",)),
    "batches": ("--batches", ("data",)),
}
"""The options that only some modes use; giving one to another mode is an error naming it."""
UNSET = (None, False, "auto", "fp32")
"""Values that mean an option was left at its default (``--device auto``, ``--precision fp32``)."""
TORCH_ONLY = {"no_fast": "--no-fast", "compile": "--compile", "cudnn_benchmark": "--cudnn-benchmark"}
"""Options of the PyTorch row only (with --precision other than fp32): refused without --backend torch."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import add_device_argument, add_fast_argument, add_precision_argument, non_negative_int, positive_int

    parser.add_argument("--model", default=None, help="variant name or model YAML/JSON (not with --data)")
    deploy = parser.add_argument_group("exported models side by side (--backend, --weights)")
    deploy.add_argument("--backend", action="append", choices=("torch", "onnxruntime", "openvino"), default=None,
                        help="repeat to compare: torch (the PyTorch fast path; the default), onnxruntime, openvino. "
                        "The model is exported at each --size to a temporary folder and timed through the network "
                        "call lrformer predict makes, all backends interleaved in one process; peak memory comes "
                        "from a fresh process per row; 'vs torch' is the speed-up over the torch row")  # fmt: skip
    deploy.add_argument("--int8", action="store_true",
                        help="also the int8 export (OpenVINO, NNCF), calibrated on 8 synthetic scenes through the "
                        "test pipeline: fine for speed, not for accuracy (lrformer export --int8 --calib for that)")  # fmt: skip
    deploy.add_argument("--weights", default=None, metavar="FILE",
                        help="an exported model (.onnx, or an OpenVINO .xml with its .bin) timed as it is (default "
                        "size: the one it was exported for); add --backend torch to compare it with its PyTorch model")  # fmt: skip
    parser.add_argument("--size", nargs=2, type=positive_int, action="append", metavar=("H", "W"),
                        help="input size (--train: crop size); repeat for several (default 512 512)")  # fmt: skip
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="images per forward pass (default 1; --train: per step, default 2)")  # fmt: skip
    add_device_argument(parser)
    add_precision_argument(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    add_fast_argument(parser)
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads (torch.set_num_threads; with --backend also the runtimes' threads)")  # fmt: skip
    parser.add_argument("--warmup", type=non_negative_int, default=None,
                        help="untimed passes per size (default 3; --train: steps, default 1, at least 1)")  # fmt: skip
    parser.add_argument("--iters", type=positive_int, default=None,
                        help="timed passes per size (default 10; --train: steps, default 3)")  # fmt: skip
    parser.add_argument("--cudnn-benchmark", choices=("on", "off"), default=None,
                        help="cuDNN autotuning on CUDA (default off; --train: on, as train.cudnn_benchmark)")  # fmt: skip
    parser.add_argument("--csv", default=None, help="write the results as CSV")
    parser.add_argument("--plot", default=None, help="plot latency and memory against resolution (PNG, matplotlib)")
    train = parser.add_argument_group("training step (--train)")
    train.add_argument("--train", action="store_true",
                       help="time a training step (forward, loss, backward, AdamW) and the memory it adds above "
                       "the weights, gradients and optimizer state; CPU figures come from a fresh process per row")  # fmt: skip
    train.add_argument("--grad-checkpoint", choices=("off", "on", "both"), default=None,
                       help="activation checkpointing (default both: one row without, one with)")  # fmt: skip
    data = parser.add_argument_group("training data pipeline (--data)")
    data.add_argument("--data", metavar="CONFIG", default=None,
                      help="read batches from the training pipeline of this training config (YAML)")  # fmt: skip
    data.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
                      help="config override, as lrformer train --set")  # fmt: skip
    data.add_argument("--workers", nargs="+", type=non_negative_int, default=None, metavar="N",
                      help="loader worker counts to measure (default 0 1 2)")  # fmt: skip
    data.add_argument("--batches", type=positive_int, default=None, help="timed batches per worker count (default 10)")
    parser.epilog = (
        "examples: lrformer benchmark --model lrformer_t --size 512 512 --size 1024 1024 --threads 2; "
        "lrformer benchmark --model lrformer_t --backend torch --backend onnxruntime --backend openvino --int8 "
        "--threads 2 --plot speed.png; lrformer benchmark --weights lrformer_t_int8.xml --backend torch; "
        "lrformer benchmark --train --model lrformer_b --batch 2 --size 512 512; "
        "lrformer benchmark --data configs/lrformer_t_ade20k.yaml --workers 0 2 4"
    )


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    mode = _check_mode(args)
    if mode == "data":
        return _run_data(args)
    if args.model is None and not args.weights:
        raise ConfigError("give --model (a variant name such as lrformer_t, a released model's tag, or a model YAML/JSON)")
    if mode == "train":
        return _run_train(args)
    if args.backend or args.weights or args.int8:
        return _run_backends(args)
    return _run_inference(args)


def _check_mode(args: argparse.Namespace) -> str:
    """``inference``, ``train`` or ``data``; an option of another mode is a one-line error."""
    from ..errors import ConfigError

    if args.train and args.data:
        raise ConfigError("--train and --data measure different things: give one of them per command")
    mode = "train" if args.train else "data" if args.data else "inference"
    names = {"inference": "the inference benchmark", "train": "--train", "data": "--data"}
    for dest, (flag, modes) in OPTIONS.items():
        value = getattr(args, dest)
        if mode not in modes and value not in UNSET:
            add = "--data CONFIG" if modes[0] == "data" else names[modes[0]]
            fix = f"add {add} or leave it out" if mode == "inference" else "leave it out"
            raise ConfigError(
                f"{flag} is not used by {names[mode]} (only by {' and '.join(names[m] for m in modes)}): {fix}"
            )
    return mode


def _run_inference(args: argparse.Namespace) -> int:
    import torch

    from .. import create_model, reparameterize_model
    from ..benchmarking import benchmark
    from ..utils import require_extra
    from .common import check_output_file, check_run_options

    check_run_options(args)
    if args.plot:
        require_extra("matplotlib", "plot", "--plot")
    check_output_file(args.csv, "--csv", (args.model,))
    check_output_file(args.plot, "--plot", (args.model,))
    if args.threads:
        torch.set_num_threads(args.threads)
    model = create_model(args.model).eval()
    if not args.no_fast:
        model = reparameterize_model(model, inplace=True)
    sizes = [tuple(s) for s in (args.size or [[512, 512]])]
    batch = args.batch or 1
    warmup, iters = 3 if args.warmup is None else args.warmup, args.iters or 10
    rows = []
    print(f"{'size':>11} {'batch':>5} {'median ms':>10} {'p90 ms':>8} {'img/s':>8} {'peak MB':>8}")
    for size in sizes:
        result = benchmark(model, size, batch, args.device, args.precision, args.compile, warmup, iters,
                           cudnn_benchmark=args.cudnn_benchmark == "on")  # fmt: skip
        rows.append(result)
        print(f"{size[0]:>5}x{size[1]:<5} {batch:>5} {result['median_ms']:>10.1f} {result['p90_ms']:>8.1f} "
              f"{result['images_per_s']:>8.2f} {result['peak_mb']:>8.0f}")  # fmt: skip
    _write_csv(args.csv, rows)
    if args.plot:
        _plot(rows, args.plot, f"{args.model} on {args.device} ({args.precision}, batch {batch})")
    return 0


def _run_backends(args: argparse.Namespace) -> int:
    """Backends side by side (:class:`lrformer.deploy.speed.Comparison`): one table, CSV and plot."""
    from ..deploy.speed import Comparison, check_backends
    from ..utils import require_extra
    from .common import check_output_file

    backends = tuple(dict.fromkeys(args.backend or ()))
    _check_backend_options(args, backends)
    check_backends(backends, args.int8, export=args.weights is None)
    _check_devices(args, backends)
    if args.plot:
        require_extra("matplotlib", "plot", "--plot")
    check_output_file(args.csv, "--csv", (args.model, args.weights))
    check_output_file(args.plot, "--plot", (args.model, args.weights))
    comparison = Comparison(args.model, backends, args.int8, args.weights, args.batch or 1, args.device, args.threads,
                            not args.no_fast, args.precision, args.compile, 3 if args.warmup is None else args.warmup,
                            args.iters or 10)  # fmt: skip
    sizes = [tuple(s) for s in args.size] if args.size else comparison.default_sizes()
    comparison.check_sizes(sizes)
    if not args.weights and set(backends) - {"torch"}:
        calibration = " (int8: calibrated on synthetic scenes, for speed only)" if args.int8 else ""
        print(f"exporting the model at each size{calibration}", flush=True)
    header = (f"{'backend':<12} {'precision':<9} {'size':>11} {'batch':>5} {'median ms':>10} {'p90 ms':>8} {'img/s':>8} "
              f"{'peak MB':>8} {'vs torch':>8}")  # fmt: skip
    rows = []
    for results in comparison.run(sizes):
        if not rows:  # after the first size's exports, whose tools print progress of their own
            print(header, flush=True)
        for row in results:
            speedup = f"{row['speedup']:.2f}x" if row["speedup"] == row["speedup"] else "-"
            print(f"{row['backend']:<12} {row['precision']:<9} {row['height']:>5}x{row['width']:<5} {row['batch']:>5} "
                  f"{row['median_ms']:>10.1f} {row['p90_ms']:>8.1f} {row['images_per_s']:>8.2f} {row['peak_mb']:>8.0f} "
                  f"{speedup:>8}", flush=True)  # fmt: skip
        rows += results
    for note in comparison.notes:
        print(f"note: {note}")
    print("latency: the backends interleaved in this process; peak MB: a fresh process that loads one network and "
          "runs it (PyTorch and the runtime included); vs torch: the torch row's median latency over this row's")  # fmt: skip
    _write_csv(args.csv, rows)
    if args.plot:
        _plot(rows, args.plot, f"{args.model or args.weights} on {args.device} (batch {args.batch or 1})")
    return 0


def _check_backend_options(args: argparse.Namespace, backends: tuple[str, ...]) -> None:
    """One-line errors for what a backend comparison cannot do."""
    from ..deploy.runtimes import is_exported
    from ..deploy.speed import INT8_BACKENDS
    from ..errors import ConfigError

    runtimes = [b for b in backends if b != "torch"]
    if args.weights and not is_exported(args.weights):
        raise ConfigError(f"--weights {args.weights}: benchmark times an exported model (.onnx, or an OpenVINO .xml); "
                          "a PyTorch model is timed by --model (its weights do not change its speed)")  # fmt: skip
    if args.weights and (runtimes or args.int8):
        option = f"--backend {runtimes[0]}" if runtimes else "--int8"
        raise ConfigError(f"--weights {args.weights} is timed as it is, not exported: leave {option} out (or drop "
                          "--weights to export --model)")  # fmt: skip
    if args.int8 and not set(backends) & set(INT8_BACKENDS):
        raise ConfigError("--int8 adds the int8 export of OpenVINO: add --backend openvino")
    if "torch" not in backends:
        given = [flag for dest, flag in TORCH_ONLY.items() if getattr(args, dest) not in UNSET]
        given += [f"--precision {args.precision}"] if args.precision != "fp32" else []
        if given:
            raise ConfigError(f"{given[0]} applies to the PyTorch model: add --backend torch, or leave it out")
    if not args.weights and not backends:
        raise ConfigError("give --backend torch|onnxruntime|openvino (repeat it to compare), or --weights FILE")


def _check_devices(args: argparse.Namespace, backends: tuple[str, ...]) -> None:
    """``--device`` for every row, before anything is exported (each backend resolves ``auto`` its way)."""
    from ..deploy.runtimes import resolve_device
    from ..devices import autocast_dtype, check_device, set_cudnn_autotuning

    if "torch" in backends:
        import torch

        device = check_device(args.device, "--device", "--device cpu")
        autocast_dtype(args.precision, device)
        set_cudnn_autotuning(torch.device(device), args.cudnn_benchmark == "on")
    for backend, suffix in (("onnxruntime", ".onnx"), ("openvino", ".xml")):
        if backend in backends:
            resolve_device(f"model{suffix}", args.device)
    if args.weights:
        resolve_device(args.weights, args.device)


def _run_train(args: argparse.Namespace) -> int:
    from ..engine.step_benchmark import benchmark_train_step
    from ..errors import ConfigError
    from .common import check_output_file, check_run_options

    check_run_options(args)
    check_output_file(args.csv, "--csv", (args.model,))
    warmup, iters = 1 if args.warmup is None else args.warmup, args.iters or 3
    if warmup < 1:
        raise ConfigError("--train needs --warmup 1 or more: the first step creates the gradients and the "
                          "optimizer state, which the memory figures leave out")  # fmt: skip
    choice = args.grad_checkpoint or "both"
    settings = {"off": [False], "on": [True], "both": [False, True]}[choice]
    sizes = [tuple(s) for s in (args.size or [[512, 512]])]
    batch = args.batch or 2
    name, width = str(args.model), max(14, len(str(args.model)))
    header = f"{'model':<{width}} {'size':>11} {'batch':>5} {'checkpointing':>13} {'ms/iter':>9} {'peak MB':>8} {'added MB':>8}"
    rows, notes = [], set()
    for size in sizes:
        for enabled in settings:
            row = benchmark_train_step(args.model, size, batch, enabled, args.device, args.precision, warmup, iters,
                                       args.threads, cudnn_benchmark=args.cudnn_benchmark != "off")  # fmt: skip
            if not rows:  # after the first measurement, which names a wrong --model
                print(header, flush=True)
            rows.append(row)
            notes.add(row["note"])
            print(f"{name:<{width}} {size[0]:>5}x{size[1]:<5} {batch:>5} {'on' if enabled else 'off':>13} "
                  f"{row['median_ms']:>9.1f} {row['peak_mb']:>8.0f} {row['added_mb']:>8.0f}", flush=True)  # fmt: skip
        off, on = rows[-2:] if len(settings) == 2 else (None, None)
        if off and off["added_mb"] > 0 and off["median_ms"] > 0:
            print(f"{'':<{width}} {size[0]:>5}x{size[1]:<5} checkpointing: {on['added_mb'] / off['added_mb']:.2f}x the "
                  f"added memory at {on['median_ms'] / off['median_ms']:.2f}x the time", flush=True)  # fmt: skip
    for note in sorted(filter(None, notes)):
        print(f"note: {note}")
    _write_csv(args.csv, rows)
    return 0


def _run_data(args: argparse.Namespace) -> int:
    from ..engine.config import load_config
    from ..engine.step_benchmark import benchmark_data
    from .common import check_output_file

    check_output_file(args.csv, "--csv", (args.data,))
    config = load_config(args.data, args.overrides or [])
    workers = list(dict.fromkeys(args.workers if args.workers is not None else [0, 1, 2]))
    rows = benchmark_data(config, workers, args.batches or 10)
    print(f"{'workers':>7} {'batch':>5} {'images/s':>9} {'images/s/worker':>15}")
    for row in rows:
        print(f"{row['workers']:>7} {row['batch_size']:>5} {row['images_per_s']:>9.1f} "
              f"{row['images_per_s_per_worker']:>15.1f}")  # fmt: skip
    _write_csv(args.csv, rows)
    return 0


def _write_csv(path: str | None, rows: list[dict]) -> None:
    import csv

    from ..utils import atomic_path

    if not path:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot(rows: list[dict], path: str, title: str) -> None:
    from ..utils import atomic_path, require_extra

    require_extra("matplotlib", "plot", "--plot").use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[dict]] = {}
    for row in rows:  # one line per backend and precision (a single one without --backend)
        series.setdefault(" ".join(str(row[k]) for k in ("backend", "precision") if k in row), []).append(row)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, points in series.items():
        pixels = [r["height"] * r["width"] / 1e6 for r in points]
        left.plot(pixels, [r["median_ms"] for r in points], "o-", label=label or None)
        right.plot(pixels, [r["peak_mb"] for r in points], "o-", label=label or None)
    left.set(xlabel="megapixels per image", ylabel="median latency (ms)", title="latency")
    right.set(xlabel="megapixels per image", ylabel="peak memory (MB)", title="memory")
    if len(series) > 1:
        left.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
