"""The `shell.run` tool: a /bin/sh command in the workspace."""

from __future__ import annotations

from pydantic import Field, field_validator

from devices.tools.base import Tool, ToolContext
from devices.tools.process import (
    ProcessLimits,
    ProcessResult,
    confined,
    run_process,
    working_folder,
)


class ShellArgs(ProcessLimits):
    """Run a command with `/bin/sh -c` in the workspace (or a folder inside it).

    When the device's policy lists `[shell] allowed_commands`, only a single command
    whose program is listed may run (no `;`, `&&`, `|`, substitutions or redirections).
    """

    cmd: str = Field(min_length=1, description="the shell command line")
    cwd: str | None = Field(
        default=None, description="working folder relative to the workspace; default its root"
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="variables added to the device's environment"
    )

    @field_validator("env")
    @classmethod
    def _names_are_valid(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise ValueError(f"{name!r} is not a valid environment variable (name or value)")
        return env


class ShellTool(Tool[ShellArgs, ProcessResult]):
    name = "shell.run"
    args_model = ShellArgs
    result_model = ProcessResult

    def __init__(
        self, *, shell: str = "/bin/sh", kill_grace: float = 2.0, drain_grace: float = 1.0
    ) -> None:
        self._shell = shell
        self._kill_grace = kill_grace
        self._drain_grace = drain_grace

    async def run(self, args: ShellArgs, context: ToolContext) -> ProcessResult:
        context.policy.shell.check(args.cmd, args.env)
        with working_folder(context, args.cwd) as folder:
            argv, env, inherit = confined(context, [self._shell, "-c", args.cmd], folder, args.env)
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
