"""`orrery run` as a user meets it: a real subprocess, real tools, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLANS = ROOT / "resources" / "plans"


def orrery(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORRERY_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
        check=False,
    )


def events_of(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def finished(events: list[dict[str, object]]) -> dict[str, str]:
    return {str(e["star_id"]): str(e["status"]) for e in events if e["type"] == "star.finished"}


def test_parallel_plan_succeeds_and_writes_its_report(tmp_path: Path) -> None:
    result = orrery("run", "--json", str(PLANS / "parallel-report.yaml"), home=tmp_path)
    assert result.returncode == 0, result.stderr
    events = events_of(result.stdout)
    statuses = finished(events)
    assert set(statuses.values()) == {"succeeded"}
    assert len(statuses) >= 4
    # The independent stars really ran side by side: all started before the first finished.
    order = [(e["type"], e.get("star_id")) for e in events]
    first_finish = next(i for i, (kind, _) in enumerate(order) if kind == "star.finished")
    started_before = {sid for kind, sid in order[:first_finish] if kind == "star.started"}
    assert len(started_before) >= 3
    written = list((tmp_path / "workspace").rglob("*"))
    assert any(p.is_file() and p.stat().st_size > 0 for p in written)
    assert events[-1]["type"] == "constellation.finished"
    assert events[-1]["status"] == "succeeded"


def test_failure_plan_runs_completion_line_and_exits_1_with_reason(tmp_path: Path) -> None:
    result = orrery("run", "--json", str(PLANS / "failure-cleanup.yaml"), home=tmp_path)
    assert result.returncode == 1
    statuses = finished(events_of(result.stdout))
    assert statuses["load_config"] == "failed"
    assert statuses["apply_config"] == "skipped"
    assert statuses["cleanup"] == "succeeded"
    assert statuses["report"] == "succeeded"
    stderr_lines = result.stderr.strip().splitlines()
    assert "load_config" in stderr_lines[-1]
    assert "failed" in stderr_lines[-1]
    assert "attempt 2/2" in stderr_lines[-1]
    workspace = tmp_path / "workspace"
    assert not (workspace / "failure-cleanup.lock").exists()  # cleanup ran
    assert "config.json" in (workspace / "failure-report.txt").read_text()


def test_condition_plan_takes_exactly_one_branch(tmp_path: Path) -> None:
    result = orrery("run", "--json", str(PLANS / "conditional-alert.yaml"), home=tmp_path)
    assert result.returncode == 0, result.stderr
    events = events_of(result.stdout)
    statuses = finished(events)
    branches = {statuses["alert"], statuses["ok"]}
    assert branches == {"succeeded", "skipped"}
    skipped = next(e for e in events if e["type"] == "star.finished" and e["status"] == "skipped")
    assert "condition" in str(skipped["error"])


def test_human_output_has_summary_table(tmp_path: Path) -> None:
    result = orrery("run", str(PLANS / "failure-cleanup.yaml"), home=tmp_path)
    assert result.returncode == 1
    assert "failure-cleanup (version 1)" in result.stdout
    for star in ("lock", "load_config", "apply_config", "cleanup", "report"):
        assert star in result.stdout
    assert "constellation 'failure-cleanup' failed: star 'load_config'" in result.stderr


BAD_PLANS = {
    "yaml syntax": ("name: x\nstars:\n  - id: a\n    tool: shell.run\n   args: {}\n", 5),
    "unknown tool": ("name: x\nstars:\n  - id: a\n    tool: shel.run\n", 4),
    "cycle": (
        "name: x\nstars:\n  - id: a\n    tool: shell.run\n    after: [b]\n"
        "  - id: b\n    tool: shell.run\n    after: [a]\n",
        None,
    ),
    "duplicate id": (
        "name: x\nstars:\n  - id: a\n    tool: shell.run\n  - id: a\n    tool: shell.run\n",
        5,
    ),
    "bad reference": (
        "name: x\nstars:\n  - id: a\n    tool: shell.run\n    args: {cmd: 'echo ${b.output.x}'}\n"
        "  - id: b\n    tool: shell.run\n    args: {cmd: 'true'}\n",
        5,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
def test_malformed_plan_gives_one_located_line_and_exit_2(tmp_path: Path, case: str) -> None:
    text, line = BAD_PLANS[case]
    plan = tmp_path / "bad.yaml"
    plan.write_text(text)
    result = orrery("run", str(plan), home=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("orrery: error: ")
    assert "bad.yaml:" in lines[0]
    if line is not None:
        assert f"bad.yaml:{line}:" in lines[0]
    assert result.stdout == ""


def test_missing_plan_file_is_bad_input(tmp_path: Path) -> None:
    result = orrery("run", str(tmp_path / "nope.yaml"), home=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr


def test_help_lists_commands(tmp_path: Path) -> None:
    result = orrery("--help", home=tmp_path)
    assert result.returncode == 0
    assert "run" in result.stdout
    assert "demo" in result.stdout


def test_runs_are_recorded_and_listed_by_history(tmp_path: Path) -> None:
    from memory import Store

    ok = orrery("run", "--json", str(PLANS / "parallel-report.yaml"), home=tmp_path)
    failed = orrery("run", "--json", str(PLANS / "failure-cleanup.yaml"), home=tmp_path)
    assert (ok.returncode, failed.returncode) == (0, 1)

    listed = orrery("history", "--json", home=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["name"] for row in rows] == ["failure-cleanup", "parallel-report"]
    assert [row["status"] for row in rows] == ["failed", "succeeded"]
    assert rows[1]["reason"] is None
    assert "config.json" in rows[0]["reason"]

    # The store holds the same events the run printed, in order, and the final snapshot.
    printed = events_of(failed.stdout)
    with Store.open_path(tmp_path / "orrery.db") as store:
        stored = store.events(rows[0]["id"])
        snapshot = store.constellation(rows[0]["id"])
    assert [e.seq for e in stored] == [e["seq"] for e in printed]
    assert [e.type for e in stored] == [e["type"] for e in printed]
    assert snapshot is not None
    assert snapshot.snapshot["stars"]["load_config"]["status"] == "failed"
    assert len(snapshot.snapshot["stars"]["load_config"]["attempts"]) == 2


def leaf_commands(parser: object, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every command line's final subparser, by its words (`("devices", "list")`)."""
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    found: dict[tuple[str, ...], object] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_commands(sub, (*path, name)) or {(*path, name): sub}
    return found


def test_every_command_takes_the_global_options_after_it_and_lists_them() -> None:
    """Issue 21, point 2: docs/devices.md puts `--data-dir` after `device`, which exited 2
    ("unrecognized arguments") and was missing from `orrery device --help`."""
    from app.cli import build_parser

    parser = build_parser()
    commands = leaf_commands(parser)
    assert ("device",) in commands
    assert ("devices", "list") in commands
    for words, sub in commands.items():
        assert "--data-dir DIR" in sub.format_help(), words  # type: ignore[attr-defined]
    device = ["device", "--server", "ws://127.0.0.1:1", "--name", "laptop"]
    after = parser.parse_args([*device, "--data-dir", "/tmp/device-home", "-v"])
    assert (after.data_dir, after.verbose) == ("/tmp/device-home", 1)
    before = parser.parse_args(["--data-dir", "/tmp/first", "-vv", *device])
    assert (before.data_dir, before.verbose) == ("/tmp/first", 2)  # kept, not reset
    listed = parser.parse_args(["devices", "list", "--data-dir", "/tmp/d"])
    assert listed.data_dir == "/tmp/d"
