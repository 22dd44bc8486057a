"""Task memory end to end, with real processes on 127.0.0.1: `orrery serve` (with the
embedded planner model) and two `orrery device`s; `orrery run`, `orrery show` and
`orrery memory` as further processes. The same request planned twice: the first run
succeeds, the second plan comes from memory (its rationale says so) and is at least as
good. And reading the memory from other processes while the server writes it never
meets a locked database; a database another process locks is one clear line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.planner.evaluation import edge_f1, node_f1
from app.client import SyncOrrery
from tests.agents.models.embedded import default_model_entry
from tests.e2e.processes import (
    enroll,
    orrery,
    served_fleet,
    start_device,
    start_serve,
    stop,
    wait_for_devices,
)

pytestmark = pytest.mark.slow

TIMEOUT = 300
REQUEST = "write hello into note.txt on the laptop"
EXPECTED_TOOLS = ["fs.write"]  # one write, on the laptop
EXPECTED_EDGES: list[tuple[str, str]] = []


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def run(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """`orrery serve` (planner on) and devices `laptop` and `nas` (label linux)."""
    default_model_entry()  # fail clearly, not by timeout, when the model is not installed
    root = tmp_path_factory.mktemp("memory")
    with served_fleet(root, ("laptop", "nas"), "--labels", "linux") as (home, control, _):
        yield home, control


def planned_run(home: Path, control: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`orrery run REQUEST` on the server: its last event, and `orrery show` of it."""
    result = run(*orrery(home, "run", "--server", control, "--json", REQUEST))
    events = events_of(result.stdout)
    assert events, result.stderr
    finished = events[-1]
    assert finished["type"] == "constellation.finished", result.stderr
    shown = run(*orrery(home, "show", finished["constellation_id"], "--json", "--server", control))
    assert shown.returncode == 0, shown.stderr
    return finished, json.loads(shown.stdout)


def quality(snapshot: dict[str, Any]) -> tuple[float, float]:
    stars = {star["id"]: star for star in snapshot["stars"]}
    tools = [star["tool"] or "agent.do" for star in stars.values()]
    edges = [(stars[line["from"]]["tool"], stars[line["to"]]["tool"]) for line in snapshot["lines"]]
    return node_f1(EXPECTED_TOOLS, tools), edge_f1(EXPECTED_EDGES, edges)


def test_the_same_request_is_planned_from_memory_the_second_time(
    fleet: tuple[Path, str],
) -> None:
    home, control = fleet
    first, first_plan = planned_run(home, control)
    assert first["status"] == "succeeded", first
    assert not first_plan["rationale"].startswith("From memory")  # the memory was empty

    second, second_plan = planned_run(home, control)
    assert second["status"] == "succeeded", second
    assert second_plan["rationale"].startswith("From memory: reused the plan that succeeded for r-")
    assert quality(second_plan) >= quality(first_plan)
    assert [(s["tool"], s["on"]) for s in second_plan["stars"]] == [
        (s["tool"], s["on"]) for s in first_plan["stars"]
    ]

    # The memory shows both: the second request names the first as its source.
    searched = run(*orrery(home, "memory", "search", REQUEST, "--json", "--server", control))
    assert searched.returncode == 0, searched.stderr
    hits = [json.loads(line) for line in searched.stdout.splitlines()]
    assert hits[0]["text"] == REQUEST
    assert hits[0]["status"] == "succeeded"
    assert hits[0]["similarity"] > 0.95
    tree_of = run(*orrery(home, "memory", "show", second["constellation_id"], "--json"))
    assert tree_of.returncode == 0, tree_of.stderr  # in process, beside the running server
    tree = json.loads(tree_of.stdout)
    first_tree = json.loads(
        run(*orrery(home, "memory", "show", first["constellation_id"], "--json")).stdout
    )
    assert tree["summary"]["from_memory"] == first_tree["request"]
    assert {node["kind"] for node in tree["nodes"]} == {
        "request",
        "constellation",
        "star",
        "attempt",
    }


PLAN = """
name: note-{index}
description: keep note number {index}
stars:
  - id: write
    tool: fs.write
    args: {{path: "note-{index}.txt", content: "note {index}"}}
  - id: read
    after: [write]
    tool: fs.read
    args: {{path: "note-{index}.txt"}}
"""


@pytest.fixture
def busy_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """`orrery serve` without a planner and one device."""
    home = tmp_path / "orchestrator"
    processes: list[subprocess.Popen[str]] = []
    try:
        token = enroll(home, "box")
        serve, aip, control = start_serve(home, 0, "--no-planner")
        processes.append(serve)
        processes.append(start_device(tmp_path / "box", aip, "box", token))
        wait_for_devices(control, home, ["box"])
        yield home, control
    finally:
        stop(reversed(processes))


def test_reading_the_memory_while_the_server_writes_meets_no_lock(
    busy_server: tuple[Path, str],
) -> None:
    home, control = busy_server
    runs = 12
    failures: list[str] = []

    def write() -> None:  # the server records runs and indexes them for recall
        with SyncOrrery(control, data_dir=home) as client:
            for index in range(runs):
                result = client.submit(plan_text=PLAN.format(index=index)).wait(timeout=60)
                if result.status != "succeeded":
                    failures.append(f"run {index}: {result.status} {result.reason}")

    writer = threading.Thread(target=write)
    writer.start()
    readers = 0
    try:
        while writer.is_alive() or readers < 6:
            for args in (
                ("memory", "search", "keep a note", "--json"),  # in process: reads the files
                ("history", "--limit", "5"),
                ("memory", "search", "keep a note", "--json", "--server", control),
            ):
                result = run(*orrery(home, *args), timeout=120)
                readers += 1
                assert result.returncode == 0, (args, result.stderr)
                assert "locked" not in result.stderr, (args, result.stderr)
    finally:
        writer.join(timeout=300)
    assert not failures
    assert readers >= 6
    final = run(*orrery(home, "memory", "search", "keep note number 7", "--json"))
    hits = [json.loads(line) for line in final.stdout.splitlines()]
    assert hits, final.stderr
    assert hits[0]["text"].startswith("note-")


def test_a_locked_database_is_one_clear_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(*orrery(home, "history")).returncode == 0  # creates the database
    holder = sqlite3.connect(home / "orrery.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        for args in (("history",), ("memory", "search", "anything")):
            result = run(*orrery(home, *args), timeout=60)
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith("orrery: error: database ")
            assert "is locked by another process" in lines[0]
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def read_only_mount_works(folder: Path) -> bool:
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{folder}' '{folder}'"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def test_a_read_only_data_dir_is_one_clear_line(tmp_path: Path) -> None:
    """The data dir on a read-only mount (a private mount namespace: root could write
    through file modes)."""
    home = tmp_path / "home"
    assert run(*orrery(home, "history")).returncode == 0  # creates the database
    if not read_only_mount_works(home):
        pytest.skip("this machine cannot make a private read-only mount (unshare -m)")
    for args in (("history",), ("memory", "search", "anything")):
        command = " ".join(f"'{part}'" for part in orrery(home, *args))
        result = subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{home}' '{home}' && {command}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"orrery: error: database {home / 'orrery.db'} is read-only")
        assert "--data-dir" in lines[0]
