"""The house's boundaries, from the import graph of qf, qf_plugins and qf_arches (every import statement, those inside
functions included; ``if TYPE_CHECKING:`` blocks excluded): no cycles, and the core imports no plugin and no app."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGES = ("qf", "qf_plugins", "qf_arches")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        root = Path(importlib.util.find_spec(package).submodule_search_locations[0])
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of our packages that ``name`` imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")
                parent = parent if is_package else parent[:-1]
                parent = parent[:len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m.split(".")[0] in PACKAGES and m in modules and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_import_cycles(graph):
    visiting, done, cycles = [], set(), []

    def walk(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node):] + [node])
            return
        visiting.append(node)
        for nxt in sorted(graph[node]):
            walk(nxt)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        walk(node)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_core_imports_no_plugin_and_no_app(graph):
    # qf.__main__ is `python -m qf`: the app's entry point
    core = {name for name in graph if name.split(".")[0] == "qf" and not name.startswith(("qf.app", "qf.__main__"))}
    bad = sorted((name, dep) for name in core for dep in graph[name]
                 if dep.split(".")[0] != "qf" or dep.startswith("qf.app"))
    assert bad == []


def test_plugins_use_only_public_core_modules(graph):
    """Plugin packages import qf's public modules, never a private one (``qf._x``), and never each other's."""
    bad = sorted((name, dep) for name in graph if name.split(".")[0] in ("qf_plugins", "qf_arches")
                 for dep in graph[name] if dep.startswith("qf.") and any(p.startswith("_") for p in dep.split(".")))
    assert bad == []
    crossing = sorted((name, dep) for name in graph if name.startswith("qf_plugins")
                      for dep in graph[name] if dep.startswith("qf_arches"))
    crossing += sorted((name, dep) for name in graph if name.startswith("qf_arches")
                       for dep in graph[name] if dep.startswith("qf_plugins"))
    assert crossing == []


def test_the_graph_sees_lazy_imports(graph):
    """The walk reads imports inside functions too (kernel modules are imported lazily by the codecs)."""
    assert "qf_plugins.quants._legacy_kernels" in graph["qf_plugins.quants.legacy"]
    assert "qf.kernels" in graph["qf.codec"]
