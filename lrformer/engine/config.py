"""Training configs from YAML files or recipe names (with ``_base_`` inheritance) and ``--set`` overrides.

A config is built in layers, each merged into the one before with :func:`merge` (mmengine's rule):
the defaults (:data:`DEFAULTS`), then every file of the ``_base_`` chain from the root down (the
files of a ``_base_`` list in order, a later one overriding an earlier one where mmengine would
reject keys shared between them), then the file itself, then each ``--set key=value`` in order.
Mappings merge key by key, so ``--set optim.custom_keys.head.lr_mult=5`` changes one multiplier
and keeps every other custom key; a mapping holding ``_delete_: true`` replaces the mapping below
it instead. The result is checked and typed: a :class:`~lrformer.engine.settings.TrainingConfig`.

A config is a YAML file or the name of a packaged recipe (``lrformer_t_ade20k``: see
:mod:`lrformer.engine.recipes`). A ``_base_`` entry names a file relative to the config's folder
or, where no such file exists, a packaged recipe, so a YAML file anywhere can start from one::

    _base_: lrformer_t_ade20k
    optim: {lr: 1.0e-4}

What every key takes, its default and its doc are declared once, in :mod:`lrformer.engine.settings`;
an unknown key is an error naming the closest valid one.

Design notes: ``docs/design.md``, section 9 (training semantics).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ConfigError
from .recipes import base_entries, base_path, missing_config_error, resolve_config_argument
from .schema import UnknownKeyError
from .settings import (
    DEFAULTS,
    FREE_FORM,
    RULES,
    TEST_KEYS,
    VALID_KEYS,
    DataSettings,
    ModelSettings,
    OptimSettings,
    ScheduleSettings,
    TrainingConfig,
    TrainSettings,
    unknown_key,
)

__all__ = [
    "DEFAULTS", "DELETE_KEY", "FREE_FORM", "RULES", "TEST_KEYS", "VALID_KEYS", "DataSettings", "ModelSettings",
    "OptimSettings", "ScheduleSettings", "TrainSettings", "TrainingConfig", "UnknownKeyError", "check",
    "config_chain", "dump_config", "load_config", "merge", "unknown_key",
]  # fmt: skip

DELETE_KEY = "_delete_"
"""A mapping holding ``_delete_: true`` replaces the mapping it is merged into (mmengine)."""


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into a copy of ``base``, as mmengine merges configs.

    A mapping in ``update`` is merged key by key into the mapping at the same place in ``base``
    (recursively), unless it holds ``_delete_: true``: then it replaces it, like any other value.
    A mapping of indices (``{"0": 640}``) sets elements of a list. ``_delete_`` markers do not
    appear in the result.
    """
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key == DELETE_KEY:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get(DELETE_KEY, False):
            out[key] = merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), list) and all(str(k).isdigit() for k in value):
            for index, item in value.items():  # --set data.crop_size.0=640: one element of a list
                if int(index) >= len(out[key]):
                    raise ConfigError(f"{key}.{index}: the list {out[key]} has no element {index}")
                out[key][int(index)] = _without_delete(item)
        else:
            out[key] = _without_delete(value)
    return out


def _without_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_delete(v) for k, v in value.items() if k != DELETE_KEY}
    return copy.deepcopy(value)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainingConfig:
    """The defaults, then the config (a YAML file or a recipe name, and its ``_base_`` chain), then
    ``key=value`` overrides; checked (every mistake a :class:`ConfigError` naming the key) and typed."""
    config = copy.deepcopy(DEFAULTS)
    for _, layer in config_chain(path) if path is not None else []:
        config = merge(config, layer)
    for item in overrides:
        config = merge(config, _set_layer(item))
    return TrainingConfig.from_dict(config)


def _set_layer(item: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}``."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}; e.g. --set optim.lr=1e-4")
    key, text = item.split("=", 1)
    layer: dict[str, Any] = {}
    node = layer
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = _parse_value(text)
    return layer


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing a list of numbers or strings on one line, as configs do: ``[512, 512]``."""

    def represent_list(self, data: list) -> yaml.Node:
        flow = all(not isinstance(item, (list, dict)) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)


def _parse_value(text: str) -> Any:
    """YAML value of a ``--set`` override."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise ConfigError(
            f"--set value {text!r} is not valid YAML ({problem}); write lists as [1, 2], mappings as "
            "{key: value}, and quote the whole --set argument in the shell"
        ) from None


def config_chain(config: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """The files that make up ``config`` (a YAML file or a recipe name), each with its mapping
    (``_base_`` removed), in merge order: its ``_base_`` files, root first, then itself."""
    return _file_layers(resolve_config_argument(config))


def _file_layers(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """``(file, mapping)`` of ``path``'s ``_base_`` files (a name or a list: see
    :func:`~lrformer.engine.recipes.base_path`), root first, then ``path``'s own."""
    path = Path(os.path.abspath(path))
    referrer = f" (the _base_ of {chain[-1]})" if chain else ""
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise ConfigError(f"config {path}{referrer} is not a file: give the path of a YAML config")
    if not path.is_file():
        raise missing_config_error(path, referrer)
    if path in chain:
        cycle = " -> ".join(p.name for p in chain[chain.index(path) :] + (path,))
        raise ConfigError(f"_base_ cycle: {cycle}; remove one of these _base_ entries")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}{referrer} is not a UTF-8 text file: give a YAML config") from None
    except RecursionError:
        raise ConfigError(f"config {path} is nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"config {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}; check the brackets, quotes and "
            "indentation there"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections (model:, data:, optim:, ...)")
    layers = []
    for base in base_entries(data, path):
        layers += _file_layers(base_path(base, path.parent), chain + (path,))
    return layers + [(path, data)]


def check(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` checked as :func:`load_config` checks it, as a plain dict with every key filled in
    (kept for callers of the dict-based config; :meth:`TrainingConfig.from_dict` gives the typed one)."""
    return TrainingConfig.from_dict(config).to_dict()


def dump_config(config: TrainingConfig | Mapping[str, Any]) -> str:
    """``config`` as YAML that :func:`load_config` reads back to an equal config: every key, in the
    declared order. A free-form mapping that merging into its default would change (a default
    custom key left out, another resize type) carries ``_delete_: true``, so it replaces the default."""
    tree = TrainingConfig.coerce(config).to_dict()
    for path in FREE_FORM:
        *parents, name = path.split(".")
        node, default = tree, DEFAULTS
        for part in parents:
            node, default = node[part], default[part]
        if merge({name: default[name]}, {name: node[name]}) != {name: node[name]}:
            node[name] = {DELETE_KEY: True, **node[name]}
    return yaml.dump(tree, Dumper=_Dumper, sort_keys=False, width=120)
