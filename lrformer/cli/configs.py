"""``lrformer configs``: the training recipes shipped with the package; dump one to edit it."""

from __future__ import annotations

import argparse

HELP = "list the packaged training recipes, or write one out as a self-contained YAML to edit"

USAGE = (
    "train one:       lrformer train lrformer_t_ade20k --set data.root=DATA\n"
    "edit a copy:     lrformer configs --dump lrformer_t_ade20k -o my_config.yaml; lrformer train my_config.yaml\n"
    "or inherit one:  a YAML file with `_base_: lrformer_t_ade20k` and only the keys you change"
)
"""How to use a recipe, printed under the table."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default=None,
                        help="list only the recipes whose name matches this shell-style pattern, e.g. '*plus*' "
                             "(a plain word matches names containing it)")  # fmt: skip
    parser.add_argument("--dump", metavar="NAME", default=None,
                        help="print recipe NAME (or a YAML config) fully resolved, every key, as YAML to "
                             "edit")  # fmt: skip
    parser.add_argument("-o", "--out", metavar="FILE", default=None, help="write the --dump YAML to FILE (not stdout)")
    parser.add_argument("--force", action="store_true", help="let -o replace an existing FILE")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="with --dump: override a value first, e.g. --set data.root=/data")  # fmt: skip
    parser.epilog = (
        "examples:\n  lrformer configs\n  lrformer configs '*plus*'\n"
        "  lrformer train lrformer_t_ade20k --set data.root=data/\n"
        "  lrformer configs --dump lrformer_t_ade20k -o my_config.yaml   # then edit it and\n"
        "  lrformer train my_config.yaml"
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if args.dump is None and (args.out is not None or args.force or args.overrides):
        raise ConfigError("-o, --force and --set go with --dump NAME: add --dump NAME")
    if args.dump is not None and args.pattern is not None:
        raise ConfigError(f"give a pattern to list recipes or --dump NAME, not both (got {args.pattern!r})")
    if args.dump is not None:
        return _dump(args.dump, args.overrides, args.out, args.force)
    return _list(args.pattern)


def _list(pattern: str | None) -> int:
    import fnmatch

    from ..engine.recipes import list_recipes
    from ..errors import ConfigError
    from ..utils import did_you_mean

    recipes = list_recipes()
    if pattern is not None:
        wanted = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
        chosen = [r for r in recipes if fnmatch.fnmatchcase(r.name, wanted)]
        if not chosen:
            close = did_you_mean(pattern, [r.name for r in recipes])
            raise ConfigError(f"no recipe matches {pattern!r}.{close} `lrformer configs` lists them all")
        recipes = chosen
    rows = [("NAME", "MODEL", "DATASET", "KIND", "DESCRIPTION")]
    rows += [(r.name, r.variant or "-", r.dataset or "-", r.kind, r.description) for r in recipes]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    print("\nbase: inherited by other recipes (_base_), not trained alone; demo: the config of `lrformer demo`\n")
    print(USAGE)
    return 0


def _dump(name: str, overrides: list[str], out: str | None, force: bool) -> int:
    from ..engine.config import config_chain, dump_config, load_config
    from ..engine.recipes import resolve_config_argument
    from ..utils import write_bytes_atomic

    path = resolve_config_argument(name)
    if out is not None:
        _check_output(out, force)
    text = _header(name, [file for file, _ in config_chain(path)]) + dump_config(load_config(path, overrides))
    if out is None:
        print(text, end="")
        return 0
    write_bytes_atomic(out, text.encode("utf-8"))
    print(f"wrote {out}: edit it, then `lrformer train {out}`")
    return 0


def _header(name: str, files: list) -> str:
    """The comment lines opening a dump: where it came from, then the leading comments of the
    config's files (its ``_base_`` chain), its own first, then its bases, each once."""
    from ..engine.recipes import leading_comment

    lines = [f"{name}, resolved by `lrformer configs --dump`: every key, its _base_ files merged in.",
             "Edit what you need, then `lrformer train THIS_FILE`."]  # fmt: skip
    own, seen = files[-1], set()
    for file in reversed(files):
        comment = leading_comment(file)
        if comment and file not in seen:
            seen.add(file)
            lines += ["", *([] if file == own else [f"from {file.name}:"]), *comment]
    return "".join(f"# {line}".rstrip() + "\n" for line in lines) + "\n"


def _check_output(out: str, force: bool) -> None:
    """Refuse an ``-o`` inside the packaged recipes, a folder, or an existing file without ``--force``."""
    import os
    from pathlib import Path

    from ..engine.recipes import recipe_folder
    from ..errors import InputError

    folder = Path(os.path.realpath(recipe_folder()))
    target = Path(os.path.realpath(os.path.dirname(os.path.abspath(out))))
    if target == folder or folder in target.parents:
        raise InputError(f"-o {out} is inside the packaged recipes ({folder}): write your copy elsewhere, "
                         "e.g. -o my_config.yaml")  # fmt: skip
    if os.path.isdir(out):
        raise InputError(f"-o {out} is a folder: give a file name, e.g. -o {os.path.join(out, 'my_config.yaml')}")
    if os.path.lexists(out) and not force:
        raise InputError(f"-o {out} exists: add --force to replace it, or give another file name")
