"""``lrformer`` command: dispatches to the sub-command modules."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "flops": "lrformer.cli.flops",
    "predict": "lrformer.cli.predict",
    "eval": "lrformer.cli.eval",
    "convert": "lrformer.cli.convert",
    "train": "lrformer.cli.train",
    "demo": "lrformer.cli.demo",
    "benchmark": "lrformer.cli.benchmark",
    "export": "lrformer.cli.export",
}
"""Sub-command name → module defining ``add_arguments(parser)``, ``run(args) -> int`` and ``HELP``."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="lrformer", description="LRFormer semantic segmentation toolkit.")
    parser.add_argument("--version", action="version", version=f"lrformer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"lrformer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
