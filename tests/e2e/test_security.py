"""What an outside review broke (issue 16), tried again from the outside: `orrery serve`,
`orrery device` and `orrery run` as real subprocesses on 127.0.0.1.

- A fresh server and device leave nothing in their data dirs that another local user
  could read, and no token is on any of their command lines (finding 1, 2).
- A refused plan is one line on stderr, remote as local (finding 8).
- What a device prints reaches the terminal with its control characters escaped
  (finding 9).
- A device says at start which of its tools run unconfined (finding 5).
"""

from __future__ import annotations

import os
import selectors
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.control.messages import MAX_PLAN_BYTES
from app.device_processes import DEVICE_TOKEN_ENV
from tests.e2e.processes import (
    enroll,
    free_port,
    orrery,
    start_device,
    start_serve,
    stop,
    wait_for_devices,
)

pytestmark = pytest.mark.slow

TIMEOUT = 120

SECRETS_PLAN = """
name: secrets
stars:
  - id: note
    tool: fs.write
    args: {path: notes/secret.txt, content: "the launch code is 0000"}
  - id: read
    after: [note]
    tool: fs.read
    args: {path: notes/secret.txt}
  - id: put
    after: [read]
    tool: artifact.put
    args: {path: notes/secret.txt}
  - id: get
    after: [put]
    tool: artifact.get
    args: {artifact: "${put.output.artifact}", path: copy/secret.txt}
"""

ESCAPES_PLAN = """
name: escapes
stars:
  - id: loud
    tool: shell.run
    args: {cmd: "printf 'hi\\\\033[2J\\\\033]0;owned\\\\007 there\\\\n'"}
  - id: boom
    tool: shell.run
    args: {cmd: "printf 'bad\\\\033[2Jthing\\\\n' >&2; exit 3"}
"""


@dataclass
class Fleet:
    root: Path
    home: Path  # the orchestrator's data dir
    device_home: Path
    control: str
    serve: subprocess.Popen[str]
    device: subprocess.Popen[str]
    device_token: str


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    old = os.umask(0o022)  # the usual umask: new files readable by everyone unless made so
    root = tmp_path_factory.mktemp("security")
    home, device_home = root / "orchestrator", root / "device"
    processes: list[subprocess.Popen[str] | None] = []
    try:
        token = enroll(home, "vault")
        serve, aip, control = start_serve(home, 0, "--no-planner")
        processes.append(serve)
        device = start_device(device_home, aip, "vault", token)
        processes.append(device)
        wait_for_devices(control, home, ["vault"])
        yield Fleet(root, home, device_home, control, serve, device, token)
    finally:
        stop(processes)
        os.umask(old)


def run_cli(fleet: Fleet, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        orrery(home or fleet.home, *args),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def plan_file(root: Path, name: str, text: str) -> str:
    path = root / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def others_can_read(path: Path, top: Path) -> bool:
    """Whether another (non-root) user could read `path`: it grants read to group or
    others, and every folder from `top` down to it lets them pass."""
    if not stat.S_IMODE(path.lstat().st_mode) & 0o044:
        return False
    folder = path.parent
    while True:
        if not stat.S_IMODE(folder.stat().st_mode) & 0o011:
            return False
        if folder == top:
            return True
        folder = folder.parent


def walk(top: Path) -> list[Path]:
    return [top, *sorted(top.rglob("*"))]


# --------------------------------------------------------------- findings 1 and 2


def test_no_token_is_on_the_command_line_of_the_server_or_the_device(fleet: Fleet) -> None:
    control_token = (fleet.home / "control.token").read_text().strip()
    for process in (fleet.serve, fleet.device):
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        assert process.poll() is None
        assert fleet.device_token not in cmdline
        assert control_token not in cmdline
        assert "--token" not in cmdline


def test_a_fresh_server_and_device_leave_nothing_another_user_can_read(fleet: Fleet) -> None:
    ran = run_cli(fleet, "run", "--server", fleet.control, plan_file(fleet.root, "s.yaml",
                  SECRETS_PLAN))  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    for top in (fleet.home, fleet.device_home):
        readable = [str(p) for p in walk(top) if others_can_read(p, top)]
        assert readable == [], f"other users can read: {readable}"
        workspace = top / "workspace"
        for path in walk(top):
            if path.is_relative_to(workspace) and path != workspace:
                continue  # the tools' area: see docs/security.md
            wanted = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.lstat().st_mode) == wanted, path
    # what was made: the store and its WAL, the token, artifacts, the outbox, a workspace
    made = {p.relative_to(fleet.root).as_posix() for p in walk(fleet.root)}
    assert {
        "orchestrator/orrery.db",
        "orchestrator/orrery.db-wal",
        "orchestrator/control.token",
        "orchestrator/artifacts/objects",
        "device/outbox.db",
        "device/outbox.db-wal",
        "device/workspace/notes/secret.txt",
        "device/workspace/copy/secret.txt",
    } <= made
    objects = fleet.home / "artifacts" / "objects"
    assert [stat.S_IMODE(p.stat().st_mode) for p in objects.iterdir()] == [0o600] * len(
        list(objects.iterdir())
    )


# --------------------------------------------------------------- finding 8


@pytest.mark.parametrize("case", ["empty", "too large"])
def test_a_refused_plan_is_one_line_on_stderr_remote_as_local(fleet: Fleet, case: str) -> None:
    text = "" if case == "empty" else "name: big\n# " + "x" * MAX_PLAN_BYTES + "\nstars: []\n"
    plan = plan_file(fleet.root, f"{case.replace(' ', '-')}.yaml", text)
    remote = run_cli(fleet, "run", "--server", fleet.control, plan)
    local = run_cli(fleet, "run", plan, home=fleet.root / "local")
    for result in (remote, local):
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert remote.stderr == local.stderr
    reason = "plan file is empty" if case == "empty" else "plan file is larger than 1024 KiB"
    assert remote.stderr.startswith(f"orrery: error: {plan}")
    assert reason in remote.stderr


# --------------------------------------------------------------- finding 9


def test_what_a_device_prints_reaches_the_terminal_escaped(fleet: Fleet) -> None:
    ran = run_cli(fleet, "run", "--server", fleet.control, plan_file(fleet.root, "e.yaml",
                  ESCAPES_PLAN))  # fmt: skip
    assert ran.returncode == 1, ran.stderr
    shown = ran.stdout + ran.stderr
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert "\\x1b[2J" in ran.stdout  # the output table, escaped
    assert "bad\\x1b[2Jthing" in ran.stdout  # the progress lines and the summary table
    (last,) = ran.stderr.splitlines()[-1:]
    assert "bad\\x1b[2Jthing" in last  # the final error line


# --------------------------------------------------------------- finding 5


def lines_until(process: subprocess.Popen[str], wanted: str, within: float) -> list[str]:
    """Lines of `process`'s stderr until one holds `wanted` (or `within` s pass)."""
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline and not any(wanted in line for line in seen):
            if selector.select(timeout=deadline - time.monotonic()):
                line = process.stderr.readline()
                if not line:
                    break
                seen.append(line)
    return seen


def test_a_device_says_at_start_which_tools_run_unconfined(tmp_path: Path) -> None:
    nowhere = f"ws://127.0.0.1:{free_port()}"  # it says so before it connects anywhere
    device = subprocess.Popen(
        orrery(tmp_path / "device", "device", "--server", nowhere, "--name", "loose"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, DEVICE_TOKEN_ENV: "orr1_" + "x" * 43},
    )
    try:
        said = lines_until(device, "run unconfined", TIMEOUT)
    finally:
        stop([device])
    (line,) = [line for line in said if "run unconfined" in line]
    assert "WARNING orrery.device: device loose: python.run, shell.run, agent.do run" in line
    assert '[sandbox] mode = "bwrap"' in line
