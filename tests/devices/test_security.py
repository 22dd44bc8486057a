"""Security of the built-in tools under a device policy, with real files and processes.

Paths and working folders stay inside the workspace (or the policy's [fs] roots) whatever
'..', symbolic links or absolute paths say; disabled tools are refused through the
dispatcher; a shell allow-list cannot be dodged with shell syntax; and output is capped
without the device ever holding more of it than the cap.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

from devices.local import LocalDispatcher
from devices.policy import DevicePolicy, FsPolicy, ShellPolicy, apply_policy
from devices.tools import (
    CommandNotAllowed,
    FsListTool,
    FsReadTool,
    FsWriteTool,
    PathOutsideWorkspace,
    PythonTool,
    ShellTool,
    Tool,
    ToolContext,
    default_tools,
)
from devices.tools.process import truncation_marker
from protocol.tasks import TaskAssignment, TaskOutcome

if TYPE_CHECKING:
    from conftest import FakeSink, ProgressLog

WAIT = 15.0


async def call(tool: Tool[Any, Any], context: ToolContext, **args: object) -> Any:
    result = await asyncio.wait_for(tool.run(tool.parse_args(args), context), WAIT)
    assert isinstance(result, BaseModel)
    return result


def assignment(star: str, tool: str, **args: Any) -> TaskAssignment:
    return TaskAssignment(
        constellation_id="c1", star_id=star, attempt=1, device="local", tool=tool, args=args
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the workspace, with a secret in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_text("do not leak")
    return folder


@pytest.fixture
def links(workspace: Path, outside: Path) -> None:
    """Symbolic links in the workspace that lead outside it."""
    (workspace / "out-dir").symlink_to(outside)
    (workspace / "out-file").symlink_to(outside / "secret")
    (workspace / "out-new").symlink_to(outside / "not-yet")


def names(folder: Path) -> list[str]:
    return sorted(item.name for item in folder.iterdir())


def with_policy(context: ToolContext, policy: DevicePolicy) -> ToolContext:
    return ToolContext(workspace=context.workspace, progress=context.progress, policy=policy)


ESCAPES = ["../outside/secret", "sub/../../outside/secret", "out-file", "out-dir/secret"]


# -- paths


@pytest.mark.usefixtures("links")
@pytest.mark.parametrize("path", [*ESCAPES, "ABSOLUTE"])
async def test_fs_read_stays_in_the_workspace(
    context: ToolContext, outside: Path, path: str
) -> None:
    path = str(outside / "secret") if path == "ABSOLUTE" else path
    with pytest.raises(PathOutsideWorkspace) as caught:
        await call(FsReadTool(), context, path=path)
    assert "do not leak" not in caught.value.message
    assert "[fs] roots" in caught.value.message  # says how to allow it


@pytest.mark.usefixtures("links")
@pytest.mark.parametrize(
    "path", ["../outside/new", "out-dir/new", "out-new", "out-file", "ABSOLUTE"]
)
async def test_fs_write_stays_in_the_workspace(
    context: ToolContext, outside: Path, path: str
) -> None:
    path = str(outside / "new") if path == "ABSOLUTE" else path
    with pytest.raises(PathOutsideWorkspace):
        await call(FsWriteTool(), context, path=path, content="owned")
    assert names(outside) == ["secret"]
    assert (outside / "secret").read_text() == "do not leak"


@pytest.mark.usefixtures("links")
@pytest.mark.parametrize("path", ["..", "../outside", "out-dir", "/", "ABSOLUTE"])
async def test_fs_list_stays_in_the_workspace(
    context: ToolContext, outside: Path, path: str
) -> None:
    path = str(outside) if path == "ABSOLUTE" else path
    with pytest.raises(PathOutsideWorkspace):
        await call(FsListTool(), context, path=path)


@pytest.mark.usefixtures("links")
async def test_fs_list_reports_links_without_following_them(context: ToolContext) -> None:
    listed = await call(FsListTool(), context, recursive=True)
    assert {(entry.name, entry.type) for entry in listed.entries} == {
        ("out-dir", "link"),
        ("out-file", "link"),
        ("out-new", "link"),
    }


@pytest.mark.usefixtures("links")
@pytest.mark.parametrize("tool", [ShellTool(), PythonTool()], ids=["shell", "python"])
@pytest.mark.parametrize("cwd", ["..", "../outside", "sub/../..", "out-dir", "ABSOLUTE"])
async def test_process_cwd_stays_in_the_workspace(
    context: ToolContext, workspace: Path, outside: Path, tool: Tool[Any, Any], cwd: str
) -> None:
    (workspace / "sub").mkdir()
    cwd = str(outside) if cwd == "ABSOLUTE" else cwd
    code = {"cmd": "touch made-here"} if isinstance(tool, ShellTool) else {"code": "pass"}
    with pytest.raises(PathOutsideWorkspace):
        await call(tool, context, cwd=cwd, **code)
    assert names(outside) == ["secret"]


async def test_configured_roots_are_usable(
    context: ToolContext, workspace: Path, outside: Path
) -> None:
    policy = DevicePolicy(fs=FsPolicy(roots=(outside,)))
    inside = with_policy(context, policy)
    secret = str(outside / "secret")
    read = await call(FsReadTool(), inside, path=secret)
    assert (read.path, read.content) == (secret, "do not leak")
    assert (await call(FsReadTool(), inside, path="../outside/secret")).path == secret
    written = await call(FsWriteTool(), inside, path=str(outside / "d" / "new"), content="ok")
    assert written.path == str(outside / "d" / "new")
    assert (outside / "d" / "new").read_text() == "ok"
    listed = await call(FsListTool(), inside, path=str(outside))
    assert [entry.name for entry in listed.entries] == ["d", "secret"]
    ran = await call(ShellTool(), inside, cmd="pwd", cwd=str(outside))
    assert ran.stdout == f"{outside}\n"
    ran = await call(PythonTool(), inside, code="import os; print(os.getcwd())", cwd="../outside")
    assert ran.stdout == f"{outside}\n"
    # absolute paths into the workspace are fine once roots are configured
    (workspace / "mine").write_text("mine")
    assert (await call(FsReadTool(), inside, path=str(workspace / "mine"))).path == "mine"


async def test_roots_do_not_open_their_neighbours(
    context: ToolContext, tmp_path: Path, outside: Path
) -> None:
    neighbour = tmp_path / "outside-too"  # shares the root's name as a string prefix
    neighbour.mkdir()
    (neighbour / "secret").write_text("no")
    (outside / "up").symlink_to(neighbour)
    inside = with_policy(context, DevicePolicy(fs=FsPolicy(roots=(outside,))))
    for path in [str(neighbour / "secret"), "../outside-too/secret", str(outside / "up/secret")]:
        with pytest.raises(PathOutsideWorkspace) as caught:
            await call(FsReadTool(), inside, path=path)
        assert str(outside) in caught.value.message
    with pytest.raises(PathOutsideWorkspace):
        await call(FsReadTool(), inside, path="/etc/hostname")


async def test_a_root_that_is_not_a_folder_opens_nothing(
    context: ToolContext, tmp_path: Path
) -> None:
    inside = with_policy(context, DevicePolicy(fs=FsPolicy(roots=(tmp_path / "nowhere",))))
    with pytest.raises(PathOutsideWorkspace, match="absolute paths are not allowed"):
        await call(FsWriteTool(), inside, path=str(tmp_path / "nowhere" / "x"), content="x")
    assert not (tmp_path / "nowhere").exists()


# -- disabled tools, through the dispatcher


@pytest.fixture
async def policed(
    tmp_path: Path, workspace: Path, sink: FakeSink
) -> AsyncIterator[LocalDispatcher]:
    """A dispatcher whose tools run under a policy file."""
    path = tmp_path / "device.toml"
    path.write_text('[tools]\ndisabled = ["python.run"]\n[shell]\nallowed_commands = ["ls"]\n')
    local = LocalDispatcher(workspace, tools=apply_policy(DevicePolicy.load(path), default_tools()))
    local.attach(sink)
    yield local
    await local.aclose()


async def test_a_disabled_tool_is_refused_through_the_dispatcher(
    policed: LocalDispatcher, sink: FakeSink, tmp_path: Path, workspace: Path
) -> None:
    [device] = policed.devices()
    assert "python.run" not in device.tools
    assert "shell.run" in device.tools
    policed.assign(assignment("py", "python.run", code="open('ran', 'w')"))
    result = await sink.result("py")
    assert result.status is TaskOutcome.FAILED
    assert result.error == (
        f"tool 'python.run' is disabled on this device by its policy ({tmp_path / 'device.toml'}); "
        "enable it under [tools]"
    )
    assert not (workspace / "ran").exists()


async def test_the_dispatcher_runs_tools_under_the_policy(
    policed: LocalDispatcher, sink: FakeSink, workspace: Path
) -> None:
    (workspace / "x").write_text("keep me")
    policed.assign(assignment("smuggle", "shell.run", cmd="ls; rm -rf x"))
    refused = await sink.result("smuggle")
    assert refused.status is TaskOutcome.FAILED
    assert refused.error is not None
    assert refused.error.startswith("command 'ls; rm -rf x' is not allowed on this device: ';'")
    policed.assign(assignment("list", "shell.run", cmd="ls"))
    listed = await sink.result("list")
    assert listed.status is TaskOutcome.SUCCEEDED
    assert listed.output["stdout"] == "x\n"
    assert (workspace / "x").read_text() == "keep me"


# -- the shell allow-list

ALLOW_LS = DevicePolicy(shell=ShellPolicy(allowed_commands=("ls", "echo")))


@pytest.mark.parametrize(
    ("cmd", "why"),
    [
        ("ls; rm -rf x", "';' (a command separator)"),
        ("ls && rm -rf x", "'&' or '&&'"),
        ("ls & rm -rf x", "'&' or '&&'"),
        ("ls || rm -rf x", "'|' or '||'"),
        ("ls | sh", "'|' or '||'"),
        ("ls `rm -rf x`", "backticks"),
        ("ls $(rm -rf x)", "'$(' (command substitution)"),
        ('echo "$(rm -rf x)"', "'$(' (command substitution)"),
        ("echo hi > x", "'>' (a redirection)"),
        ("ls < x", "'<' (a redirection)"),
        ("ls\nrm -rf x", "a newline"),
        ("echo 'a;b'", "';' (a command separator)"),  # refused even inside quotes
        ("rm -rf x", "its program 'rm' is not in [shell] allowed_commands (ls, echo)"),
        ("'rm' -rf x", "its program 'rm' is not in"),
        ("/bin/ls", "its program '/bin/ls' is not in"),
        ("X=1 ls", "its program 'X=1' is not in"),
        ("$SHELL -c ls", "its program '$SHELL' is not in"),
        ("   ", "it names no program"),
        ("ls 'unclosed", "it does not parse (No closing quotation)"),
    ],
)
async def test_commands_outside_the_allow_list_are_refused(
    context: ToolContext, workspace: Path, cmd: str, why: str
) -> None:
    (workspace / "x").write_text("keep me")
    with pytest.raises(CommandNotAllowed) as caught:
        await call(ShellTool(), with_policy(context, ALLOW_LS), cmd=cmd)
    assert why in caught.value.message
    assert "[shell] allowed_commands" in caught.value.message
    assert (workspace / "x").read_text() == "keep me"


async def test_env_is_refused_with_an_allow_list(context: ToolContext, workspace: Path) -> None:
    (workspace / "ls").write_text("#!/bin/sh\necho owned\n")
    (workspace / "ls").chmod(0o755)
    with pytest.raises(CommandNotAllowed, match=r"env \(LD_PRELOAD, PATH\) is refused"):
        await call(
            ShellTool(),
            with_policy(context, ALLOW_LS),
            cmd="ls",
            env={"PATH": str(workspace), "LD_PRELOAD": "x.so"},
        )


async def test_allowed_commands_run(context: ToolContext, workspace: Path) -> None:
    (workspace / "a b").write_text("")
    allowed = with_policy(context, ALLOW_LS)
    assert (await call(ShellTool(), allowed, cmd="ls -1")).stdout == "a b\n"
    assert (await call(ShellTool(), allowed, cmd="'ls' 'a b'")).stdout == "a b\n"
    assert (await call(ShellTool(), allowed, cmd='echo "hello  world"')).stdout == (
        "hello  world\n"
    )


async def test_without_an_allow_list_the_shell_is_a_shell(context: ToolContext) -> None:
    result = await call(ShellTool(), context, cmd="echo a; echo b | tr b c", env={"X": "1"})
    assert result.stdout == "a\nc\n"


# -- bounded output


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        (ShellTool(), {"cmd": "yes | head -c 50000000"}),
        (PythonTool(), {"code": "import sys; sys.stdout.buffer.write(b'x' * 50_000_000)"}),
    ],
    ids=["shell", "python"],
)
async def test_huge_output_is_capped_and_memory_stays_bounded(
    context: ToolContext, progress: ProgressLog, tool: Tool[Any, Any], args: dict[str, Any]
) -> None:
    cap = 65_536
    tracemalloc.start()
    try:
        result = await call(tool, context, max_output=cap, **args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.truncated is True
    assert result.stdout.endswith(truncation_marker(50_000_000 - cap))
    assert len(result.stdout) == cap + len(truncation_marker(50_000_000 - cap))
    # the device read 50 MB but never held more than the cap and a few pipe reads of it
    assert peak < 4_000_000, f"peak {peak} bytes for 50 MB of output"
    assert sum(len(message) for message, _ in progress.items) < 300_000
