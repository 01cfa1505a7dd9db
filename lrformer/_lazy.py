"""Lazy package attributes (PEP 562), so that ``import lrformer`` and ``lrformer --help`` load
neither PyTorch nor OpenCV: a package names what it exports, and each name's module is imported
the first time the name is used (as HF transformers and scientific-python's ``lazy_loader`` do).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def attach(
    package: str, exports: dict[str, str], submodules: tuple[str, ...] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        exports: public name → the module defining it, relative to ``package`` (e.g. ``".models"``);
            the value is looked up there at first use and then kept in the package.
        submodules: subpackages reachable as attributes before they are imported
            (``lrformer.models.factory`` after a bare ``import lrformer``).

    Usage, in a package's ``__init__.py``: ``__getattr__, __dir__ = attach(__name__, {...})``; list
    the same names in ``__all__`` (and import them under ``TYPE_CHECKING`` for type checkers).
    """

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)  # later uses do not come here
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports) | set(submodules))

    return __getattr__, __dir__
