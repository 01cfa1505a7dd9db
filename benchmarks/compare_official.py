"""Side-by-side: ``lrformer`` (plain and fast path) against the official-structure reference.

Usage (from the repository root)::

    python benchmarks/compare_official.py --check                      # all three reproduce the parity files (also a test)
    python benchmarks/compare_official.py --size 512 512 --threads 2   # interleaved latency, logit diff
    python benchmarks/compare_official.py --memory --size 2048 2048    # peak RSS, one process each

Latency: the implementations run in one process on the same weights and input, interleaved
round by round (``--rounds`` × ``--iters`` forwards each), so machine noise hits all of them
alike. Memory: each implementation runs one forward in a fresh process and reports its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from official_reference import EncoderDecoder  # noqa: E402

import lrformer  # noqa: E402
from lrformer.models.registry import VARIANTS  # noqa: E402
from lrformer.utils import peak_memory_mb  # noqa: E402

PARITY = HERE.parent / "tests" / "data"
IMPLEMENTATIONS = ("official", "plain", "fast")


def build(impl: str, config: dict, state_dict: dict, **create_kwargs) -> torch.nn.Module:
    """One implementation with ``state_dict`` loaded, in eval mode (``create_kwargs`` go to ``create_model``)."""
    model = EncoderDecoder(config) if impl == "official" else lrformer.create_model(config["name"], **create_kwargs)
    model.load_state_dict(state_dict)
    model.eval()
    return lrformer.reparameterize_model(model) if impl == "fast" else model


def variant(name: str, num_classes: int) -> tuple[dict, dict]:
    """Config and a seeded random state dict of a released variant."""
    torch.manual_seed(0)
    state_dict = lrformer.create_model(name, num_classes=num_classes).state_dict()
    return {**VARIANTS[name], "name": name, "num_classes": num_classes}, state_dict


def check_parity() -> None:
    """The three implementations against the official outputs stored in ``tests/data``."""
    cases = torch.load(PARITY / "tiny_cases.pt", weights_only=False)
    state = torch.load(PARITY / "tiny_released_layout.pth", weights_only=False)["state_dict"]
    state = {k: v.float() for k, v in state.items()}
    config = {**cases["config"], "name": "lrformer_t"}
    for impl in IMPLEMENTATIONS:
        model = build(impl, config, state, **cases["config"])
        with torch.inference_mode():
            errors = [(model(c["input"].float()) - resized(c["logits"], c["input"])).abs().max().item()
                      for c in cases["cases"]]  # fmt: skip
        print(f"{impl:8s} max abs error vs parity logits: " + ", ".join(f"{e:.1e}" for e in errors))


def resized(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Stride-8 logits resized to the size of the input ``x``, as every ``model(x)`` returns them."""
    return torch.nn.functional.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def compare_latency(args: argparse.Namespace) -> None:
    config, state_dict = variant(args.model, args.num_classes)
    models = {impl: build(impl, config, state_dict, num_classes=args.num_classes) for impl in IMPLEMENTATIONS}
    x = torch.randn(args.batch, 3, *args.size, generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {impl: [] for impl in models}
    with torch.inference_mode():
        reference = models["official"](x)
        exact = build("official", config, state_dict).double()(x.double())
        for impl, model in models.items():
            out = model(x)
            print(
                f"{impl:8s} max |logit - official| = {(out - reference).abs().max().item():.2e}   "
                f"max |logit - float64| = {(out.double() - exact).abs().max().item():.2e}"
            )
        print(f"logits: max |value| {reference.abs().max().item():.1f}")
        for _ in range(args.warmup):
            for model in models.values():
                model(x)
        for _ in range(args.rounds):
            for impl, model in models.items():
                for _ in range(args.iters):
                    start = time.perf_counter()
                    model(x)
                    times[impl].append(time.perf_counter() - start)
    official = statistics.median(times["official"])
    for impl, samples in times.items():
        median = statistics.median(samples)
        print(
            f"{impl:8s} median {median * 1e3:7.1f} ms   min {min(samples) * 1e3:7.1f} ms   speed-up {official / median:.2f}x"
        )


def measure_memory(args: argparse.Namespace) -> None:
    for impl in IMPLEMENTATIONS:
        command = [sys.executable, __file__, "--child", impl, "--model", args.model, "--size", *map(str, args.size)]
        command += ["--threads", str(args.threads), "--batch", str(args.batch), "--num-classes", str(args.num_classes)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(f"{impl:8s} peak RSS {result['peak_mb']:7.0f} MB   (one forward: {result['seconds']:.2f} s)")


def child(args: argparse.Namespace) -> None:
    config, state_dict = variant(args.model, args.num_classes)
    model = build(args.child, config, state_dict, num_classes=args.num_classes)
    del state_dict
    x = torch.randn(args.batch, 3, *args.size)
    with torch.inference_mode():
        start = time.perf_counter()
        model(x)
        seconds = time.perf_counter() - start
    print(json.dumps({"peak_mb": peak_memory_mb(torch.device("cpu")), "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="lrformer_t", choices=[n for n in VARIANTS if VARIANTS[n].get("head_channels")]
    )
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="check the three against the parity files and exit")
    parser.add_argument("--memory", action="store_true", help="peak RSS of one forward, one process each")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.check:
        check_parity()
    elif args.child:
        child(args)
    elif args.memory:
        measure_memory(args)
    else:
        compare_latency(args)


if __name__ == "__main__":
    main()
