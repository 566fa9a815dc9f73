"""Imports only point down: every nptface module imports only the layers its own layer may use.

The house (../shared/DESIGN.md): ``core`` knows nothing of the others; ``server.training`` and
``client`` build on ``core``; ``server.federation`` on ``core`` and the client's ``protocol``;
``simulation`` wires server and client and owns every test harness; ``edge_export`` takes a run
directory and ``core``'s model; ``on_device`` reads bundles; the quickstart and the CLI sit on top.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nptface"

# layer -> the module prefixes it may import (its own prefix is always allowed)
ALLOWED: dict[str, tuple[str, ...]] = {
    "nptface.core": (),
    "nptface.server.training": ("nptface.core",),
    "nptface.server.federation": ("nptface.core", "nptface.client.protocol"),
    "nptface.client": ("nptface.core",),
    "nptface.simulation": ("nptface.core", "nptface.server", "nptface.client"),
    "nptface.edge_export": ("nptface.core",),
    "nptface.on_device": ("nptface.core", "nptface.edge_export.bundle", "nptface.edge_export.runtimes"),
    "nptface.quickstart": (
        "nptface.core",
        "nptface.server",
        "nptface.client",
        "nptface.simulation",
        "nptface.edge_export",
        "nptface.on_device",
    ),
    "nptface.cli": ("nptface",),
    "nptface": (),  # the package's own __init__
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    return max((layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")), key=len)


def _imports(path: Path, module: str) -> list[tuple[int, tuple[str, ...]]]:
    """(line, candidates) per imported name; ``from a import b`` may name module ``a.b`` or a name in ``a``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, tuple[str, ...]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, (alias.name,)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, (base, f"{base}.{alias.name}")) for alias in node.names]
    return [(line, names) for line, names in found if names[0] == "nptface" or names[0].startswith("nptface.")]


def _is_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    return name == "nptface" or any(name == ok or name.startswith(ok + ".") for ok in allowed)


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_module_imports_only_point_down(path: Path) -> None:
    module = _module_name(path)
    layer = _layer(module)
    allowed = (layer, *ALLOWED[layer])
    wrong = [
        f"line {line}: {names[-1]}"
        for line, names in _imports(path, module)
        if not any(_is_allowed(name, allowed) for name in names)
    ]
    assert not wrong, f"{module} (layer {layer}) may import only {allowed}; found {wrong}"


def test_every_module_belongs_to_a_layer() -> None:
    assert all(_layer(_module_name(path)) for path in MODULES)
