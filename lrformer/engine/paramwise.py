"""Parameter groups of the official recipes: mmengine's ``paramwise_cfg`` (``custom_keys`` and
``norm_decay_mult``) as its ``DefaultOptimWrapperConstructor`` applies it.

Design notes: ``docs/design.md``, section 9 (training semantics).
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ..errors import ConfigError
from ..utils import did_you_mean

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
"""Modules whose parameters ``norm_decay_mult`` applies to (mmengine's ``is_norm``)."""


def expand_custom_keys(custom_keys: dict[str, dict[str, float]], depths: Sequence[int]) -> dict[str, dict[str, float]]:
    """Custom keys with ``{stage}`` / ``{block}`` placeholders written out for a backbone.

    ``{stage}`` stands for 1..len(depths) and ``{block}`` for 0..depths[stage-1]-1, so
    ``backbone.block{stage}.{block}.norm`` becomes ``backbone.block1.0.norm``, ...,
    ``backbone.block4.2.norm`` for depths (2, 2, 6, 3): the keys the official LRFormer+ configs
    build with a comprehension. Keys without placeholders are kept as they are.
    """
    check_custom_keys(custom_keys)
    expanded: dict[str, dict[str, float]] = {}
    for key, settings in custom_keys.items():
        if "{stage}" not in key:
            expanded[key] = settings
            continue
        for stage, depth in enumerate(depths, start=1):
            blocks = range(depth) if "{block}" in key else [None]
            for block in blocks:
                expanded[key.replace("{stage}", str(stage)).replace("{block}", str(block))] = settings
    return expanded


CUSTOM_KEY_FIELDS = ("lr_mult", "decay_mult")


def check_custom_keys(custom_keys: dict[str, dict[str, float]]) -> None:
    """Raise :class:`~lrformer.errors.ConfigError` naming the key for a custom key that is not
    ``{lr_mult, decay_mult}`` (numbers) or has placeholders other than ``{stage}`` and
    ``{stage}``+``{block}``."""
    for key, settings in custom_keys.items():
        where = f"optim.custom_keys.{key}"
        if not isinstance(settings, dict):
            raise ConfigError(f"{where} must be a mapping such as {{lr_mult: 0.1, decay_mult: 0.0}}, got {settings!r}")
        for name, value in settings.items():
            if name not in CUSTOM_KEY_FIELDS:
                raise ConfigError(f"{where}: unknown field {name!r}.{did_you_mean(name, CUSTOM_KEY_FIELDS)} "
                                 f"Valid: {', '.join(CUSTOM_KEY_FIELDS)}.")  # fmt: skip
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}.{name} must be a number >= 0, got {value!r}")
        rest = str(key).replace("{stage}", "").replace("{block}", "")
        if "{" in rest or "}" in rest or ("{block}" in key and "{stage}" not in key):
            raise ConfigError(f"{where}: placeholders are {{stage}} and {{stage}} with {{block}}, e.g. "
                             "backbone.block{stage}.{block}.norm")  # fmt: skip


def custom_key_for(name: str, custom_keys: dict[str, dict[str, float]]) -> str | None:
    """mmengine's rule: the first custom key contained in the full parameter name, trying keys
    longest first, then alphabetically; only that key applies."""
    for key in sorted(custom_keys, key=lambda k: (-len(k), k)):
        if key in name:
            return key
    return None


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    custom_keys: dict[str, dict[str, float]],
    norm_decay_mult: float | None = None,
) -> list[dict[str, Any]]:
    """One optimiser group per distinct (lr_mult, decay_mult), parameters named as in the checkpoint.

    As mmengine: a parameter matched by a custom key takes that key's multipliers only (missing
    ones are 1); otherwise ``norm_decay_mult`` (when given) applies to the parameters of
    normalisation layers. Placeholders in the keys are expanded with the backbone's depths
    (:func:`expand_custom_keys`). Frozen parameters (``requires_grad=False``) are left out.
    """
    depths = getattr(getattr(model, "backbone", model), "depths", None)
    if depths is not None:
        custom_keys = expand_custom_keys(custom_keys, depths)
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = custom_key_for(name, custom_keys)
        settings = custom_keys.get(key, {}) if key else {}
        lr_mult, decay_mult = settings.get("lr_mult", 1.0), settings.get("decay_mult", 1.0)
        if key is None and norm_decay_mult is not None and id(param) in norm_params:
            decay_mult = norm_decay_mult
        group = groups.setdefault(
            (lr_mult, decay_mult),
            {"params": [], "names": [], "lr": lr * lr_mult, "weight_decay": weight_decay * decay_mult,
             "lr_mult": lr_mult, "decay_mult": decay_mult},
        )  # fmt: skip
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())
