"""The `python.run` tool: Python code run by this device's interpreter in isolated mode."""

from __future__ import annotations

import sys

from pydantic import Field

from devices.tools.base import Tool, ToolContext
from devices.tools.process import (
    ProcessLimits,
    ProcessResult,
    confined,
    run_process,
    working_folder,
)


class PythonArgs(ProcessLimits):
    """Run Python code with `python -I` (isolated: no user site, no PYTHON* variables)."""

    code: str = Field(min_length=1, description="the program text, run as `python -I -c code`")
    cwd: str | None = Field(
        default=None, description="working folder relative to the workspace; default its root"
    )


class PythonTool(Tool[PythonArgs, ProcessResult]):
    name = "python.run"
    args_model = PythonArgs
    result_model = ProcessResult

    def __init__(
        self,
        *,
        interpreter: str = sys.executable,
        kill_grace: float = 2.0,
        drain_grace: float = 1.0,
    ) -> None:
        self._interpreter = interpreter
        self._kill_grace = kill_grace
        self._drain_grace = drain_grace

    async def run(self, args: PythonArgs, context: ToolContext) -> ProcessResult:
        with working_folder(context, args.cwd) as folder:
            command = [self._interpreter, "-I", "-u", "-c", args.code]  # -u: progress as printed
            argv, env, inherit = confined(context, command, folder, {})
            return await run_process(
                argv,
                cwd=folder.chdir,
                progress=context.progress,
                env=env,
                inherit_env=inherit,
                timeout=args.timeout,
                max_output=args.max_output,
                check=args.check,
                kill_grace=self._kill_grace,
                drain_grace=self._drain_grace,
            )
