"""Requests in words, end to end with the real embedded planner model: `orrery run "..."`
against `orrery serve` with two `orrery device` processes on 127.0.0.1, and `orrery run
"..."` with the embedded orchestrator and this machine as the device."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.models.embedded import default_model_entry
from tests.e2e.processes import orrery, served_fleet

pytestmark = pytest.mark.slow

TIMEOUT = 300
REQUEST = "collect disk usage from every linux device and write a summary on laptop"


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """`orrery serve` (with its planner) and devices `laptop` and `nas` (label linux)."""
    default_model_entry()  # fail clearly, not by timeout, when the model is not installed
    root = tmp_path_factory.mktemp("planned")
    with served_fleet(root, ("laptop", "nas"), "--labels", "linux") as (home, control, _):
        yield home, control


def test_a_request_in_words_is_planned_run_and_completed_on_the_server(
    fleet: tuple[Path, str],
) -> None:
    home, control = fleet
    result = subprocess.run(
        orrery(home, "run", "--server", control, "--json", REQUEST),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    events = events_of(result.stdout)
    kinds = [event["type"] for event in events]
    assert "constellation.submitted" in kinds, result.stderr
    assert kinds[-1] == "constellation.finished", result.stderr
    finished = events[-1]
    started = {event["star_id"] for event in events if event["type"] == "star.started"}
    assert started, "no star ran"
    devices = {event["device"] for event in events if event["type"] == "star.started"}
    assert devices <= {"laptop", "nas"}
    assert result.returncode == (0 if finished["status"] == "succeeded" else 1), result.stderr
    # The plan, its rationale and its run are recorded: `orrery show` finds them.
    shown = subprocess.run(
        orrery(home, "show", finished["constellation_id"], "--json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    snapshot = json.loads(shown.stdout)
    assert snapshot["rationale"]
    assert snapshot["name"] == REQUEST
    assert {star["id"] for star in snapshot["stars"]} >= started


def test_a_request_in_words_runs_locally_without_a_server(tmp_path: Path) -> None:
    default_model_entry()
    result = subprocess.run(
        orrery(tmp_path / "home", "run", "--json", "list the files in the workspace"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    events = events_of(result.stdout)
    assert events, result.stderr
    assert events[-1]["type"] == "constellation.finished", result.stderr
    assert any(event["type"] == "star.finished" for event in events)
    assert result.returncode == (0 if events[-1]["status"] == "succeeded" else 1), result.stderr
