"""A device's policy: which tools it offers and what they may touch, read from a TOML file.

    [tools]
    disabled = ["python.run"]            # or: enabled = ["shell.run", "fs.read"]
    [fs]
    roots = ["/srv/data"]                # folders besides the workspace the tools may use
    [shell]
    allowed_commands = ["ls", "make"]    # programs shell.run may start (default: any)
    [http]
    allow = ["https://example.org/api/"] # URL prefixes http.get may fetch (default: none)
    [approval]
    required = ["shell.run", "fs.write"] # calls a person must approve first
    [sandbox]
    mode = "bwrap"                       # run shell.run and python.run inside bubblewrap
    network = false                      # and without network (the default)
    [mcp.servers.time]                   # MCP servers whose tools it offers as mcp.time.*
    command = "mcp-server-time"          # (`devices.tools.mcp_policy`, docs/mcp.md)

Every key is optional; `DevicePolicy()` is the policy without a file: every tool enabled,
file tools confined to the workspace, any shell command, no URL, no approvals, no
sandbox. The checks apply to what the tools are asked to do (paths, working folders, the
program a command starts, URLs); they are not an operating-system sandbox: without
`[sandbox]`, a command or Python code that is allowed to run can do whatever the
device's user can (read their files, the data dir, reach the network). So a shell
allow-list means little while python.run is enabled, and it should list no program that
runs others (sh, env, xargs, find -exec, make, git with its hooks...). `[sandbox] mode =
"bwrap"` is the operating-system confinement (`devices.tools.sandbox`).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import tomllib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from devices.tools.errors import CommandNotAllowed, ToolDisabled, UrlNotAllowed
from devices.tools.mcp_policy import McpPolicy
from devices.tools.urls import parse_http_url as _parse_http_url

__all__ = [
    "ApprovalPolicy",
    "DevicePolicy",
    "FsPolicy",
    "HttpPolicy",
    "PolicyError",
    "SandboxPolicy",
    "ShellPolicy",
    "ToolsPolicy",
    "default_policy",
    "describe_call",
]

_TOOL_NAME = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)*")
_SUMMARY_CHARS = 1_000

# Shell syntax that starts or chains other programs; refused when an allow-list is set.
_SHELL_OPERATORS = (
    (";", "';' (a command separator)"),
    ("&", "'&' or '&&' (background or chained commands)"),
    ("|", "'|' or '||' (pipes or chained commands)"),
    ("`", "backticks (command substitution)"),
    ("$(", "'$(' (command substitution)"),
    ("<", "'<' (a redirection)"),
    (">", "'>' (a redirection)"),
    ("\n", "a newline (a command separator)"),
    ("\r", "a carriage return"),
)


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file, the key and the fix."""

    def __init__(self, message: str, *, source: Path | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.key = key


def _where(source: Path | None) -> str:
    return str(source) if source is not None else "device policy"


def _tool_name(name: str) -> str:
    if not _TOOL_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a tool name (tool names look like 'shell.run')")
    return name


def _absolute_folder(root: Path) -> Path:
    root = root.expanduser()
    if not root.is_absolute():
        raise ValueError(f"{str(root)!r} is not an absolute path; give the folder's full path")
    return root


def _program(program: str) -> str:
    if not program or any(c.isspace() or ord(c) < 32 for c in program):
        raise ValueError(
            f"{program!r} is not a program name; list programs (like 'ls'), "
            "not commands with arguments"
        )
    return program


def _url_prefix(entry: str) -> str:
    try:
        _parse_http_url(entry, prefix=True)
    except ValueError as error:
        raise ValueError(f"{entry!r} is not a usable URL prefix: {error}") from None
    return entry


ToolName = Annotated[str, AfterValidator(_tool_name)]
Folder = Annotated[Path, AfterValidator(_absolute_folder)]
Program = Annotated[str, AfterValidator(_program)]
UrlPrefix = Annotated[str, AfterValidator(_url_prefix)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolsPolicy(_Section):
    """`[tools]`: which tools the device offers."""

    enabled: tuple[ToolName, ...] | None = Field(
        default=None, description="the only tools offered; leave out to offer every tool"
    )
    disabled: tuple[ToolName, ...] = Field(default=(), description="tools never offered")

    @model_validator(mode="after")
    def _not_both(self) -> ToolsPolicy:
        both = sorted(set(self.enabled or ()) & set(self.disabled))
        if both:
            raise ValueError(
                f"{', '.join(map(repr, both))} listed both in enabled and in disabled; "
                "keep each tool in one of them"
            )
        return self


class FsPolicy(_Section):
    """`[fs]`: folders besides the workspace that file tools and working folders may use."""

    roots: tuple[Folder, ...] = Field(
        default=(), description="absolute folders ('~' is expanded); default: none"
    )


class ShellPolicy(_Section):
    """`[shell]`: the programs shell.run may start (None: any)."""

    allowed_commands: tuple[Program, ...] | None = Field(
        default=None, description="program names or paths, as a command's first word"
    )

    def check(self, command: str, env: Mapping[str, str] | None = None) -> None:
        """Raise `CommandNotAllowed` unless `command` (with `env`) may run under the list.

        With an allow-list, the command must be one simple command: its first word (as
        `shlex.split` reads it) is a listed program, and it has no shell syntax that runs
        or chains other programs (operators, substitutions, redirections; refused even
        inside quotes) and no added environment variables (PATH, LD_PRELOAD and the like
        would make a listed program run another one).
        """
        if self.allowed_commands is None:
            return
        for operator, label in _SHELL_OPERATORS:
            if operator in command:
                raise CommandNotAllowed(
                    command,
                    f"{label} is refused when [shell] allowed_commands is set "
                    "(even inside quotes), since it could run other programs",
                )
        try:
            words = shlex.split(command)
        except ValueError as error:
            raise CommandNotAllowed(command, f"it does not parse ({error})") from None
        if not words:
            raise CommandNotAllowed(command, "it names no program")
        if words[0] not in self.allowed_commands:
            listed = ", ".join(self.allowed_commands) or "nothing"
            raise CommandNotAllowed(
                command,
                f"its program {words[0]!r} is not in [shell] allowed_commands ({listed})",
            )
        if env:
            raise CommandNotAllowed(
                command,
                f"env ({', '.join(sorted(env))}) is refused when [shell] allowed_commands is "
                "set, since variables like PATH or LD_PRELOAD could run other programs",
            )


class HttpPolicy(_Section):
    """`[http]`: URL prefixes http.get may fetch (default: none)."""

    allow: tuple[UrlPrefix, ...] = Field(
        default=(), description="prefixes like 'https://example.org/api/' (scheme, host, port)"
    )

    def check(self, url: str) -> str:
        """The URL to fetch for `url` (normalised), or `UrlNotAllowed` saying why not.

        Allowed: same scheme, host (compared as written, no DNS) and port (defaults
        filled in) as an entry, and a path at or below the entry's path; an entry whose
        path does not end in '/' allows that path and the paths below it.
        """
        try:
            target = _parse_http_url(url)
        except ValueError as error:
            raise UrlNotAllowed(url, str(error)) from None
        if not self.allow:
            raise UrlNotAllowed(url, "no URL is allowed ([http] allow is empty)")
        if any(target.under(_parse_http_url(entry, prefix=True)) for entry in self.allow):
            return target.url
        raise UrlNotAllowed(url, f"it is under none of [http] allow ({', '.join(self.allow)})")


class ApprovalPolicy(_Section):
    """`[approval]`: tools whose calls a person must approve before they run."""

    required: tuple[ToolName, ...] = Field(default=(), description="tool names")


class SandboxPolicy(_Section):
    """`[sandbox]`: how shell.run and python.run are confined by the operating system."""

    mode: Literal["none", "bwrap"] = Field(
        default="none",
        description="'bwrap': inside bubblewrap (only the workspace writable, the data dir "
        "hidden); 'none': with the device user's full rights",
    )
    network: bool = Field(default=False, description="with bwrap: whether they reach the network")


class DevicePolicy(BaseModel):
    """What a device offers and allows; `DevicePolicy()` is the default (see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: ToolsPolicy = Field(default_factory=ToolsPolicy)
    fs: FsPolicy = Field(default_factory=FsPolicy)
    shell: ShellPolicy = Field(default_factory=ShellPolicy)
    http: HttpPolicy = Field(default_factory=HttpPolicy)
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    sandbox: SandboxPolicy = Field(default_factory=SandboxPolicy)
    mcp: McpPolicy = Field(default_factory=McpPolicy)

    _source: Path | None = PrivateAttr(default=None)

    @classmethod
    def load(cls, path: Path | str) -> DevicePolicy:
        """Read a TOML policy file, or raise `PolicyError` naming the file and the bad key."""
        path = Path(path)
        try:
            with path.open("rb") as file:
                data = tomllib.load(file)
        except OSError as error:
            raise PolicyError(
                f"{path}: cannot read the policy file: {error.strerror or error}; "
                "check the path given for it",
                source=path,
            ) from None
        except ValueError as error:  # TOMLDecodeError, or not UTF-8
            raise PolicyError(
                f"{path}: not valid TOML: {error}; fix the file's syntax", source=path
            ) from None
        return cls.from_mapping(data, source=path)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: Path | None = None) -> DevicePolicy:
        """Validate parsed TOML (`source` names the file in errors and refusals)."""
        try:
            policy = cls.model_validate(data)
        except ValidationError as error:
            raise _policy_error(error, source) from None
        policy._source = source
        return policy

    @property
    def source(self) -> Path | None:
        """The file this policy was read from; None for a policy made in code."""
        return self._source

    # -- tools

    def is_enabled(self, tool: str) -> bool:
        enabled = self.tools.enabled
        return (enabled is None or tool in enabled) and tool not in self.tools.disabled

    def check_enabled(self, tool: str) -> None:
        """Raise `ToolDisabled` when the policy turns `tool` off."""
        if not self.is_enabled(tool):
            raise ToolDisabled(tool, self._source)

    def check_tools(self, offered: Iterable[str], *, unlisted: Iterable[str] = ()) -> None:
        """Raise `PolicyError` for a name in `[tools]` or `[approval]` that is not among the
        `offered` tools (a misspelt `disabled` entry would otherwise leave the tool on).

        `unlisted` names MCP servers whose tools are not known yet (they did not start):
        names under `mcp.<server>.` for them pass, as the tools cannot be checked.
        """
        known = list(offered)
        waiting = tuple(f"mcp.{server}." for server in unlisted)
        for key, names in (
            ("tools.enabled", self.tools.enabled or ()),
            ("tools.disabled", self.tools.disabled),
            ("approval.required", self.approval.required),
        ):
            unknown = [name for name in names if name not in known and not name.startswith(waiting)]
            if unknown:
                raise PolicyError(
                    f"{_where(self._source)}: {key}: no tool {', '.join(map(repr, unknown))} "
                    f"on this device; it offers: {', '.join(known) or 'nothing'}",
                    source=self._source,
                    key=key,
                )

    # -- approvals

    def needs_approval(self, tool: str, args: BaseModel | Mapping[str, Any]) -> bool:
        """Whether a call of `tool` must be approved by a person before it runs."""
        del args  # the decision is per tool for now
        return tool in self.approval.required

    def describe(self, tool: str, args: BaseModel | Mapping[str, Any]) -> str:
        """A one-line summary of the call, for the person asked to approve it."""
        return describe_call(tool, args)

    def approval_rule(self, tool: str, args: BaseModel) -> str | None:
        """`describe` when the call needs approval, else None (`devices.agent.ApprovalRule`)."""
        return self.describe(tool, args) if self.needs_approval(tool, args) else None


@functools.cache
def default_policy() -> DevicePolicy:
    """The policy of a device without a policy file (shared: policies are immutable)."""
    return DevicePolicy()


# -- errors


def _policy_error(error: ValidationError, source: Path | None) -> PolicyError:
    problems: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        problems.append((_key(loc), _problem(item["type"], item["msg"], loc)))
    text = "; ".join(f"{key}: {problem}" for key, problem in problems)
    return PolicyError(f"{_where(source)}: {text}", source=source, key=problems[0][0])


def _key(loc: tuple[int | str, ...]) -> str:
    """A location as written in TOML terms: `tools.disabled[0]`."""
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return key.lstrip(".") or "(top level)"


def _problem(kind: str, message: str, loc: tuple[int | str, ...]) -> str:
    if kind == "extra_forbidden":
        fields = _known_keys(loc[:-1])
        return f"unknown key; the keys here are: {', '.join(fields)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a table, like [{'.'.join(map(str, loc))}]"
    if kind in ("tuple_type", "list_type"):
        return 'should be a list, like ["a", "b"]'
    return message.removeprefix("Value error, ")


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = DevicePolicy
    parts = list(loc)
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        annotation = field.annotation if field is not None else None
        if typing.get_origin(annotation) is dict and parts:  # [mcp.servers.NAME]
            parts.pop(0)
            annotation = typing.get_args(annotation)[1]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


# -- approval summaries


def _clip(text: str, limit: int = _SUMMARY_CHARS) -> str:
    flat = text.replace("\r", "").replace("\n", " ⏎ ")
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]} [… {len(flat) - limit} more characters not shown]"


def describe_call(tool: str, args: BaseModel | Mapping[str, Any]) -> str:
    """`tool: what it would do`, one line; long values end in a marker, never silently."""
    values = args.model_dump(mode="json") if isinstance(args, BaseModel) else dict(args)
    if tool == "shell.run" and "cmd" in values:
        where = f" (in {values['cwd']})" if values.get("cwd") else ""
        env = values.get("env") or {}
        with_env = f" with {', '.join(f'{k}={v}' for k, v in env.items())}" if env else ""
        return _clip(f"shell.run{where}{with_env}: {values['cmd']}")
    if tool == "python.run" and "code" in values:
        return _clip(f"python.run: {values['code']}")
    if tool == "fs.write" and "path" in values:
        size = len(str(values.get("content", "")).encode())
        verb = "append" if values.get("append") else "write"
        return _clip(f"fs.write: {verb} {size} bytes to {values['path']}")
    if tool == "http.get" and "url" in values:
        return _clip(f"http.get: {values['url']}")
    if "path" in values:
        return _clip(f"{tool}: {values['path']}")
    return _clip(f"{tool}: {json.dumps(values, sort_keys=True, default=str)}")
