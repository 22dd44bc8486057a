"""Confinement (issue 16, finding 5): what the default policy leaves unconfined is said
when a device starts; `[sandbox] mode = "bwrap"` runs shell.run and python.run inside
bubblewrap with only the workspace writable, the data dir hidden and no network unless
allowed. Real bwrap, real processes; skipped (with the reason) where bwrap cannot run."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from devices.agent import say_confinement
from devices.policy import DevicePolicy, PolicyError, apply_policy
from devices.tools import PythonTool, ShellTool, Tool, ToolContext, ToolError, default_tools
from devices.tools.sandbox import sandbox_for, unconfined

WAIT = 30.0


def bwrap_problem() -> str | None:
    """Why bwrap cannot be tried here, or None."""
    program = shutil.which("bwrap")
    if program is None:
        return "bubblewrap is not installed (apt install bubblewrap)"
    probe = subprocess.run(
        [program, "--unshare-all", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
         "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"bwrap cannot make namespaces here (user namespaces off?): {probe.stderr.strip()}"
    return None


needs_bwrap = pytest.mark.skipif(bwrap_problem() is not None, reason=str(bwrap_problem()))


async def call(tool: Tool[Any, Any], context: ToolContext, **args: object) -> Any:
    result = await asyncio.wait_for(tool.run(tool.parse_args(args), context), WAIT)
    assert isinstance(result, BaseModel)
    return result


def policy(text: str) -> DevicePolicy:
    import tomllib

    return DevicePolicy.from_mapping(tomllib.loads(text))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A device data dir with its secrets, and the workspace inside it."""
    data = tmp_path / "data"
    (data / "workspace").mkdir(parents=True)
    (data / "control.token").write_text("orc1_the_secret")
    return data


def confined(data_dir: Path, *, network: bool = False, roots: str = "") -> ToolContext:
    text = f'[sandbox]\nmode = "bwrap"\nnetwork = {str(network).lower()}\n{roots}'
    return ToolContext(workspace=data_dir / "workspace", policy=policy(text), private=(data_dir,))


# --------------------------------------------------------------- saying what is unconfined


def test_the_default_offers_shell_and_python_unconfined_and_the_device_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tools = apply_policy(DevicePolicy(), default_tools())
    assert unconfined(DevicePolicy(), [*tools.names(), "agent.do"]) == [
        "python.run",
        "shell.run",
        "agent.do",
    ]
    with caplog.at_level(logging.INFO, "orrery.device"):
        say_confinement("laptop", tools, tmp_path, tmp_path)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("device laptop: python.run, shell.run run unconfined")
    assert "[sandbox]" in record.getMessage()


def test_a_device_without_process_tools_has_nothing_to_say(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = policy('[tools]\ndisabled = ["shell.run", "python.run"]\n')
    with caplog.at_level(logging.INFO, "orrery.device"):
        say_confinement("nas", apply_policy(quiet, default_tools()), tmp_path, tmp_path)
    assert caplog.records == []


def test_a_sandbox_without_bwrap_is_refused_when_the_device_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap to be found
    boxed = policy('[sandbox]\nmode = "bwrap"\n')
    with pytest.raises(PolicyError, match="needs bubblewrap, which is not installed"):
        say_confinement("nas", apply_policy(boxed, default_tools()), tmp_path, tmp_path)
    with pytest.raises(PolicyError, match=r"sandbox\.mode"):
        policy('[sandbox]\nmode = "chroot"\n')


async def test_without_bwrap_a_sandboxed_call_fails_rather_than_run_loose(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(data_dir))
    with pytest.raises(ToolError, match="needs bubblewrap"):
        await call(ShellTool(), confined(data_dir), cmd="true")


# --------------------------------------------------------------- inside bwrap


@needs_bwrap
async def test_python_in_the_sandbox_cannot_see_the_data_dir(data_dir: Path) -> None:
    loose = ToolContext(workspace=data_dir / "workspace")
    code = "print(open('../control.token').read())"
    assert (await call(PythonTool(), loose, code=code)).stdout == "orc1_the_secret\n"  # today
    ran = await call(PythonTool(), confined(data_dir), code=code, check=False)
    assert ran.returncode != 0
    assert "orc1_the_secret" not in ran.stdout + ran.stderr
    assert "No such file" in ran.stderr
    listing = await call(ShellTool(), confined(data_dir), cmd=f"ls -a {data_dir}")
    assert listing.stdout.split() == [".", "..", "workspace"]


@needs_bwrap
async def test_only_the_workspace_is_writable(data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    context = confined(data_dir)
    ran = await call(ShellTool(), context, cmd=f"touch made-here && touch {outside}/x", check=False)
    assert ran.returncode != 0
    assert (data_dir / "workspace" / "made-here").exists()
    assert not (outside / "x").exists()
    assert "Read-only file system" in ran.stderr or "No such file" in ran.stderr


@needs_bwrap
async def test_a_policy_root_is_writable_in_the_sandbox(data_dir: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    context = confined(data_dir, roots=f'[fs]\nroots = ["{shared}"]\n')
    await call(ShellTool(), context, cmd=f"echo hi > {shared}/x")
    assert (shared / "x").read_text() == "hi\n"


@needs_bwrap
async def test_the_sandbox_gets_only_the_star_env(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORRERY_DEVICE_TOKEN", "orr1_do_not_hand_down")
    ran = await call(ShellTool(), confined(data_dir), cmd="env", env={"MINE": "yes"})
    assert "orr1_do_not_hand_down" not in ran.stdout
    assert "MINE=yes" in ran.stdout
    assert f"HOME={data_dir / 'workspace'}" in ran.stdout


@needs_bwrap
@pytest.mark.parametrize("network", [False, True])
async def test_the_network_is_there_only_when_allowed(data_dir: Path, network: bool) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
            "    print('reached')\n"
            "except OSError as error:\n    print('refused', error)\n"
        )
        ran = await call(PythonTool(), confined(data_dir, network=network), code=code)
    assert ran.stdout.startswith("reached" if network else "refused"), ran.stdout


@needs_bwrap
async def test_an_interpreter_that_lives_under_tmp_runs_in_the_sandbox(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout in /tmp has its venv there; the sandbox's own empty /tmp hid it, and
    # python.run failed with "bwrap: execvp /tmp/.../.venv/bin/python: No such file".
    import tempfile

    import devices.tools.sandbox as sandbox

    with tempfile.TemporaryDirectory(dir="/tmp", prefix="orrery-interpreter-") as place:
        interpreter = Path(place)
        program = interpreter / "hello"
        program.write_text("#!/bin/sh\necho hello from /tmp\n")
        program.chmod(0o755)
        real = sandbox.python_dirs()
        monkeypatch.setattr(sandbox, "python_dirs", lambda: [*real, interpreter])
        ran = await call(ShellTool(), confined(data_dir), cmd=str(program))
        assert ran.stdout == "hello from /tmp\n"
        # the rest of /tmp stays hidden (only what is bound on it shows: the interpreter,
        # and the workspace's folders where the workspace is under /tmp)
        (interpreter.parent / f"{interpreter.name}-beside").mkdir()
        try:
            listed = await call(ShellTool(), confined(data_dir), cmd="ls -A /tmp")
            assert interpreter.name in listed.stdout.split()
            assert f"{interpreter.name}-beside" not in listed.stdout.split()
        finally:
            (interpreter.parent / f"{interpreter.name}-beside").rmdir()


@needs_bwrap
async def test_a_working_folder_inside_the_workspace_is_kept(data_dir: Path) -> None:
    (data_dir / "workspace" / "sub").mkdir()
    ran = await call(ShellTool(), confined(data_dir), cmd="pwd", cwd="sub")
    assert ran.stdout == f"{data_dir / 'workspace' / 'sub'}\n"


def test_the_sandbox_names_what_it_hides(data_dir: Path) -> None:
    box = sandbox_for(policy('[sandbox]\nmode = "bwrap"\n'), data_dir / "workspace", [data_dir])
    if box is None or shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    line, outer_env = box.wrap(["true"], data_dir / "workspace", {})
    pairs = list(itertools.pairwise(line))
    hidden = pairs.index(("--tmpfs", str(data_dir.resolve())))
    workspace = str((data_dir / "workspace").resolve())
    assert hidden < pairs.index(("--bind", workspace))  # hidden first, the workspace on top
    assert "--share-net" not in line
    assert "--clearenv" in line
    assert list(outer_env) == ["PATH"]  # bwrap itself gets nothing of the device's env
