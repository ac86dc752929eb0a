"""Layers point down: the import directions docs/design.md's table promises, read from
the source (runtime imports only: `if TYPE_CHECKING:` blocks and imports inside
functions are not edges)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "xpufleet"
#: standalone scripts run on nodes or in the lab's stand-in: they import no xpufleet
NOT_SCANNED = {"standin", "remote"}
#: the bottom: may import only each other
FOUNDATION = {
    "errors", "host", "variables", "shell", "config", "results", "nodeset", "runbooks",
    "patterns", "sizing", "nodestate", "requirements",
}  # fmt: skip
#: what facts and checks (pure: facts in, results out) must never reach up to
ABOVE_FACTS = {"launch", "provision", "bench", "build", "cli", "doctor", "stage", "lab"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """xpufleet modules (or names in them) `path` imports when it is imported."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module or ""]).strip(".") if node.level else ""
                target = target or (node.module or "")
                if node.module is None:
                    found.update(f"{target}.{alias.name}" for alias in node.names)
                else:
                    found.add(target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for part in ("body", "orelse", "finalbody"):
                    visit(getattr(node, part, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return {name for name in found if name == "xpufleet" or name.startswith("xpufleet.")}


def graph() -> dict[str, set[str]]:
    """module -> the xpufleet modules it imports at import time."""
    files = [p for p in PACKAGE.rglob("*.py") if not NOT_SCANNED & set(p.parts)]
    modules = {module_name(p): runtime_imports(p) for p in files}

    def resolve(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    return {m: {resolve(t) for t in imports} - {m} for m, imports in modules.items()}


GRAPH = graph()


def part(module: str) -> str:
    """`xpufleet.facts.probe` -> `facts`; `xpufleet.sizing` -> `sizing`."""
    return module.split(".")[1] if "." in module else module


def test_the_graph_is_read() -> None:
    assert "xpufleet.launch.plan" in GRAPH["xpufleet.launch.runner"]
    assert "xpufleet.sizing" in GRAPH["xpufleet.checks.cluster"]


@pytest.mark.parametrize("layer", ["facts", "checks"])
def test_facts_and_checks_import_nothing_above_them(layer: str) -> None:
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if part(m) == layer
        for t in targets
        if part(t) in ABOVE_FACTS
    )
    assert upward == []


def test_facts_never_import_checks() -> None:
    """Facts are gathered and parsed without knowing who judges them."""
    assert sorted(f"{m} -> {t}" for m, ts in GRAPH.items() if part(m) == "facts" for t in ts
                  if part(t) == "checks") == []  # fmt: skip


def test_check_areas_import_neither_the_runner_nor_doctor() -> None:
    """checks/<area>.py declare checks; only checks.node (the runner) collects the areas."""
    areas = [m for m in GRAPH if part(m) == "checks" and m not in ("xpufleet.checks.node",)]
    assert "xpufleet.checks.gpu" in areas and "xpufleet.checks.python_stack" in areas
    upward = sorted(f"{m} -> {t}" for m in areas for t in GRAPH[m]
                    if t in ("xpufleet.checks.node", "xpufleet.doctor"))  # fmt: skip
    assert upward == []
    assert {"xpufleet.checks.gpu", "xpufleet.checks.kernel"} <= GRAPH["xpufleet.checks.node"]


def test_the_foundation_imports_only_the_foundation() -> None:
    upward = sorted(
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if part(m) in FOUNDATION
        for t in targets
        if part(t) not in FOUNDATION
    )
    assert upward == []


def test_only_the_command_line_imports_the_command_line() -> None:
    assert sorted(m for m, ts in GRAPH.items() if part(m) != "cli" and any(
        part(t) == "cli" for t in ts)) == []  # fmt: skip


def test_no_import_circle() -> None:
    """Every strongly connected group of modules is one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in GRAPH.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert circles == []
