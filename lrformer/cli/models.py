"""``lrformer models``: the released models by tag, with the paper's figures and whether each file is cached."""

from __future__ import annotations

import argparse

HELP = "list the released models (tags for --model / create_model), their figures and whether they are downloaded"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*",
                        help="shell-style filter on the tags, e.g. 'lrformer_t*' or '*.cityscapes'; a plain word: tags containing it, "
                        "e.g. cityscapes (default: all)")  # fmt: skip
    parser.add_argument("--refresh", action="store_true",
                        help="list the Hub repository again (one request) instead of using the cached listing")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the table as JSON lines")
    parser.epilog = (
        "examples:\n  lrformer models\n  lrformer models 'lrformer_t*' --refresh\n"
        "  lrformer predict --model lrformer_t.ade20k photo.jpg --out out/\n"
        "  lrformer eval --model lrformer_l.ade20k --data ade20k --data-root data/"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from ..errors import CheckpointError, ConfigError
    from ..models.hub import cached_listing, is_cached, list_files
    from ..models.zoo import HUB_REPOSITORY, choose_file, list_released

    pattern = args.pattern if any(c in args.pattern for c in "*?[") else f"*{args.pattern}*"  # a word: contained
    models = list_released(pattern)
    if not models:
        raise ConfigError(f"no released model matches {args.pattern!r}: see `lrformer models` for the tags")
    note = ""
    try:
        listing = list_files(HUB_REPOSITORY, refresh=True) if args.refresh else cached_listing(HUB_REPOSITORY)
    except CheckpointError as exc:
        listing, note = None, f"note: {exc}"
    if listing is None and not note:
        note = f"note: {HUB_REPOSITORY} has not been listed yet: `lrformer models --refresh` lists it (one request)"
    rows = []
    for model in models:
        file, cached = None, None
        if listing is not None:
            try:
                file = choose_file(model, listing).path
                cached = is_cached(model.repository, file)
            except CheckpointError:
                file = None
        rows.append(_row(model, file, cached))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        _print_table(rows)
        print("figures: the paper's (GMACs at the test size, parameters, single-scale val mIoU); † ImageNet-22K")
    if note:
        print(note, file=sys.stderr)
    return 0


def _row(model, file: str | None, cached: bool | None) -> dict:
    test = model.test or {}
    setting = (f"slide {test['crop'][0]}" if test.get("mode") == "slide" else
               f"{test['pipeline']} {test['scale'][0]}x{test['scale'][1]}") if test else "-"  # fmt: skip
    return {
        "tag": model.tag, "dataset": model.dataset or f"imagenet ({model.pretraining})",
        "classes": model.num_classes, "test": setting, "params_m": model.params, "flops_g": model.flops,
        "miou": model.miou, "pretraining": model.pretraining, "recipe": model.recipe,
        "file": file, "cached": cached,
    }  # fmt: skip


def _print_table(rows: list[dict]) -> None:
    def text(row: dict) -> list[str]:
        def figure(value, unit="", spec="g"):
            return "-" if value is None else f"{value:{spec}}{unit}"

        cached = {True: "yes", False: "no", None: "?"}[row["cached"]]
        tag = row["tag"] + (" †" if row["pretraining"] == "in22k" and row["classes"] else "")
        return [tag, row["dataset"], figure(row["classes"]), row["test"], figure(row["params_m"], "M"),
                figure(row["flops_g"], "G"), figure(row["miou"], spec=".1f"), cached, row["file"] or "?"]  # fmt: skip

    header = ["tag", "dataset", "classes", "test", "params", "FLOPs", "mIoU", "cached", "file"]
    table = [header] + [text(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
