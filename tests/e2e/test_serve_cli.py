"""`orrery serve --run` and `orrery device --policy` as a user runs them: three real
subprocesses of the command line on 127.0.0.1."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import enroll, orrery, start_device, stop

pytestmark = pytest.mark.slow

PLAN = """
name: guarded
stars:
  - id: greet
    tool: shell.run
    args: {cmd: echo hello from the device}
"""


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    stop(started)


def serve_and_device(
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],
    policy: str,
    *serve_args: str,
) -> subprocess.CompletedProcess[str]:
    home, device_home = tmp_path / "orchestrator", tmp_path / "device"
    token = enroll(home, "careful")
    (tmp_path / "plan.yaml").write_text(PLAN)
    (tmp_path / "policy.toml").write_text(policy)
    serve = subprocess.Popen(
        orrery(home, "serve", "--port", "0", "--run", str(tmp_path / "plan.yaml"), *serve_args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(serve)
    assert serve.stderr is not None
    first = serve.stderr.readline()
    assert "serving AIP at ws://" in first, first
    url = first.split(" at ")[1].strip()
    policy_file = str(tmp_path / "policy.toml")
    processes.append(start_device(device_home, url, "careful", token, "--policy", policy_file))
    stdout, stderr = serve.communicate(timeout=120)
    return subprocess.CompletedProcess(serve.args, serve.returncode, stdout, first + stderr)


def test_a_call_the_policy_wants_approved_runs_with_approve_all(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    policy = '[approval]\nrequired = ["shell.run"]\n'
    result = serve_and_device(tmp_path, processes, policy, "--approve-all")
    assert result.returncode == 0, result.stderr
    assert "approve?" in result.stdout  # the request was shown
    assert "approved" in result.stdout
    assert "constellation 'guarded' succeeded" in result.stderr


def test_without_anyone_to_approve_the_call_is_refused(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    policy = '[approval]\nrequired = ["shell.run"]\n'
    result = serve_and_device(tmp_path, processes, policy)
    assert result.returncode == 1, result.stderr
    assert "shell.run was not approved" in result.stderr
    assert "--approve-all" in result.stderr


def test_a_disabled_tool_is_not_offered_and_the_star_fails_fast(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    result = serve_and_device(tmp_path, processes, '[tools]\ndisabled = ["shell.run"]\n')
    assert result.returncode == 3, result.stderr  # no capable device
    assert "no capable device" in result.stderr
    assert "star 'greet'" in result.stderr
    assert "lacks tool 'shell.run'" in result.stderr
