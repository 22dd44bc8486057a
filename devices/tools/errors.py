"""Every error a tool can fail with; each message says what went wrong and what to do.

ToolError                  base: the tool could not do what was asked
├── PathOutsideWorkspace   a path is absolute, escapes with '..' or links outside
├── InvalidToolArgs        the arguments do not match the tool's args model
├── UnknownToolName        no tool of that name is offered
└── ToolFailed             the tool ran but failed; `output` holds what it produced
    └── ToolTimedOut       the tool ran past its timeout and was stopped
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ValidationError


class ToolError(Exception):
    """The tool could not do what was asked; `message` says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PathOutsideWorkspace(ToolError):
    """A path would reach outside the workspace every file access is confined to."""

    def __init__(self, path: str, workspace: Path, why: str) -> None:
        super().__init__(
            f"path {path!r} is outside the workspace {str(workspace)!r} ({why}); "
            "use a path relative to the workspace that stays inside it"
        )
        self.path = path
        self.workspace = workspace


class InvalidToolArgs(ToolError):
    """The arguments do not validate; `fields` names the offending ones."""

    def __init__(self, message: str, *, tool: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.tool = tool
        self.fields = fields

    @classmethod
    def from_validation_error(cls, tool: str, error: ValidationError) -> InvalidToolArgs:
        fields: list[str] = []
        problems: list[str] = []
        for item in error.errors(include_url=False):
            field = ".".join(str(part) for part in item["loc"]) or "(arguments)"
            fields.append(field)
            problems.append(f"{field}: {item['msg']}")
        return cls(
            f"invalid arguments for {tool}: {'; '.join(problems)}; "
            "fix them to match the tool's JSON schema",
            tool=tool,
            fields=tuple(fields),
        )


class UnknownToolName(ToolError):
    """No tool of that name is offered (by a registry or by a named device)."""

    def __init__(self, name: str, available: Iterable[str], *, device: str | None = None) -> None:
        offered = ", ".join(sorted(available)) or "nothing"
        where = f"device {device!r} has" if device is not None else "there is"
        super().__init__(f"{where} no tool {name!r}; it offers: {offered}")
        self.name = name
        self.device = device


class ToolFailed(ToolError):
    """The tool ran and failed; `output` is its result model (e.g. a command's output)."""

    def __init__(self, message: str, *, output: BaseModel | None = None) -> None:
        super().__init__(message)
        self.output = output


class ToolTimedOut(ToolFailed):
    """The tool ran past its timeout and was stopped; `output` holds what it produced."""

    def __init__(self, timeout: float, *, output: BaseModel | None = None) -> None:
        super().__init__(f"timed out after {timeout:g}s", output=output)
        self.timeout = timeout
