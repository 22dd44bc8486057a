"""The dependency arrows of DESIGN.md, read from the source with `ast` and checked.

Every import counts: at module level, deferred inside a function, under `if TYPE_CHECKING:`,
and `importlib.import_module("...")` / `__import__("...")` with a literal name. Relative
imports are resolved against the importing module's package. `from pkg import name` imports
the module `pkg.name` when there is one, else `pkg`.

The rules are two small tables: `MAY_IMPORT` (what each package may import of ours) and
`MAY_IMPORT_QT` (who may import a Qt binding). `find_cycles` looks for circles in the
module-level graph of the same imports, plus the package `__init__`s that an import runs
on the way (see `import_graph`).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

PACKAGES = ("app", "agents", "protocol", "memory", "devices")

# package -> the modules of ours it may import (a module covers its submodules).
MAY_IMPORT: Mapping[str, tuple[str, ...]] = {
    "app": ("app", "agents", "protocol", "memory", "devices"),
    "agents": ("agents", "protocol", "memory", "devices.registry"),
    "devices": ("devices", "protocol"),
    "protocol": ("protocol",),
    "memory": ("memory",),
}

QT = ("PySide6", "PySide2", "PyQt6", "PyQt5", "shiboken6", "shiboken2", "qasync", "qtpy")
"""Top-level names of Qt bindings and the glue around them."""
MAY_IMPORT_QT = ("app",)

_DYNAMIC_IMPORTERS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Import:
    """One import statement (or one name of it), resolved to an absolute module name."""

    source: str
    target: str
    path: Path
    line: int
    kind: str = "top"
    """top (runs at import time), deferred (inside a function), type-checking, dynamic."""

    def __str__(self) -> str:
        how = "" if self.kind == "top" else f" ({self.kind})"
        return f"{self.path}:{self.line}: {self.source} imports {self.target}{how}"


@dataclass(frozen=True)
class Violation:
    imported: Import
    rule: str

    def __str__(self) -> str:
        return f"{self.imported}: {self.rule}"


# ------------------------------------------------------------------ reading


def find_modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of `packages` under `root`, by dotted name (a package is its __init__)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Reader(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, modules: Mapping[str, Path]) -> None:
        self.module = module
        self.path = path
        self.modules = modules
        is_package = path.name == "__init__.py"
        self.package = module if is_package else module.rpartition(".")[0]
        self.imports: list[Import] = []
        self._functions = 0
        self._type_checking = 0

    def _kind(self) -> str:
        if self._type_checking:
            return "type-checking"
        return "deferred" if self._functions else "top"

    def _add(self, target: str, node: ast.AST, kind: str | None = None) -> None:
        line = getattr(node, "lineno", 0)
        self.imports.append(Import(self.module, target, self.path, line, kind or self._kind()))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking += 1
        for statement in node.body:
            self.visit(statement)
        self._type_checking -= 1
        for statement in node.orelse:
            self.visit(statement)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._resolve(node)
        # In order, once each: `from a import b, c` may name the module `a` twice.
        targets: dict[str, None] = {}
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets[submodule if submodule in self.modules else base] = None
        for target in targets:
            self._add(target, node)

    def _resolve(self, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        parts = self.package.split(".") if self.package else []
        if node.level - 1 > len(parts) - 1:
            raise ValueError(
                f"{self.path}:{node.lineno}: a relative import goes above the top-level package"
            )
        parts = parts[: len(parts) - (node.level - 1)]
        if node.module:
            parts.append(node.module)
        return ".".join(parts)

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.attr if isinstance(node.func, ast.Attribute) else None
        if isinstance(node.func, ast.Name):
            name = node.func.id
        if (
            name in _DYNAMIC_IMPORTERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self._add(node.args[0].value, node, "dynamic")
        self.generic_visit(node)


def read_imports(root: Path, packages: Iterable[str] = PACKAGES) -> list[Import]:
    """Every import of every module of `packages` under `root`."""
    modules = find_modules(root, packages)
    imports: list[Import] = []
    for module, path in modules.items():
        reader = _Reader(module, path.relative_to(root), modules)
        reader.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        imports.extend(reader.imports)
    return imports


# ------------------------------------------------------------------ checking


def _within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _top(module: str) -> str:
    return module.partition(".")[0]


def check_layers(imports: Iterable[Import]) -> list[Violation]:
    """The imports that break `MAY_IMPORT` or `MAY_IMPORT_QT`."""
    violations = []
    for imported in imports:
        source, target = _top(imported.source), imported.target
        if _top(target) in MAY_IMPORT and not _within(target, MAY_IMPORT[source]):
            allowed = ", ".join(MAY_IMPORT[source])
            violations.append(Violation(imported, f"{source} may import only {allowed}"))
        elif _top(target) in QT and source not in MAY_IMPORT_QT:
            violations.append(Violation(imported, f"only {', '.join(MAY_IMPORT_QT)} may use Qt"))
    return violations


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def import_graph(imports: Iterable[Import]) -> nx.DiGraph:
    """Module -> module for every import between two modules of ours.

    Importing `a.b.c` runs the `__init__` of `a` and `a.b` first, so the graph has an
    "implicit" edge to each of those packages too, unless the importer is inside it
    (then the package is already being initialised and the edge does nothing). Each edge
    keeps the first `Import` that made it, under the key "via".
    """
    graph = nx.DiGraph()
    for imported in imports:
        graph.add_node(imported.source)
        target = imported.target
        if _top(target) not in MAY_IMPORT:
            continue
        outer = set(_ancestors(imported.source)) | {imported.source}
        for package in _ancestors(target):
            if package not in outer and not graph.has_edge(imported.source, package):
                implicit = Import(
                    imported.source, package, imported.path, imported.line, "implicit"
                )
                graph.add_edge(imported.source, package, via=implicit)
        if target != imported.source and not graph.has_edge(imported.source, target):
            graph.add_edge(imported.source, target, via=imported)
    return graph


@dataclass(frozen=True)
class Cycle:
    """A circle of imports: `edges[i]` imports `edges[i + 1].source`, the last the first."""

    edges: tuple[Import, ...]

    @property
    def modules(self) -> list[str]:
        return [edge.source for edge in self.edges]

    def __str__(self) -> str:
        steps = [
            f"{edge.source} -> {edge.target} ({edge.kind}, {edge.path}:{edge.line})"
            for edge in self.edges
        ]
        return "; ".join(steps)


def find_cycles(imports: Iterable[Import], *, limit: int = 50) -> list[Cycle]:
    """Circles of imports, shortest first, each starting at its smallest module.

    Every strongly connected component of more than one module holds at least one circle;
    at most `limit` circles are listed per component (the tangles in one can be many).
    """
    graph = import_graph(imports)
    cycles: list[Cycle] = []
    for component in nx.strongly_connected_components(graph):
        if len(component) < 2:
            continue
        for found in itertools.islice(nx.simple_cycles(graph.subgraph(component)), limit):
            start = found.index(min(found))
            path = found[start:] + found[:start]
            edges = zip(path, [*path[1:], path[0]], strict=True)
            cycles.append(Cycle(tuple(graph.edges[a, b]["via"] for a, b in edges)))
    return sorted(cycles, key=lambda cycle: (len(cycle.edges), cycle.modules))
