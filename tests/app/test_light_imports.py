"""The light commands start fast: `orrery --help`, and `orrery run --json --server URL`
(all the way through connecting, submitting and streaming), import neither Qt, nor the
model code (llama_cpp, gguf, numpy), nor chromadb. Checked with `python -X importtime`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memory import Store
from tests.served import Served

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("PySide6", "llama_cpp", "chromadb", "gguf", "numpy")

PLAN = "name: nothing-to-do\nstars:\n  - id: a\n    on: {labels: [absent]}\n    tool: sys.info\n"


def imported_modules(*args: str, home: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `python -X importtime -m app.cli ARGS`; the top-level packages it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app.cli", "--data-dir", str(home), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    modules = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name.split(".")[0])
    return result, modules


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    result, modules = imported_modules("--help", home=tmp_path)
    assert result.returncode == 0
    assert "rich" not in modules  # not even the display
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


@pytest.fixture
async def orchestra(tmp_path: Path) -> AsyncIterator[Served]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with Served(store, tmp_path) as running:
            yield running


async def test_run_json_against_a_server_imports_nothing_heavy(
    orchestra: Served, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)

    def run() -> tuple[subprocess.CompletedProcess[str], set[str]]:
        return imported_modules(
            "run", "--json", "--server", orchestra.control_url, str(plan), home=tmp_path
        )

    result, modules = await asyncio.to_thread(run)
    # It really talked to the server: the star found no device (exit 3) after streaming.
    assert result.returncode == 3, result.stderr[-2000:]
    assert '"constellation.finished"' in result.stdout
    assert "websockets" in modules
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
