"""`orrery run "words"` from a terminal shows the plan and waits for the answer; outside
a terminal it runs unattended unless `[planner] unattended = false` (then --yes)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agents.models.embedded import default_model_entry
from tests.e2e.processes import orrery

pytestmark = pytest.mark.slow

REQUEST = "write hello into hello.txt"
TIMEOUT = 180.0


def read_until(fd: int, wanted: str, seconds: float) -> str:
    """What the terminal shows until `wanted` appears (bounded, event-driven)."""
    seen = ""
    deadline = time.monotonic() + seconds
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted!r} within {seconds}s; the terminal showed: {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the process closed the terminal
                break
            seen += chunk.decode(errors="replace")
    return seen


QUESTION = "Run this plan? [y/N]"


def in_terminal(
    command: list[str], answer: str, before: Callable[[], None], seconds: float = TIMEOUT
) -> tuple[str, int]:
    """Run `command` on a pseudo-terminal until it asks, call `before()` (nothing may
    have run yet), answer, and return what the terminal showed and the exit code."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        command, stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True
    )
    os.close(secondary)
    try:
        shown = read_until(primary, QUESTION, seconds)
        assert process.poll() is None  # it waits for the answer
        before()
        os.write(primary, answer.encode() + b"\n")
        shown += read_until(primary, "orrery:", seconds)
        code = process.wait(timeout=seconds)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
    return shown, code


def run_in_terminal(home: Path, answer: str) -> tuple[str, int]:
    def nothing_ran() -> None:  # the plan is on the screen and nothing has run yet
        assert not (home / "workspace" / "hello.txt").exists()

    return in_terminal(orrery(home, "run", REQUEST), answer, nothing_ran)


def test_a_run_from_a_terminal_shows_the_plan_and_waits_for_yes(tmp_path: Path) -> None:
    default_model_entry()
    shown, code = run_in_terminal(tmp_path / "yes", "y")
    assert "fs.write" in shown
    assert "hello.txt" in shown
    assert code == 0
    assert (tmp_path / "yes" / "workspace" / "hello.txt").read_text() == "hello"


def test_no_is_not_run_and_outside_a_terminal_the_policy_decides(tmp_path: Path) -> None:
    default_model_entry()
    shown, code = run_in_terminal(tmp_path / "no", "n")
    assert code == 0
    assert "not run" in shown
    assert not (tmp_path / "no" / "workspace" / "hello.txt").exists()
    strict = tmp_path / "strict"
    strict.mkdir()
    (strict / "orrery.toml").write_text("[planner]\nunattended = false\n")
    refused = subprocess.run(
        orrery(strict, "run", REQUEST), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    allowed = subprocess.run(
        orrery(strict, "run", "--yes", REQUEST), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert allowed.returncode == 0, allowed.stderr
    assert (strict / "workspace" / "hello.txt").read_text() == "hello"
