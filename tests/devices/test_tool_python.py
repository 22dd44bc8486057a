"""python.run: code run by this interpreter in isolated mode, through the shared runner."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devices.tools import ProcessResult, PythonTool, ToolContext, ToolFailed, ToolTimedOut

if TYPE_CHECKING:
    from conftest import ProgressLog

WAIT = 15.0


async def python(context: ToolContext, **args: object) -> ProcessResult:
    tool = PythonTool()
    return await asyncio.wait_for(tool.run(tool.parse_args(args), context), WAIT)


async def test_runs_isolated_in_the_workspace(
    context: ToolContext, workspace: Path, progress: ProgressLog
) -> None:
    code = "import os, sys; print(os.getcwd()); print(sys.flags.isolated)"
    result = await python(context, code=code)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [str(workspace), "1"]
    assert (str(workspace), "stdout") in progress.items


async def test_exception_fails_with_the_traceback_tail(context: ToolContext) -> None:
    with pytest.raises(ToolFailed) as caught:
        await python(context, code="print('before'); 1 / 0")
    assert caught.value.message.startswith("command exited with code 1: ")
    assert caught.value.message.endswith("ZeroDivisionError: division by zero")
    assert isinstance(caught.value.output, ProcessResult)
    assert caught.value.output.stdout == "before\n"


async def test_check_false_and_truncation(context: ToolContext) -> None:
    result = await python(
        context, code="import sys; print('x' * 5000); sys.exit(2)", check=False, max_output=100
    )
    assert result.returncode == 2
    assert result.truncated is True
    assert result.stdout == "x" * 100 + "\n[... truncated 4901 bytes ...]"


async def test_timeout(context: ToolContext) -> None:
    with pytest.raises(ToolTimedOut, match=r"timed out after 0\.3s"):
        await python(context, code="import time; time.sleep(30)", timeout=0.3)
