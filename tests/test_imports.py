"""The project's own imports form no circle: each module can be read, and loaded, after the modules it uses."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("shared", "vanilla")  # imported as packages
# not packages: their modules import the ones beside them by bare name
SCRIPT_FOLDERS = ("fabric", "lightning", "hf_trainer")


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    return ".".join(relative.parts)


def project_modules() -> dict[str, Path]:
    paths = [p for folder in (*PACKAGES, *SCRIPT_FOLDERS) for p in sorted((REPO / folder).glob("*.py"))]
    return {module_name(p): p for p in paths if p.name != "__init__.py"}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, at the top or inside a function."""
    folder = path.parent.name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if folder in SCRIPT_FOLDERS and f"{folder}.{target}" in modules:
                target = f"{folder}.{target}"  # a module beside this one
            if target in modules and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        trail.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_projects_imports_form_no_circle():
    modules = project_modules()
    assert {"shared.errors", "shared.run_dir", "vanilla.train", "lightning.train", "fabric.train"} <= set(modules)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert "shared.errors" in graph["shared.run_dir"]  # the graph sees imports at all
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
