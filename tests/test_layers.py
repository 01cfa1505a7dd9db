"""The package's layers point one way: every import (also those inside functions) goes to a lower
layer, and no chain of imports comes back to where it started."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lrformer"

LAYERS = {
    "foundation": (
        "lrformer.errors", "lrformer.utils", "lrformer.files", "lrformer.devices", "lrformer._lazy", "lrformer.palettes",
        "lrformer.locking",
    ),
    "models": ("lrformer.models",),
    "image": ("lrformer.image",),
    "inference": ("lrformer.inference",),
    "data": ("lrformer.data",),
    "evaluation": ("lrformer.evaluation",),
    "tools": ("lrformer.flops", "lrformer.benchmarking"),
    "deploy": ("lrformer.deploy", "lrformer.export"),
    "engine": ("lrformer.engine",),
    "serving": ("lrformer.serving",),
    "api": ("lrformer",),
    "cli": ("lrformer.cli", "lrformer.__main__"),
}
"""Module prefixes of each layer (the longest matching prefix decides)."""

ALLOWED = {
    "foundation": set(),
    "models": {"foundation"},
    "image": {"foundation"},
    "inference": {"models", "image", "foundation"},
    "data": {"image", "foundation"},
    "evaluation": {"data", "inference", "image", "foundation"},
    "tools": {"models", "inference", "image", "foundation"},
    "deploy": {"evaluation", "data", "inference", "image", "models", "tools", "foundation"},
    "engine": {"evaluation", "data", "inference", "image", "models", "tools", "foundation"},
    "serving": {"inference", "image", "foundation"},
    "api": {"deploy", "tools", "inference", "image", "models", "foundation"},
    "cli": set(LAYERS) - {"cli"},
}
"""Which layers each layer may import (besides itself): cli → engine → evaluation → data → image ← inference → models."""


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (``from . import x`` counts as ``x``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "lrformer" or t.startswith("lrformer."))
    return found


def layer_of(name: str) -> str:
    best = max(
        ((prefix, layer) for layer, prefixes in LAYERS.items() for prefix in prefixes
         if name == prefix or name.startswith(prefix + ".")),
        key=lambda item: len(item[0]),
    )  # fmt: skip
    return best[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def test_every_import_points_to_a_lower_layer(graph):
    upward = [
        f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})"
        for name, targets in graph.items()
        for target in targets
        if layer_of(target) != layer_of(name) and layer_of(target) not in ALLOWED[layer_of(name)]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle(graph):
    cycles = []

    def visit(name: str, chain: list[str], done: set[str]) -> None:
        for target in sorted(graph.get(name, ())):
            if target in chain:
                cycles.append(" → ".join(chain[chain.index(target) :] + [target]))
            elif target not in done:
                visit(target, chain + [target], done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert not cycles, "\n".join(cycles)


def test_the_walker_sees_nested_and_relative_imports(graph):
    """The two checks above only mean something if the walker finds imports inside functions and
    resolves relative ones: the CLI imports its commands' dependencies inside ``run``."""
    assert "lrformer.engine.trainer" in graph["lrformer.cli.demo"]  # imported inside run()
    assert "lrformer.engine.training_checkpoints" in graph["lrformer.engine.trainer"]  # from . import training_checkpoints
    assert layer_of("lrformer.data.datasets") == "data" and layer_of("lrformer") == "api"


def test_a_package_without_init_is_not_missed():
    folders = {p.parent for p in PACKAGE.rglob("*.py")}
    assert all((folder / "__init__.py").is_file() for folder in folders)
