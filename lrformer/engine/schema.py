"""Typed config sections whose fields carry their default, their rule and their doc, and the check
of a plain mapping against them.

A section is a dataclass deriving from :class:`Section`; each field is made with :func:`setting`
(a value: its default, its :class:`Rule`, a one-line doc) or :func:`section` (a nested section). A field's
annotation is its kind: ``int``, ``float`` (any finite number), ``bool``, ``str``, ``list[...]``,
or ``dict[...]`` for a free-form mapping; ``X | None`` makes ``null`` valid. The rule says, in
words for the message, what values the field takes. A value that breaks it is a
:class:`~lrformer.errors.ConfigError` naming the key, what it takes, what it got and a fix, e.g.
``optim.lr must be a number > 0, got the string '0.001' (a quoted number: write it without
quotes, optim.lr: 0.001)``.

The declaration of the training config itself is :mod:`lrformer.engine.settings`.
"""

from __future__ import annotations

import copy
import math
import typing
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from functools import cache, partial
from typing import Any, Callable, ClassVar, Iterator, NamedTuple, TypeVar

from ..errors import ConfigError, UnknownNameError
from ..utils import did_you_mean

S = TypeVar("S", bound="Section")


@dataclass(frozen=True)
class Rule:
    """What one key takes beyond its kind.

    Attributes:
        what: the values it takes, in words for the message (``"a number > 0"``).
        test: whether a value of the right kind is valid.
        check: run once every key has passed its test; raises its own :class:`ConfigError`
            (the free-form mappings, and rules a test cannot word, such as a forbidden value).
        keys: the known keys of a free-form mapping, offered by "did you mean".
    """

    what: str = ""
    test: Callable[[Any], bool] = lambda value: True
    check: Callable[[Any], None] | None = None
    keys: tuple[str, ...] = ()


ANY = Rule()
FLAG = Rule("true or false")
STRING = Rule("a non-empty string", bool)


def setting(default: Any, rule: Rule, doc: str) -> Any:
    """A config value: its default (copied for each instance), what it takes, and what it does."""
    return field(
        default_factory=partial(copy.deepcopy, default), metadata={"default": default, "doc": doc, "rule": rule}
    )


def section(kind: type[Section], doc: str) -> Any:
    """A nested section of the config (defaults: the section's own)."""
    return field(default_factory=kind, metadata={"section": kind, "doc": doc})


class Key(NamedTuple):
    """One field of a section, as the checks see it."""

    name: str
    kind: type  # the annotation without ``| None``: int, float, bool, str, list, dict, or a Section
    optional: bool  # null is valid
    default: Any
    doc: str
    rule: Rule
    section: type[Section] | None


@cache
def keys_of(kind: type[Section]) -> tuple[Key, ...]:
    """The fields of a section class, in declaration order."""
    hints = typing.get_type_hints(kind)
    out = []
    for f in fields(kind):
        args = typing.get_args(hints[f.name])
        optional = type(None) in args
        annotation = next(a for a in args if a is not type(None)) if optional else hints[f.name]
        nested = f.metadata.get("section")
        default = nested().to_dict() if nested else f.metadata["default"]
        out.append(Key(f.name, typing.get_origin(annotation) or annotation, optional, default, f.metadata["doc"],
                       f.metadata.get("rule", ANY), nested))  # fmt: skip
    return tuple(out)


class UnknownKeyError(UnknownNameError):
    """A config key that does not exist (a ``KeyError`` too, for callers that catch that)."""

    @classmethod
    def named(cls, key: str, valid: list[str]) -> UnknownKeyError:
        """The error for ``key``, naming the closest of ``valid``."""
        return cls(f"unknown config key {key!r}.{did_you_mean(key, valid, cutoff=0.5)}")


class Section(MutableMapping):
    """Base of the config's sections: typed attributes (``config.optim.lr``), and the access of a
    mapping (``config["optim"]["lr"]``, ``**config.schedule``) for code written against plain dicts.

    Subclasses are ``@dataclass(eq=False)`` classes declaring their place in the config:
    ``class OptimSettings(Section, path="optim")``. Two sections are equal when their keys and
    values are, a plain dict with the same contents included.
    """

    path: ClassVar[str] = ""

    def __init_subclass__(cls, path: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.path = path

    # ------------------------------------------------------------------ mapping access
    def __getitem__(self, key: str) -> Any:
        self._key(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        nested = self._key(key).section
        setattr(self, key, value if nested is None or isinstance(value, nested) else nested.from_dict(value))

    def __delitem__(self, key: str) -> None:
        raise ConfigError(f"config key {self._path(key)!r} cannot be removed: set it to another value or null")

    def __iter__(self) -> Iterator[str]:
        return (key.name for key in keys_of(type(self)))

    def __len__(self) -> int:
        return len(keys_of(type(self)))

    def _key(self, name: str) -> Key:
        for key in keys_of(type(self)):
            if key.name == name:
                return key
        raise UnknownKeyError.named(self._path(name), valid_keys(type(self)))

    def _path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict of every key (lists, dicts, scalars), for YAML and checkpoints."""
        return plain(self)

    @classmethod
    def from_dict(cls: type[S], values: Mapping[str, Any] | None = None) -> S:
        """The section of ``values`` (a mapping; missing keys take their defaults), checked:
        unknown keys, mappings where a value belongs and values that break their rule are a
        :class:`ConfigError` naming the key."""
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"{cls.__name__} takes a mapping of its keys, got {values!r}")
        tree = plain(values or {})
        check(cls, tree)
        return _build(cls, tree)

    @classmethod
    def coerce(cls: type[S], values: S | Mapping[str, Any]) -> S:
        """``values`` if it is already this section, else :meth:`from_dict` of it."""
        return values if isinstance(values, cls) else cls.from_dict(values)


def plain(value: Any) -> Any:
    """A deep copy of ``value`` with every mapping a ``dict`` and every sequence a ``list``."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return copy.deepcopy(value)


def _build(kind: type[S], tree: dict[str, Any]) -> S:
    return kind(**{k.name: _build(k.section, tree[k.name]) if k.section else tree[k.name] for k in keys_of(kind)})


def valid_keys(kind: type[Section]) -> list[str]:
    """Every dotted key of ``kind`` (sections, then their keys, depth first), then the known keys
    of its free-form mappings (:attr:`Rule.keys`)."""
    fixed: list[str] = []
    known: list[str] = []

    def walk(current: type[Section], prefix: str) -> None:
        for key in keys_of(current):
            fixed.append(prefix + key.name)
            if key.section:
                walk(key.section, f"{prefix}{key.name}.")
            known.extend(f"{prefix}{key.name}.{name}" for name in key.rule.keys)

    walk(kind, f"{kind.path}." if kind.path else "")
    return fixed + known


def leaves(kind: type[Section], tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Key, Any]]:
    """``(dotted key, field, value)`` of every value of ``tree`` (nested sections walked), in order."""
    for key in keys_of(kind):
        if key.section:
            yield from leaves(key.section, tree[key.name], f"{prefix}{key.name}.")
        else:
            yield prefix + key.name, key, tree[key.name]


def check(kind: type[Section], tree: dict[str, Any]) -> None:
    """Check the plain mapping ``tree`` against ``kind`` in place: first its shape (unknown keys,
    mappings where a value belongs; missing keys filled in with their defaults), then every value
    against its kind and rule, then the rules' ``check`` functions (those of the free-form mappings
    first), each in declaration order. The first problem found is raised."""
    prefix = f"{kind.path}." if kind.path else ""
    _check_shape(kind, tree, prefix, valid_keys(kind))
    values = list(leaves(kind, tree, prefix))
    for path, key, value in values:
        if not (value is None and key.optional) and not (_has_kind(value, key.kind) and key.rule.test(value)):
            raise ConfigError(f"{path} must be {key.rule.what}, got {_shown(value)}{_hint(path, value, key)}")
    for _, key, value in sorted(values, key=lambda item: item[1].kind is not dict):  # free-form mappings first
        if key.rule.check is not None and value is not None:
            key.rule.check(value)


def _check_shape(kind: type[Section], tree: dict[str, Any], prefix: str, valid: list[str]) -> None:
    names = [key.name for key in keys_of(kind)]
    for name in tree:
        if name not in names:
            raise UnknownKeyError.named(prefix + name, valid)
    for key in keys_of(kind):
        path = prefix + key.name
        if key.name not in tree:
            tree[key.name] = copy.deepcopy(key.default)
        elif key.section or key.kind is dict:
            if not isinstance(tree[key.name], dict):
                raise ConfigError(f"config key {path!r} must be a mapping, got {tree[key.name]!r}")
            if key.section:
                _check_shape(key.section, tree[key.name], path + ".", valid)
        elif isinstance(tree[key.name], dict):
            raise ConfigError(
                f"config key {path!r} takes a single value, not the mapping {tree[key.name]!r} "
                f"(e.g. --set {path}={key.default!r})"
            )


def _has_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def _shown(value: Any) -> str:
    return f"the string {value!r}" if isinstance(value, str) else repr(value)


def _hint(path: str, value: Any, key: Key) -> str:
    """The fix: unquote a quoted number, or an example of a valid value (the default)."""
    if isinstance(value, str) and key.kind in (int, float):
        try:
            number = float(value.strip("'\" "))
        except ValueError:
            pass
        else:
            shown = int(number) if key.kind is int and number.is_integer() else number
            return f" (a quoted number: write it without quotes, {path}: {shown})"
    if key.default is None or key.default == value:
        return ""
    return f" (e.g. --set {path}={_yaml(key.default)})"


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)
