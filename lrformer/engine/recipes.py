"""The training recipes shipped inside the package, found by name.

Every recipe is a YAML file of the package's ``configs`` folder (in a clone, ``configs/`` at the
repository root links to it): the official LRFormer recipes (``lrformer_t_ade20k``, ...), the base
files they inherit (``ade20k_base``, ...; a name ending in ``_base``) and the config of
``lrformer demo`` (``demo``). A recipe's name is its file name without ``.yaml``; wherever a
config is asked for (``lrformer train NAME``, :func:`~lrformer.engine.config.load_config`, a
``_base_:`` entry) the name stands for the file, so an installed wheel trains without a clone::

    lrformer configs                                   # the recipes, with model, dataset, description
    lrformer train lrformer_t_ade20k --set data.root=data/

This module finds the files (and says which file a ``_base_`` entry names); building a config
from them is :mod:`lrformer.engine.config`'s, which imports this one (and PyTorch: listing the
recipes here does not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ConfigError, MissingFileError, UnknownNameError
from ..utils import did_you_mean, read_mapping

__all__ = [
    "BASE_SUFFIX", "DEMO", "SUFFIX", "Recipe", "base_entries", "base_path", "find_recipe", "leading_comment",
    "list_recipes", "missing_config_error", "recipe_folder", "recipe_names", "recipe_path", "resolve_config_argument",
]  # fmt: skip

SUFFIX = ".yaml"
"""The suffix of a recipe file; a name may be given with or without it."""

BASE_SUFFIX = "_base"
"""A recipe whose name ends so is a base file, meant to be inherited (``_base_:``), not trained alone."""

DEMO = "demo"
"""The recipe of ``lrformer demo`` (its dataset is filled in by the command)."""

HINT = "`lrformer configs` lists the recipes"
"""Where to look up the names: the fix of every unknown-recipe error."""


@dataclass(frozen=True)
class Recipe:
    """A packaged recipe: its name, file, one-line description, and the model variant and dataset
    it trains after its ``_base_`` chain is resolved (``None`` where the chain sets none)."""

    name: str
    path: Path
    description: str
    variant: str | None
    dataset: str | None

    @property
    def is_base(self) -> bool:
        """Whether it is a base file, inherited by other recipes (``ade20k_base``) rather than trained."""
        return self.name.endswith(BASE_SUFFIX)

    @property
    def is_demo(self) -> bool:
        """Whether it is the config of ``lrformer demo``."""
        return self.name == DEMO

    @property
    def kind(self) -> str:
        """``"base"``, ``"demo"`` or ``"recipe"``."""
        return "base" if self.is_base else "demo" if self.is_demo else "recipe"


def recipe_folder() -> Path:
    """The package's folder of recipe files, as a path on disk."""
    folder = resources.files("lrformer") / "configs"
    if not isinstance(folder, Path):  # e.g. a zip import: the recipes must be files that YAML can name
        raise RuntimeError(f"the lrformer package is not installed as files on disk ({folder}); reinstall it")
    return folder


def recipe_names() -> list[str]:
    """The names of the packaged recipes, sorted."""
    return sorted(path.stem for path in recipe_folder().glob(f"*{SUFFIX}"))


def find_recipe(name: str) -> Path | None:
    """The file of recipe ``name`` (``lrformer_t_ade20k`` or ``lrformer_t_ade20k.yaml``), or ``None``."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    if not stem or stem != os.path.basename(stem) or stem in (".", ".."):  # a path is no name
        return None
    path = recipe_folder() / f"{stem}{SUFFIX}"
    return path if path.is_file() else None


def recipe_path(name: str) -> Path:
    """The file of recipe ``name``; an unknown name is an :class:`UnknownNameError` naming the closest."""
    path = find_recipe(name)
    if path is None:
        stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
        raise UnknownNameError(f"unknown recipe {name!r}.{did_you_mean(stem, recipe_names())} {HINT}")
    return path


def resolve_config_argument(text: str | os.PathLike) -> Path:
    """The config file that ``text`` names: an existing file first, then a recipe name; text that
    looks like a path (a folder separator, a ``.yaml`` / ``.yml`` suffix) and names no file is a
    :class:`MissingFileError`, anything else an unknown recipe (:func:`recipe_path`)."""
    text = os.fspath(text)
    if os.path.isfile(text):
        return Path(text)
    recipe = find_recipe(text)
    if recipe is not None:
        return recipe
    if os.path.exists(text):  # a folder or a device: config.py says it is no file
        return Path(text)
    if _looks_like_a_path(text):
        raise missing_config_error(os.path.abspath(text))
    return recipe_path(text)


def _looks_like_a_path(text: str) -> bool:
    separators = [sep for sep in (os.sep, os.altsep, "/") if sep]
    return any(sep in text for sep in separators) or Path(text).suffix.lower() in (".yaml", ".yml")


def base_path(entry: str, folder: str | os.PathLike) -> Path:
    """The file a ``_base_`` entry of a config in ``folder`` names: the file relative to ``folder``
    (or absolute) where it exists, else the packaged recipe of that name, else that missing file."""
    path = Path(folder) / entry
    return path if path.exists() else find_recipe(entry) or path


def base_entries(data: dict, path: str | os.PathLike) -> list[str]:
    """The ``_base_`` entries of ``data`` (the mapping of the config file ``path``), removed from it:
    a name or a list of names, as a list."""
    bases = data.pop("_base_", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"_base_ in {path} must be a file name or a list of file names, got {bases!r}")
    return bases


def missing_config_error(path: str | os.PathLike, referrer: str = "") -> MissingFileError:
    """The error for a config file that does not exist; ``referrer`` says who named it (`` (the
    _base_ of x.yaml)``)."""
    return MissingFileError(
        f"config {path} does not exist{referrer}; give the path of a YAML config or a recipe name ({HINT})"
    )


def leading_comment(path: str | os.PathLike) -> list[str]:
    """The text of the ``#`` comment lines that open the file at ``path``, without the ``#``."""
    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            lines.append(line[1:].strip())
    return lines


def list_recipes() -> list[Recipe]:
    """Every packaged recipe, sorted by name, with the model variant and dataset its ``_base_``
    chain sets (``None`` where it sets none: a base file, or the demo's dataset)."""
    recipes = []
    for name in recipe_names():
        path = recipe_folder() / f"{name}{SUFFIX}"
        variant, dataset = _chain_value(path, "model", "name"), _chain_value(path, "data", "dataset")
        description = _first_clause(" ".join(leading_comment(path)))
        recipes.append(Recipe(name, path, description, variant, dataset))
    return recipes


def _chain_value(path: Path, section: str, key: str):
    """``section.key`` as the ``_base_`` chain of the recipe ``path`` sets it, merged as
    :func:`~lrformer.engine.config.merge` merges (the file overriding its bases, a later base an
    earlier one; a section holding ``_delete_: true`` drops what its bases set), without the defaults."""
    data = read_mapping(path, "recipe", "config sections (model:, data:, ...)")
    value = None
    for base in base_entries(data, path):
        value = _chain_value(base_path(base, path.parent), section, key)
    own = data.get(section) or {}
    return own.get(key) if key in own or own.get("_delete_") else value


def _first_clause(text: str) -> str:
    """``text`` up to the first ``.``, ``:`` or ``;`` that ends a clause outside brackets."""
    depth = 0
    for index, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if depth == 0 and char in ".:;" and (index + 1 == len(text) or text[index + 1] == " "):
            return text[:index]
    return text
