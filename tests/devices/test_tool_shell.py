"""shell.run with real subprocesses: output, failures, limits, timeouts and cancellation."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devices.tools import (
    InvalidToolArgs,
    PathOutsideWorkspace,
    ProcessResult,
    ShellTool,
    ToolContext,
    ToolError,
    ToolFailed,
    ToolTimedOut,
)
from devices.tools.process import PROGRESS_LINE_CHARS, PROGRESS_LINES, truncation_marker

if TYPE_CHECKING:
    from conftest import Pids, ProgressLog

WAIT = 15.0


async def shell(
    context: ToolContext, tool: ShellTool | None = None, **args: object
) -> ProcessResult:
    tool = tool or ShellTool()
    return await asyncio.wait_for(tool.run(tool.parse_args(args), context), WAIT)


async def test_output_is_captured_and_streamed(context: ToolContext, progress: ProgressLog) -> None:
    result = await shell(context, cmd="echo hello; echo oops >&2")
    assert result.returncode == 0
    assert result.stdout == "hello\n"
    assert result.stderr == "oops\n"
    assert result.truncated is False
    assert result.duration >= 0
    assert ("hello", "stdout") in progress.items
    assert ("oops", "stderr") in progress.items


async def test_runs_in_workspace_with_added_environment(
    context: ToolContext, workspace: Path
) -> None:
    (workspace / "sub").mkdir()
    result = await shell(
        context, cmd='pwd; echo "$GREETING"; command -v sh', env={"GREETING": "hi"}
    )
    cwd, greeting, sh = result.stdout.splitlines()
    assert cwd == str(workspace)  # tmp_path is already resolved
    assert greeting == "hi"
    assert sh  # PATH is inherited, not replaced
    result = await shell(context, cmd="pwd", cwd="sub")
    assert result.stdout == f"{workspace / 'sub'}\n"


async def test_cwd_is_confined_and_must_be_a_folder(context: ToolContext, workspace: Path) -> None:
    with pytest.raises(PathOutsideWorkspace):
        await shell(context, cmd="pwd", cwd="..")
    with pytest.raises(PathOutsideWorkspace):
        await shell(context, cmd="pwd", cwd="/tmp")
    (workspace / "file").write_text("")
    with pytest.raises(ToolError, match="not a folder"):
        await shell(context, cmd="pwd", cwd="file")


async def test_nonzero_exit_fails_with_stderr_and_keeps_output(context: ToolContext) -> None:
    with pytest.raises(ToolFailed) as caught:
        await shell(context, cmd="echo partial; echo 'it broke' >&2; exit 3")
    assert caught.value.message == "command exited with code 3: it broke"
    output = caught.value.output
    assert isinstance(output, ProcessResult)
    assert output.returncode == 3
    assert output.stdout == "partial\n"


async def test_failure_message_keeps_the_end_of_long_stderr(context: ToolContext) -> None:
    with pytest.raises(ToolFailed) as caught:
        await shell(context, cmd="yes x | head -c 100000 >&2; echo LAST >&2; exit 1")
    message = caught.value.message
    assert message.startswith("command exited with code 1: ")
    assert message.endswith("LAST")
    assert len(message) < 600


async def test_failure_without_stderr_says_so(context: ToolContext) -> None:
    with pytest.raises(ToolFailed, match="code 4 and printed nothing on stderr"):
        await shell(context, cmd="exit 4")


async def test_check_false_returns_the_exit_code(context: ToolContext) -> None:
    result = await shell(context, cmd="echo out; exit 7", check=False)
    assert result.returncode == 7
    assert result.stdout == "out\n"


async def test_large_output_is_truncated_with_a_marker(context: ToolContext) -> None:
    cap = 1000
    size = 5_000_000
    result = await shell(
        context,
        cmd=f"head -c {size} /dev/zero | tr '\\0' a; head -c {size} /dev/zero >&2",
        max_output=cap,
    )
    marker = truncation_marker(size - cap)
    assert marker == f"\n[... truncated {size - cap} bytes ...]"
    assert result.truncated is True
    assert result.stdout == "a" * cap + marker
    assert len(result.stderr) <= cap + len(marker)
    assert result.stderr.endswith(marker)


async def test_capture_memory_stays_bounded(context: ToolContext) -> None:
    tracemalloc.start()
    try:
        result = await shell(context, cmd="head -c 20000000 /dev/zero", max_output=65536)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.truncated is True
    assert peak < 4_000_000, f"peak {peak} bytes for 20 MB of output"


async def test_progress_is_bounded(context: ToolContext, progress: ProgressLog) -> None:
    result = await shell(context, cmd="seq 1 5000")
    assert result.stdout.count("\n") == 5000
    lines = [message for message, stream in progress.items if stream == "stdout"]
    assert lines == [str(n) for n in range(1, PROGRESS_LINES + 1)]
    assert len(progress.items) == PROGRESS_LINES + 1
    assert progress.items[-1][1] is None  # a note that says the rest is in the result


async def test_long_lines_are_clipped_in_progress(
    context: ToolContext, progress: ProgressLog
) -> None:
    await shell(context, cmd="head -c 100000 /dev/zero | tr '\\0' b; echo; echo next")
    messages = [message for message, _ in progress.items]
    assert messages[0] == "b" * PROGRESS_LINE_CHARS + "…"
    assert messages[-1] == "next"
    assert len(messages) == 2


async def test_stdin_is_empty(context: ToolContext) -> None:
    result = await shell(context, cmd="cat; echo done")
    assert result.stdout == "done\n"


async def test_timeout_stops_the_command(context: ToolContext) -> None:
    with pytest.raises(ToolTimedOut) as caught:
        await shell(context, cmd="echo started; sleep 30", timeout=0.5)
    assert isinstance(caught.value, ToolError)
    assert caught.value.message == "timed out after 0.5s"
    assert isinstance(caught.value.output, ProcessResult)
    assert caught.value.output.stdout == "started\n"


async def test_timeout_kills_a_group_that_ignores_sigterm(context: ToolContext, pids: Pids) -> None:
    tool = ShellTool(kill_grace=0.3)
    cmd = "trap '' TERM; sleep 30 & echo $! > child.pid; wait"
    with pytest.raises(ToolTimedOut):
        await shell(context, tool, cmd=cmd, timeout=0.5)
    await pids.gone(pids.read("child.pid"))


async def test_cancellation_kills_the_process_group(
    context: ToolContext, progress: ProgressLog, pids: Pids
) -> None:
    tool = ShellTool()
    args = tool.parse_args(
        {"cmd": "sleep 30 & echo $! > child.pid; echo $$ > shell.pid; echo ready; wait"}
    )
    task = asyncio.create_task(tool.run(args, context))
    await progress.line("ready")
    shell_pid, child_pid = pids.read("shell.pid"), pids.read("child.pid")
    assert pids.alive(shell_pid)
    assert pids.alive(child_pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    await pids.gone(shell_pid)
    await pids.gone(child_pid)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
async def test_cancellation_while_starting_does_not_wait_for_the_command(
    context: ToolContext, pids: Pids, steps: int
) -> None:
    tool = ShellTool()
    args = tool.parse_args({"cmd": "echo $$ > shell.pid; sleep 30 & wait"})
    task = asyncio.create_task(tool.run(args, context))
    for _ in range(steps):  # cancel at each point of the start (2: process up, pipes not yet)
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)  # well under the command's 30 s
    shell = pids.written("shell.pid")  # the shell may have been stopped before it wrote
    if shell is not None:
        await pids.gone(shell)


async def test_background_job_holding_the_pipes_does_not_hang(
    context: ToolContext, pids: Pids
) -> None:
    tool = ShellTool(drain_grace=0.2, kill_grace=0.5)
    result = await shell(context, tool, cmd="sleep 30 & echo $! > bg.pid; echo main")
    assert result.stdout == "main\n"
    await pids.gone(pids.read("bg.pid"))


async def test_detached_background_job_is_left_alone(context: ToolContext, pids: Pids) -> None:
    tool = ShellTool(drain_grace=0.2)
    await shell(context, tool, cmd="sleep 30 >/dev/null 2>&1 & echo $! > bg.pid")
    assert pids.alive(pids.read("bg.pid"))


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({}, "cmd"),
        ({"cmd": ""}, "cmd"),
        ({"cmd": "true", "bogus": 1}, "bogus"),
        ({"cmd": "true", "timeout": 0}, "timeout"),
        ({"cmd": "true", "max_output": 0}, "max_output"),
        ({"cmd": "true", "env": {"A=B": "x"}}, "env"),
    ],
)
def test_invalid_arguments_name_the_field(args: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidToolArgs) as caught:
        ShellTool().parse_args(args)
    assert caught.value.fields == (field,)
    assert caught.value.message.startswith(f"invalid arguments for shell.run: {field}: ")


async def test_missing_shell_is_a_tool_error(context: ToolContext) -> None:
    with pytest.raises(ToolError, match="could not start"):
        await shell(context, ShellTool(shell="/nonexistent/sh"), cmd="true")
