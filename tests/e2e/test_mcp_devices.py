"""End to end: MCP servers from PyPI as tools of real `orrery device` processes.

`orrery serve` and three `orrery device` subprocesses on 127.0.0.1: `clock` offers
`mcp-server-time`, `repo` offers `mcp-server-git` (on a repository the test makes),
`fragile` offers the tests' own `tests/mcp_servers/crashy.py`, which exits mid-call.
Plans go through the control API client, as any front end's do.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.client import Orrery
from app.device_processes import DEVICE_TOKEN_ENV
from tests.e2e.processes import enroll, orrery, start_serve, stop, wait_for_devices

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
CRASHY = Path(__file__).parents[1] / "mcp_servers" / "crashy.py"
WAIT = 60.0


def git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.org",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.org",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(repo.parent),
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)


def make_repository(repo: Path) -> None:
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for number, message in enumerate(["First light", "Second orbit"]):
        (repo / f"note{number}.txt").write_text(message)
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", message)


class Fleet:
    """The serve process, the device processes, and where their logs go."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "orchestrator"
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.serve, self.aip, self.control = start_serve(self.home)

    def device(self, name: str, policy: str) -> subprocess.Popen[str]:
        data = self.root / name
        data.mkdir()
        (data / "device.toml").write_text(policy)
        token = enroll(self.home, name)
        with (self.root / f"{name}.log").open("w") as log:
            process = subprocess.Popen(
                orrery(data, "device", "--server", self.aip, "--name", name),
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
                env={**os.environ, DEVICE_TOKEN_ENV: token},
            )
        self.processes[name] = process
        return process

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text()[-3000:]}"
            for path in sorted(self.root.glob("*.log"))
        )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(tmp_path)
    try:
        yield running
    finally:
        stop([*running.processes.values(), running.serve])
        print(running.logs())


async def run_plan(fleet: Fleet, plan: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    async with Orrery(fleet.control, data_dir=fleet.home) as client:
        run = await client.submit(plan_text=plan)
        async with asyncio.timeout(WAIT):
            result = await run.wait()
        snapshot = await run.snapshot()
    stars: dict[str, dict[str, Any]] = snapshot.constellation["stars"]
    return result, stars


def test_plans_call_mcp_server_time_and_mcp_server_git_on_two_devices(
    fleet: Fleet, tmp_path: Path
) -> None:
    repo = tmp_path / "repository"
    make_repository(repo)
    fleet.device(
        "clock",
        f'[mcp.servers.time]\ncommand = "{BIN / "mcp-server-time"}"\n'
        'args = ["--local-timezone", "UTC"]\n',
    )
    fleet.device(
        "repo",
        f'[mcp.servers.git]\ncommand = "{BIN / "mcp-server-git"}"\n'
        f'args = ["--repository", "{repo}"]\n',
    )
    wait_for_devices(fleet.control, fleet.home, ["clock", "repo"])

    async def check() -> None:
        async with Orrery(fleet.control, data_dir=fleet.home) as client:
            offered = {device.name: device.tools for device in await client.devices()}
        assert "mcp.time.get_current_time" in offered["clock"]
        assert "mcp.git.git_log" in offered["repo"]
        assert not [tool for tool in offered["clock"] if tool.startswith("mcp.git.")]

        before = datetime.datetime.now(datetime.UTC)
        result, stars = await run_plan(
            fleet,
            f"""
name: mcp both ways
stars:
  - id: now
    tool: mcp.time.get_current_time
    on: clock
    args: {{timezone: UTC}}
  - id: log
    tool: mcp.git.git_log
    on: repo
    args: {{repo_path: "{repo}", max_count: 5}}
""",
        )
        assert result.succeeded, (result, stars)
        now = stars["now"]["output"]
        assert now["server"] == "time"
        assert now["structured"]["timezone"] == "UTC"
        told = datetime.datetime.fromisoformat(now["structured"]["datetime"])
        assert abs((told - before).total_seconds()) < WAIT
        assert stars["now"]["attempts"][-1]["device"] == "clock"
        log = stars["log"]["output"]
        assert log["tool"] == "git_log"
        assert "Second orbit" in log["text"]
        assert "First light" in log["text"]
        assert log["text"].index("Second orbit") < log["text"].index("First light")
        assert stars["log"]["attempts"][-1]["device"] == "repo"

    asyncio.run(check())


def read_pid(path: Path, other_than: int | None = None) -> int:
    """The pid the crashy server wrote; waits (bounded) for a new one."""
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        text = path.read_text() if path.exists() else ""
        if text and int(text) != other_than:
            return int(text)
        time.sleep(0.05)
    raise AssertionError(f"no new pid in {path} within {WAIT}s")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" in status.read_text()


def test_a_server_that_exits_mid_call_fails_the_star_and_is_restarted(
    fleet: Fleet, tmp_path: Path
) -> None:
    pid_file = tmp_path / "crashy.pid"
    device = fleet.device(
        "fragile",
        f'[mcp.servers.crashy]\ncommand = "{sys.executable}"\nargs = ["{CRASHY}", "{pid_file}"]\n',
    )
    wait_for_devices(fleet.control, fleet.home, ["fragile"])
    first = read_pid(pid_file)
    crash_plan = """
name: crash
stars:
  - id: boom
    tool: mcp.crashy.crash
    on: fragile
    args: {}
"""
    result, stars = asyncio.run(run_plan(fleet, crash_plan))
    assert not result.succeeded
    assert stars["boom"]["status"] == "failed"
    assert "MCP server 'crashy' exited during the call of 'crash'" in stars["boom"]["error"]

    second = read_pid(pid_file, other_than=first)  # started again
    echo_plan = """
name: after the crash
stars:
  - id: again
    tool: mcp.crashy.echo
    on: fragile
    args: {text: still here}
"""
    result, stars = asyncio.run(run_plan(fleet, echo_plan))
    assert result.succeeded, stars
    assert stars["again"]["output"]["text"] == "still here"

    # The server dies with the device, even when the device is killed outright.
    assert not gone(second)
    device.send_signal(signal.SIGKILL)
    device.wait(timeout=30)
    end = time.monotonic() + WAIT
    while not gone(second) and time.monotonic() < end:
        time.sleep(0.05)
    assert gone(second), "the MCP server outlived its killed device"
