"""``lrformer predict``: segment files, folders or globs; write label PNGs and overlays."""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

HELP = "segment images: label maps (palette PNG) and overlays at the original size"
EXAMPLE = "example: lrformer predict --model lrformer_t --weights lrformer_t_ade20k.pth photos/ --out out/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import add_model_arguments, add_test_arguments

    add_model_arguments(parser)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs")
    parser.add_argument("--out", required=True, help="output folder")
    add_test_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=1, help="images (or windows) per forward pass")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="image-decoding processes")
    parser.add_argument("--palette", default=None,
                        help="ade20k | cityscapes | cocostuff | random | a dataset YAML with a palette "
                        "(default: from the class count: 150 ade20k, 19 cityscapes, 171 cocostuff, else random)")  # fmt: skip
    parser.add_argument("--opacity", type=float, default=0.5, help="overlay opacity of the label colours")
    parser.add_argument("--no-overlay", action="store_true", help="write the label maps only")
    parser.epilog = EXAMPLE


def collect_inputs(inputs: list[str]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Expand files, folders and globs into ``(path, output name)`` pairs, plus error messages."""
    from ..inference.image_io import IMAGE_SUFFIXES

    items: list[tuple[Path, str]] = []
    errors: list[str] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            items += [(p, str(p.relative_to(path).with_suffix(""))) for p in files]
            if not files:
                errors.append(f"{entry}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            items.append((path, path.stem))
        else:
            matches = sorted(Path(p) for p in glob.glob(entry, recursive=True) if Path(p).is_file())
            items += [(p, p.stem) for p in matches]
            if not matches:
                errors.append(f"{entry}: no such file, folder or glob match")
    seen: dict[str, int] = {}
    unique = []
    for path, name in items:  # two inputs with the same name get _1, _2 ... suffixes
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append((path, name if count == 0 else f"{name}_{count}"))
    return unique, errors


class _Images:
    """Dataset decoding and preparing images in loader workers; errors are returned, not raised."""

    def __init__(self, items: list[tuple[Path, str]], config) -> None:
        self.items, self.config = items, config

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from ..inference import ImageReadError, prepare

        path, name = self.items[index]
        try:
            return path, name, prepare(path, self.config, keep_image=True), None
        except ImageReadError as exc:
            return path, name, None, str(exc)
        except Exception as exc:  # any other failure of one file must not stop the run
            return path, name, None, f"{path}: {type(exc).__name__}: {exc}"


def default_palette(num_classes: int) -> str:
    return {150: "ade20k", 19: "cityscapes", 171: "cocostuff"}.get(num_classes, "random")


def resolve_palette(name: str, num_classes: int):
    """A named palette, or the ``palette`` of a dataset YAML."""
    import numpy as np

    from ..data.palettes import get_palette

    if name.endswith((".yaml", ".yml")):
        from ..data.datasets import load_spec

        spec = load_spec(name)
        if not spec.palette:
            raise ValueError(f"{name} has no palette")
        return np.asarray(spec.palette, dtype=np.uint8)
    return get_palette(name, num_classes)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..inference import Predictor, overlay, save_image, save_label_png
    from ..inference.predictor import model_defaults
    from .common import inference_config, load_model

    items, errors = collect_inputs(args.inputs)
    model = load_model(args)
    predictor = Predictor(model, inference_config(args, model_defaults(model)), device=args.device)
    palette = resolve_palette(args.palette or default_palette(predictor.num_classes), predictor.num_classes)
    out = Path(args.out)
    loader = torch.utils.data.DataLoader(
        _Images(items, predictor.config), batch_size=args.batch_size, num_workers=args.workers,
        collate_fn=list, shuffle=False,
    )  # fmt: skip
    done = 0
    with tqdm(total=len(items), unit="img", disable=len(items) < 2, file=sys.stderr) as bar:
        for batch in loader:
            for *_, error in batch:
                if error:
                    errors.append(error)
                    tqdm.write(f"error: {error}", file=sys.stderr)
            good = [b for b in batch if b[3] is None]
            labels = predictor.predict_prepared([b[2] for b in good], args.batch_size) if good else []
            for (_, name, prepared, _), label in zip(good, labels):
                save_label_png(out / f"{name}.png", label, palette)
                if not args.no_overlay:
                    save_image(out / f"{name}_overlay.jpg", overlay(prepared.bgr, label, palette, args.opacity))
                done += 1
            bar.update(len(batch))
            bar.set_postfix(failed=len(errors))
    print(f"segmented {done} image(s) into {out}" + (f"; {len(errors)} failed:" if errors else ""))
    for error in errors:
        print(f"  {error}")
    return 1 if errors else 0
