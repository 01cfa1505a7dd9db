"""``lrformer predict``: segment files, folders or globs; write label PNGs and overlays."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "segment images: label maps (palette PNG) and overlays at the original size"
EXAMPLE = "example: lrformer predict --model lrformer_t --weights lrformer_t_ade20k.pth photos/ --out out/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import add_model_arguments, add_test_arguments, fraction, non_negative_int, positive_int

    add_model_arguments(parser)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs")
    parser.add_argument("--out", required=True, help="output folder")
    add_test_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1, help="images (or windows) per forward pass")
    parser.add_argument(
        "--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1), help="image-decoding processes"
    )
    parser.add_argument("--palette", default=None,
                        help="ade20k | cityscapes | cocostuff | random | a dataset YAML with a palette "
                        "(default: from the class count: 150 ade20k, 19 cityscapes, 171 cocostuff, else random)")  # fmt: skip
    parser.add_argument("--opacity", type=fraction, default=0.5, help="overlay opacity of the label colours (0-1)")
    parser.add_argument("--no-overlay", action="store_true", help="write the label maps only")
    parser.epilog = EXAMPLE


def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[str], list[str]]:
    """Expand files, folders (recursive) and globs into image files, each once.

    Returns:
        ``(files, errors, notes)``: the files in input order, one error per input that yields no
        image, and one note per symbolic link skipped (loops, broken links).
    """
    from ..files import GLOB_CHARS, glob_files, walk_files
    from ..image.io import IMAGE_SUFFIXES

    def is_image(path: Path) -> bool:
        return path.suffix.lower() in IMAGE_SUFFIXES

    files: list[Path] = []
    errors: list[str] = []
    notes: list[str] = []
    for entry in inputs:
        path = Path(entry)
        if not entry.strip():
            errors.append("an input is an empty string (an unset shell variable?)")
            continue
        if path.is_dir():
            found, skipped = walk_files(path, is_image)
            if not found:
                errors.append(f"{entry}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            found, skipped = [path], []
        elif any(c in entry for c in GLOB_CHARS):
            found, skipped = glob_files(entry, is_image)
            if not found:
                errors.append(f"{entry}: no image matches this pattern")
        else:
            found, skipped = [], []
            errors.append(f"{entry}: no such file or folder")
        files += found
        notes += skipped
    unique = list(dict.fromkeys(Path(os.path.abspath(f)) for f in files))  # an image given twice runs once
    return unique, errors, notes


def output_names(files: list[Path]) -> list[str]:
    """Output names (without suffix) that cannot collide: each file's path relative to the deepest
    folder holding all the inputs, without its suffix (``d1/a.png`` → ``d1/a``); if two inputs
    differ only by suffix, every name keeps its suffix (``d1/a.png``), unique as the paths are."""
    if not files:
        return []
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    relative = [f.relative_to(root) for f in files]
    stems = [str(r.with_suffix("")) for r in relative]
    if len(set(stems)) == len(stems) and not _clash(stems):
        return stems
    full = [str(r) for r in relative]
    if _clash(full):  # an output file would be a folder of another output: only contrived trees do this
        from ..errors import InputError

        raise InputError(f"the inputs' names give outputs that collide ({_clash(full)}); rename or split the inputs")
    return full


def _clash(names: list[str]) -> str:
    """An output file of one name that is a folder of another's outputs (``d`` and ``d.png/x``), or ``""``."""
    folders = {str(parent) for name in names for parent in Path(name).parents}
    return next((f for name in names for f in (f"{name}.png", f"{name}_overlay.jpg") if f in folders), "")


def output_paths(out: Path, name: str) -> tuple[Path, Path]:
    """The label map and the overlay written for an input named ``name``."""
    return out / f"{name}.png", out / f"{name}_overlay.jpg"


def check_output_folder(out: Path, inputs: list[str], files: list[Path]) -> None:
    """Refuse an ``--out`` that is a file, sits inside an input folder, holds an input (so outputs
    would land among the user's files), or cannot be written to; create it otherwise."""
    from ..errors import InputError
    from .common import ensure_writable, is_inside

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder (it is created if missing)")
    for entry in inputs:
        if Path(entry).is_dir() and is_inside(out, entry):
            raise InputError(
                f"--out {out} is inside the input folder {entry}: outputs would mix with the images (and be "
                f"read as inputs next time); choose a folder outside it, e.g. --out {entry.rstrip('/')}_segmented"
            )
    for image in files:
        if is_inside(image, out):
            raise InputError(
                f"--out {out} holds the input {image}: outputs would be written among your files (and could "
                "replace some); choose a folder that holds no input, e.g. a new one"
            )
    ensure_writable(out, "--out")


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
    import numpy as np
    import torch
    from tqdm import tqdm

    from ..errors import InputError
    from ..inference import Predictor, overlay, save_image, save_label_png
    from ..inference.predictor import model_defaults
    from .common import inference_config, load_model

    files, errors, notes = collect_inputs(args.inputs)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not files:
        raise InputError(f"no input images: {'; '.join(errors)}; give image files, folders or quoted globs")
    names = output_names(files)
    if not args.out.strip():
        raise InputError("--out is empty: give the folder to write to (an unset shell variable?)")
    out = Path(args.out)
    check_output_folder(out, args.inputs, files)  # before the model is loaded and run
    items = list(zip(files, names))
    model = load_model(args)
    predictor = Predictor(model, inference_config(args, model_defaults(model)), device=args.device)
    saved = model.config.get("palette") if hasattr(model, "config") else None  # a self-describing checkpoint's
    if saved and not args.palette and len(saved) >= (predictor.num_classes or 0):
        palette = np.asarray(saved, dtype=np.uint8)
    else:
        palette = resolve_palette(args.palette or default_palette(predictor.num_classes), predictor.num_classes)
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
                label_path, overlay_path = output_paths(out, name)
                writing = label_path
                try:
                    save_label_png(label_path, label, palette)
                    if not args.no_overlay:
                        writing = overlay_path
                        save_image(overlay_path, overlay(prepared.bgr, label, palette, args.opacity))
                except OSError as exc:  # a full disk, a folder removed meanwhile: stop, keep what is done
                    raise InputError(
                        f"cannot write {writing} ({exc.strerror or exc}): free some space or choose another --out "
                        f"and rerun; the {done} finished image(s) are complete"
                    ) from exc
                done += 1
            bar.update(len(batch))
            bar.set_postfix(failed=len(errors))
    print(f"segmented {done} image(s) into {out}" + (f"; {len(errors)} failed:" if errors else ""))
    for error in errors:
        print(f"  {error}")
    return 1 if errors else 0
