"""The planner evaluation's execution mode: plans run on in-process devices named as the
case's fleet, in seeded workspaces, with bubblewrap confinement (bench/eval_runs.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.constellation.model import PlanSpec
from agents.planner.evaluation import EvalCase, EvalDevice

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from eval_runs import run_plan, seed

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")

FLEET = [
    EvalDevice(name="laptop", platform="linux", tools=("shell.run", "fs.write", "fs.read")),
    EvalDevice(name="nas", platform="linux", tools=("fs.read", "artifact.put")),
]
REQUEST = "Read config.ini on the nas and write it into notes/copy.txt on the laptop"


def case() -> EvalCase:
    return EvalCase.model_validate(
        {
            "id": "copy-config",
            "category": "files",
            "fleet": "home",
            "request": REQUEST,
            "expected": {"stars": [{"id": "a", "tool": "fs.read"}]},
        }
    )


def spec(*stars: dict[str, Any]) -> PlanSpec:
    return PlanSpec.model_validate({"name": "p", "stars": list(stars)})


def test_the_workspace_is_seeded_with_what_the_request_mentions(tmp_path: Path) -> None:
    seed(tmp_path, "Read data/sales.csv and list the Backups folder and /var/log")
    assert (tmp_path / "data" / "sales.csv").read_text().startswith("name,value")
    assert (tmp_path / "Backups" / "sample.txt").is_file()
    assert not (tmp_path / "var").exists()


async def test_a_plan_that_does_what_was_asked_runs() -> None:
    outcome = await run_plan(
        case(),
        spec(
            {"id": "s1", "tool": "fs.read", "on": "nas", "args": {"path": "config.ini"}},
            {
                "id": "s2",
                "tool": "fs.write",
                "on": "laptop",
                "after": ["s1"],
                "args": {"path": "notes/copy.txt", "content": "${s1.output.content}"},
            },
            {
                "id": "s3",
                "tool": "shell.run",
                "on": "laptop",
                "after": ["s2"],
                "args": {"cmd": "cat notes/copy.txt"},
            },
        ),
        FLEET,
    )
    assert outcome.ok, outcome.reason


async def test_artifacts_move_between_the_in_process_devices() -> None:
    outcome = await run_plan(
        case(),
        spec(
            {"id": "s1", "tool": "artifact.put", "on": "nas", "args": {"path": "config.ini"}},
            {
                "id": "s2",
                "tool": "artifact.get",
                "on": "laptop",
                "after": ["s1"],
                "args": {"artifact": "${s1.output.artifact}", "path": "notes/copy.txt"},
            },
            {
                "id": "s3",
                "tool": "fs.read",
                "on": "laptop",
                "after": ["s2"],
                "args": {"path": "notes/copy.txt"},
            },
        ),
        [
            FLEET[0].model_copy(update={"tools": (*FLEET[0].tools, "artifact.get")}),
            FLEET[1],
        ],
    )
    assert outcome.ok, outcome.reason


async def test_a_plan_on_a_device_without_the_tool_or_naming_other_files_fails() -> None:
    missing_tool = await run_plan(
        case(),
        spec({"id": "s1", "tool": "shell.run", "on": "nas", "args": {"cmd": "true"}}),
        FLEET,
        seconds=20,
    )
    assert not missing_tool.ok
    invented = await run_plan(
        case(),
        spec(
            {
                "id": "s1",
                "tool": "fs.write",
                "on": "laptop",
                "args": {"path": "sizes.csv", "content": "x"},
            }
        ),
        FLEET,
    )
    assert not invented.ok
    assert "sizes.csv" in str(invented.reason)
