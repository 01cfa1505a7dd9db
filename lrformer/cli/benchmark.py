"""``lrformer benchmark``: latency, throughput and peak memory of a model over input sizes."""

from __future__ import annotations

import argparse

HELP = "measure latency (median, p90), images/s and peak memory over one or many resolutions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import add_device_argument, add_fast_argument, add_precision_argument, non_negative_int, positive_int

    parser.add_argument("--model", required=True, help="variant name or model YAML/JSON")
    parser.add_argument("--size", nargs=2, type=positive_int, action="append", metavar=("H", "W"),
                        help="input size; repeat for several (default 512 512)")  # fmt: skip
    parser.add_argument("--batch", type=positive_int, default=1, help="images per forward pass")
    add_device_argument(parser)
    add_precision_argument(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    add_fast_argument(parser)
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed passes per size")
    parser.add_argument("--iters", type=positive_int, default=10, help="timed passes per size")
    parser.add_argument("--csv", default=None, help="write the results as CSV")
    parser.add_argument("--plot", default=None, help="plot latency and memory against resolution (PNG, matplotlib)")
    parser.epilog = "example: lrformer benchmark --model lrformer_t --size 512 512 --size 1024 1024 --threads 2"


def run(args: argparse.Namespace) -> int:
    import csv

    import torch

    from .. import create_model, reparameterize_model
    from ..benchmarking import benchmark
    from ..utils import atomic_path
    from .common import check_output_file, check_run_options

    check_run_options(args)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from None
    check_output_file(args.csv, "--csv", (args.model,))
    check_output_file(args.plot, "--plot", (args.model,))
    if args.threads:
        torch.set_num_threads(args.threads)
    model = create_model(args.model).eval()
    if not args.no_fast:
        model = reparameterize_model(model, inplace=True)
    sizes = [tuple(s) for s in (args.size or [[512, 512]])]
    rows = []
    print(f"{'size':>11} {'batch':>5} {'median ms':>10} {'p90 ms':>8} {'img/s':>8} {'peak MB':>8}")
    for size in sizes:
        result = benchmark(model, size, args.batch, args.device, args.precision, args.compile, args.warmup, args.iters)
        rows.append(result)
        print(f"{size[0]:>5}x{size[1]:<5} {args.batch:>5} {result['median_ms']:>10.1f} {result['p90_ms']:>8.1f} "
              f"{result['images_per_s']:>8.2f} {result['peak_mb']:>8.0f}")  # fmt: skip
    if args.csv:
        with atomic_path(args.csv) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.plot:
        _plot(rows, args.plot, f"{args.model} on {args.device} ({args.precision}, batch {args.batch})")
    return 0


def _plot(rows: list[dict], path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from exc
    from ..utils import atomic_path

    pixels = [r["height"] * r["width"] / 1e6 for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(pixels, [r["median_ms"] for r in rows], "o-")
    left.set(xlabel="megapixels per image", ylabel="median latency (ms)", title="latency")
    right.plot(pixels, [r["peak_mb"] for r in rows], "o-", color="tab:red")
    right.set(xlabel="megapixels per image", ylabel="peak memory (MB)", title="memory")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
