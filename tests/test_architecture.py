"""The package's layout holds: no import cycles (type-only imports included) and no module importing
from a layer above its own. docs/architecture.md describes the same layers."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "reconciler"

# Lowest first. A module may import from its own layer or any layer below it, never above.
LAYERS = [
    (
        "foundation",
        [
            "reconciler.errors",
            "reconciler.escape",
            "reconciler.secrets",
            "reconciler.yamlfile",
            "reconciler.schema",
            "reconciler.compiled",
            "reconciler.targets",
            "reconciler.config",
        ],
    ),
    ("state", ["reconciler.state"]),
    (
        "desired",
        [
            "reconciler.profiles",
            "reconciler.selection",
            "reconciler.plan",
            "reconciler.fmt",
            "reconciler.scaffold",
        ],
    ),
    ("kaleyra", ["reconciler.kaleyra"]),
    ("run", ["reconciler.apply", "reconciler.render", "reconciler.report", "reconciler.reassert"]),
    ("github", ["reconciler.github"]),
    ("cli", ["reconciler.cli", "reconciler.__main__", "reconciler.__init__"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every package module `name` imports, anywhere in the file (functions and TYPE_CHECKING too)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            # A package's own __init__ is not a dependency of its modules (Python runs it first anyway).
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def layer_of(name: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS here and to docs/architecture.md")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(graph()) == []


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_the_checks_see_cycles_and_upward_imports():
    """The walk itself: a cycle and an upward import among made-up modules are both found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert (
        layer_of("reconciler.cli.apply") > layer_of("reconciler.apply") > layer_of("reconciler.state.local")
    )


def test_type_only_and_function_level_imports_count(tmp_path):
    module = tmp_path / "reconciler" / "low.py"
    module.parent.mkdir()
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high import X\n"
        "def f():\n    from . import other\n"
    )
    known = {"reconciler.low", "reconciler.high", "reconciler.other"}
    assert imports_of("reconciler.low", module, known) == {"reconciler.high", "reconciler.other"}
