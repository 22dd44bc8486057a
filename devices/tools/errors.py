"""Every error a tool can fail with; each message says what went wrong and what to do.

ToolError                  base: the tool could not do what was asked
├── PathOutsideWorkspace   a path is absolute, escapes with '..' or links outside
├── InvalidToolArgs        the arguments do not match the tool's args model
├── UnknownToolName        no tool of that name is offered
├── ToolDisabled           the device's policy turned the tool off
├── CommandNotAllowed      a shell command the policy's allow-list does not permit
├── UrlNotAllowed          a URL (or a redirect) the policy's HTTP allow-list does not permit
└── ToolFailed             the tool ran but failed; `output` holds what it produced
    └── ToolTimedOut       the tool ran past its timeout and was stopped
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ValidationError


class ToolError(Exception):
    """The tool could not do what was asked; `message` says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PathOutsideWorkspace(ToolError):
    """A path would reach outside the workspace every file access is confined to."""

    def __init__(self, path: str, workspace: Path, why: str, *, roots: Sequence[Path] = ()) -> None:
        if roots:
            listed = ", ".join(repr(str(root)) for root in roots)
            message = (
                f"path {path!r} is outside the workspace {str(workspace)!r} and the policy's "
                f"[fs] roots {listed} ({why}); use a path inside one of them, or add its "
                "folder to [fs] roots in the device's policy file"
            )
        else:
            message = (
                f"path {path!r} is outside the workspace {str(workspace)!r} ({why}); "
                "use a path relative to the workspace that stays inside it, or list its "
                "folder under [fs] roots in the device's policy file"
            )
        super().__init__(message)
        self.path = path
        self.workspace = workspace
        self.roots = tuple(roots)


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


class ToolDisabled(ToolError):
    """The device's policy turned this tool off; `source` is the policy file, if any."""

    def __init__(self, name: str, source: Path | None) -> None:
        where = str(source) if source is not None else "set by the program running it"
        super().__init__(
            f"tool {name!r} is disabled on this device by its policy ({where}); "
            "enable it under [tools]"
        )
        self.name = name
        self.source = source


class CommandNotAllowed(ToolError):
    """A shell command the policy's `[shell] allowed_commands` does not permit."""

    def __init__(self, command: str, why: str) -> None:
        shown = command if len(command) <= 200 else command[:200] + "…"
        super().__init__(
            f"command {shown!r} is not allowed on this device: {why}; "
            "run a single allowed program, or change [shell] allowed_commands in its policy"
        )
        self.command = command


class UrlNotAllowed(ToolError):
    """A URL (or a redirect to one) that the policy's `[http] allow` does not permit."""

    def __init__(self, url: str, why: str) -> None:
        shown = url if len(url) <= 300 else url[:300] + "…"
        super().__init__(
            f"URL {shown!r} is not allowed on this device: {why}; "
            'add a prefix for it under [http] allow in its policy (e.g. "https://host/path/")'
        )
        self.url = url
        self.why = why


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
