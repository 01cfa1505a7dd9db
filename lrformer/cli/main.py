"""``lrformer`` command: dispatches to the sub-command modules."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

COMMANDS = {
    "flops": "lrformer.cli.flops",
    "predict": "lrformer.cli.predict",
    "eval": "lrformer.cli.eval",
    "convert": "lrformer.cli.convert",
    "train": "lrformer.cli.train",
    "configs": "lrformer.cli.configs",
    "demo": "lrformer.cli.demo",
    "benchmark": "lrformer.cli.benchmark",
    "export": "lrformer.cli.export",
    "serve": "lrformer.cli.serve",
    "models": "lrformer.cli.models",
}
"""Sub-command name → module defining ``add_arguments(parser)``, ``run(args) -> int`` and ``HELP``."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lrformer COMMAND: error: ... (see lrformer COMMAND --help)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog="lrformer", description="LRFormer semantic segmentation toolkit.")
    parser.add_argument("--version", action="version", version=f"lrformer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also LRFORMER_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of an error (also LRFORMER_DEBUG=1)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command; any exception becomes one line ``lrformer COMMAND: error: ...`` and exit code 2."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    for client in ("httpx", "httpx2", "httpcore"):  # the Hub client's HTTP requests: only with --verbose
        logging.getLogger(client).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    debug = args.debug or os.environ.get("LRFORMER_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
    try:
        module = importlib.import_module(COMMANDS[args.command])
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"lrformer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the error boundary: one line, the traceback only on request
        if getattr(exc, "on_every_rank", False) and os.environ.get("RANK", "0") != "0":
            return 2  # the main process says it
        if debug:
            traceback.print_exc()
        print(f"lrformer {args.command}: error: {error_line(exc, debug)}", file=sys.stderr)
        return 2


def error_line(exc: BaseException, debug: bool = False) -> str:
    """One line for an exception: a user's mistake (:class:`~lrformer.errors.LRFormerError`) says
    its message, a system error (``OSError``: a missing file, a permission, a full disk) its file and
    reason, and anything else is an internal error to report, named by its type."""
    from ..errors import LRFormerError

    more = "" if debug else " (--debug shows the full message)"
    if isinstance(exc, LRFormerError):
        if exc.summary and not debug:
            return exc.summary
        return _first_line(str(exc).strip() or type(exc).__name__, more)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc).strip() or type(exc).__name__
        names = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
        return _first_line(f"{' -> '.join(names)}: {reason}" if names else reason, more)
    line = _first_line(str(exc).strip() or "(no message)", "")
    return f"internal error: {type(exc).__name__}: {line} (rerun with --debug for the traceback, and please report it)"


def _first_line(message: str, more: str) -> str:
    """The first line of ``message``, followed by ``more`` when there are others."""
    lines = message.splitlines() or [""]
    return lines[0] + (more if len(lines) > 1 else "")


if __name__ == "__main__":
    sys.exit(main())
