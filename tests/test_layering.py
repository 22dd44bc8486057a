"""The packages keep DESIGN.md's dependency arrows and import nothing in a circle.

The first two tests read the real tree; the rest build small package trees in `tmp_path`
and show that the checker in `tests/layering.py` finds each kind of violation.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.layering import (
    PACKAGES,
    Import,
    check_layers,
    find_cycles,
    find_modules,
    read_imports,
)

ROOT = Path(__file__).resolve().parent.parent


def test_the_packages_keep_the_layers() -> None:
    imports = read_imports(ROOT)
    violations = check_layers(imports)
    assert not violations, "imports against DESIGN.md's arrows:\n" + "\n".join(map(str, violations))


def test_no_module_imports_another_in_a_circle() -> None:
    cycles = find_cycles(read_imports(ROOT))
    for cycle in cycles:
        print(" -> ".join([*cycle.modules, cycle.modules[0]]))
        print(f"    {cycle}")
    assert not cycles, f"{len(cycles)} import circle(s), printed above"


def test_the_checker_reads_the_real_tree() -> None:
    """So the two tests above cannot pass by reading nothing."""
    modules = find_modules(ROOT)
    assert {"devices.agent", "agents.orchestrator", "protocol.session", "app.cli"} <= set(modules)
    assert all(name.partition(".")[0] in PACKAGES for name in modules)
    imports = read_imports(ROOT)
    edges = {(i.source, i.target) for i in imports}
    assert ("agents.orchestrator", "devices.registry") in edges
    assert ("protocol.session", "protocol.messages") in edges


# ------------------------------------------------------------------ synthetic trees


def tree(root: Path, files: dict[str, str]) -> Path:
    """Every package of ours with an empty __init__, plus `files` (path -> source)."""
    for package in PACKAGES:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").touch()
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
    return root


def violations(root: Path) -> list[tuple[str, str, str]]:
    """(importer, imported, kind) of every layering violation."""
    return [
        (v.imported.source, v.imported.target, v.imported.kind)
        for v in check_layers(read_imports(root))
    ]


def circles(root: Path) -> list[list[str]]:
    return [cycle.modules for cycle in find_cycles(read_imports(root))]


CLEAN = {
    "protocol/messages.py": "import json\nfrom pydantic import BaseModel\n",
    "protocol/session.py": "from protocol.messages import BaseModel\nfrom . import messages\n",
    "memory/store.py": "import sqlite3\nfrom .errors import StoreError\n",
    "memory/errors.py": "class StoreError(Exception): ...\n",
    "devices/registry.py": "from pydantic import BaseModel\n",
    "devices/agent.py": "from protocol.session import x\nfrom devices.registry import y\n",
    "devices/tools/shell.py": "from ..registry import y\nfrom . import base\n",
    "devices/tools/base.py": "import asyncio\n",
    "agents/orchestrator.py": """
        from typing import TYPE_CHECKING
        from devices.registry import DeviceInfo
        from devices import registry
        from memory.store import Store
        from protocol import session
        if TYPE_CHECKING:
            from protocol.messages import Hello
        """,
    "app/gui.py": "from PySide6.QtWidgets import QWidget\nimport qasync\nfrom devices import agent",
    "app/cli.py": "from agents.orchestrator import run\nfrom app import gui\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = tree(tmp_path, CLEAN)
    assert len(read_imports(root)) >= 15
    assert violations(root) == []
    assert circles(root) == []


def test_a_device_module_importing_agents_is_reported(tmp_path: Path) -> None:
    root = tree(tmp_path, {**CLEAN, "devices/x.py": "from agents.y import z\n"})
    assert violations(root) == [("devices.x", "agents.y", "top")]


def test_a_deferred_import_inside_a_function_is_reported(tmp_path: Path) -> None:
    source = """
        import os

        async def probe() -> int:
            from agents.models.vram import read_free_vram
            return read_free_vram()

        class Agent:
            def hello(self) -> None:
                import app.cli
        """
    root = tree(tmp_path, {**CLEAN, "devices/agent.py": source})
    assert violations(root) == [
        ("devices.agent", "agents.models.vram", "deferred"),
        ("devices.agent", "app.cli", "deferred"),
    ]


def test_a_type_checking_import_is_reported(tmp_path: Path) -> None:
    source = """
        from __future__ import annotations
        import typing
        if typing.TYPE_CHECKING:
            from agents.models.manager import ModelManager
        else:
            from devices.registry import DeviceInfo
        """
    root = tree(tmp_path, {**CLEAN, "devices/tools/__init__.py": source})
    assert violations(root) == [("devices.tools", "agents.models.manager", "type-checking")]


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "agents/planner/__init__.py": "from .context import build\nfrom . import review\n",
        "agents/planner/context.py": "from ..orchestrator import run\nfrom .. import planner\n",
        "agents/planner/review.py": "from .context import build\n",
    }
    root = tree(tmp_path, files)
    found = {(i.source, i.target) for i in read_imports(root) if i.source.startswith("agents.p")}
    assert found == {
        ("agents.planner", "agents.planner.context"),
        ("agents.planner", "agents.planner.review"),
        ("agents.planner.context", "agents.orchestrator"),
        ("agents.planner.context", "agents.planner"),
        ("agents.planner.review", "agents.planner.context"),
    }


def test_a_relative_import_above_the_top_package_is_an_error(tmp_path: Path) -> None:
    root = tree(tmp_path, {**CLEAN, "agents/planner/context.py": "\nfrom ...devices import x\n"})
    with pytest.raises(ValueError, match=r"context.py:2: a relative import goes above"):
        read_imports(root)


def test_a_literal_import_module_call_is_reported(tmp_path: Path) -> None:
    source = "import importlib\n\ndef f():\n    return importlib.import_module('app.cli')\n"
    root = tree(tmp_path, {**CLEAN, "protocol/plugins.py": source})
    assert violations(root) == [("protocol.plugins", "app.cli", "dynamic")]


@pytest.mark.parametrize(
    ("importer", "source", "imported"),
    [
        ("protocol/x.py", "from memory.store import Store\n", "memory.store"),
        ("protocol/x.py", "import devices.agent\n", "devices.agent"),
        ("protocol/x.py", "from agents import orchestrator\n", "agents.orchestrator"),
        ("protocol/x.py", "import app\n", "app"),
        ("memory/x.py", "from protocol.messages import Hello\n", "protocol.messages"),
        ("memory/x.py", "from devices.registry import DeviceInfo\n", "devices.registry"),
        ("memory/x.py", "import agents.orchestrator as o\n", "agents.orchestrator"),
        ("agents/x.py", "from app.cli import main\n", "app.cli"),
        ("agents/x.py", "from devices.agent import DeviceAgent\n", "devices.agent"),
        ("agents/x.py", "from devices import agent\n", "devices.agent"),
        ("agents/x.py", "import devices\n", "devices"),
        ("devices/x.py", "from app import gui\n", "app.gui"),
    ],
)
def test_each_forbidden_arrow_is_reported(
    tmp_path: Path, importer: str, source: str, imported: str
) -> None:
    root = tree(tmp_path, {**CLEAN, importer: source})
    module = importer.removesuffix(".py").replace("/", ".")
    assert violations(root) == [(module, imported, "top")]


@pytest.mark.parametrize(
    "source",
    [
        "from PySide6.QtCore import QObject\n",
        "import qasync\n",
        "import shiboken6\n",
        "from PyQt6 import QtWidgets\n",
        "def show():\n    import PySide6.QtWidgets\n",
    ],
)
@pytest.mark.parametrize("package", ["agents", "devices", "protocol", "memory"])
def test_qt_outside_app_is_reported(tmp_path: Path, package: str, source: str) -> None:
    root = tree(tmp_path, {**CLEAN, f"{package}/view.py": source})
    ((module, target, _),) = violations(root)
    assert module == f"{package}.view"
    assert target.partition(".")[0] in {"PySide6", "qasync", "shiboken6", "PyQt6"}


def test_a_two_module_cycle_is_found(tmp_path: Path) -> None:
    files = {**CLEAN, "app/cli.py": "from app import fleet\n", "app/fleet.py": "import app.cli\n"}
    assert circles(tree(tmp_path, files)) == [["app.cli", "app.fleet"]]


def test_a_cycle_through_deferred_and_type_checking_imports_is_found(tmp_path: Path) -> None:
    files = {
        **CLEAN,
        "devices/a.py": "def f():\n    from devices import b\n",
        "devices/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from .c import C\n",
        "devices/c.py": "from .a import f\n",
    }
    (cycle,) = find_cycles(read_imports(tree(tmp_path, files)))
    assert cycle.modules == ["devices.a", "devices.b", "devices.c"]
    assert [edge.kind for edge in cycle.edges] == ["deferred", "type-checking", "top"]
    assert "devices.a -> devices.b (deferred, devices/a.py:2)" in str(cycle)


def test_a_cycle_through_a_package_init_is_found(tmp_path: Path) -> None:
    """`from devices.tools.errors import E` runs devices/tools/__init__.py first."""
    files = {
        **CLEAN,
        "devices/policy.py": "from devices.tools.errors import E\n",
        "devices/tools/__init__.py": "from devices.tools.base import Tool\n",
        "devices/tools/base.py": "from devices.policy import Policy\n",
        "devices/tools/errors.py": "class E(Exception): ...\n",
    }
    (cycle,) = find_cycles(read_imports(tree(tmp_path, files)))
    assert cycle.modules == ["devices.policy", "devices.tools", "devices.tools.base"]
    assert cycle.edges[0].kind == "implicit"


def test_a_module_importing_its_own_package_is_no_cycle(tmp_path: Path) -> None:
    """Inside devices.tools, devices/tools/__init__.py is already running: no edge to it."""
    files = {
        **CLEAN,
        "devices/tools/__init__.py": "from devices.tools.shell import Shell\n",
        "devices/tools/shell.py": "from devices.tools.base import Tool\n",
    }
    assert circles(tree(tmp_path, files)) == []


def test_an_import_names_file_and_line() -> None:
    found = Import("devices.x", "agents.y", Path("devices/x.py"), 3, "deferred")
    assert str(found) == "devices/x.py:3: devices.x imports agents.y (deferred)"
