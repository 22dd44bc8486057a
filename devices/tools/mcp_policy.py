"""`[mcp]` in a device's policy: the MCP servers whose tools the device offers.

    [mcp.servers.time]                    # offers mcp.time.<tool> for each tool it lists
    command = "mcp-server-time"           # a program on PATH, or its absolute path
    args = ["--local-timezone", "UTC"]
    env = { TZ = "UTC" }                  # added to a small default environment
    call_timeout = 60                     # seconds one call may take (and the star's timeout)
    max_output_chars = 65536              # text kept of one result; the rest is cut, marked
    [mcp.servers.search]
    url = "http://127.0.0.1:8808/mcp"     # a streamable-HTTP server, only under allow_urls
    [mcp]
    allow_urls = ["http://127.0.0.1:8808/"]

Server names are short identifiers (they become part of tool names); each server has
either a `command` (started and supervised by the device, speaking MCP on stdio) or a
`url`. Plain data, like the rest of `devices.tools.policy`; `devices.mcp` runs it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from devices.tools.urls import parse_http_url as _parse_http_url

__all__ = ["MCP_PREFIX", "McpPolicy", "McpServerPolicy", "mcp_tool_name", "parse_url_prefix"]

MCP_PREFIX = "mcp."
SERVER_NAME = re.compile(r"[a-z][a-z0-9_]{0,15}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def mcp_tool_name(server: str, tool: str) -> str:
    """The device tool name of MCP server `server`'s tool `tool`: `mcp.<server>.<tool>`."""
    return f"{MCP_PREFIX}{server}.{tool}"


def _server_name(name: str) -> str:
    if not SERVER_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a usable MCP server name; use 1 to 16 lower-case letters, "
            "digits or '_', starting with a letter (it becomes part of tool names)"
        )
    return name


def _command(command: str) -> str:
    if not command.strip() or "\x00" in command:
        raise ValueError("give the program to start, like 'mcp-server-time'")
    if command != command.strip():
        raise ValueError(f"{command!r} has spaces around it; give the program alone, no arguments")
    return command


def _env(env: dict[str, str]) -> dict[str, str]:
    bad = [name for name in env if not _ENV_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))}: not environment variable names")
    return env


def _absolute(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_absolute():
        raise ValueError(f"{str(path)!r} is not an absolute path; give the folder's full path")
    return path


def parse_url_prefix(entry: str) -> str:
    """`entry` when it is a usable http(s) URL prefix, else ValueError (the `[http]` rules)."""
    try:
        _parse_http_url(entry, prefix=True)
    except ValueError as error:
        raise ValueError(f"{entry!r} is not a usable URL prefix: {error}") from None
    return entry


ServerName = Annotated[str, AfterValidator(_server_name)]


class McpServerPolicy(BaseModel):
    """`[mcp.servers.NAME]`: one MCP server, started by `command` or reached at `url`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: Annotated[str, AfterValidator(_command)] | None = Field(
        default=None, description="the program to start (on PATH, or an absolute path)"
    )
    args: tuple[str, ...] = Field(default=(), description="its arguments")
    env: Annotated[dict[str, str], AfterValidator(_env)] = Field(
        default_factory=dict, description="environment variables added for it"
    )
    cwd: Annotated[Path, AfterValidator(_absolute)] | None = Field(
        default=None, description="the folder it starts in (default: the device's workspace)"
    )
    url: str | None = Field(default=None, description="a streamable-HTTP server's URL")
    call_timeout: float = Field(default=60.0, gt=0, le=3600, description="seconds per call")
    startup_timeout: float = Field(
        default=30.0, gt=0, le=600, description="seconds to start and list its tools"
    )
    max_output_chars: int = Field(
        default=65_536, ge=256, le=4 * 1024 * 1024, description="text kept of one result"
    )

    @model_validator(mode="after")
    def _one_way(self) -> McpServerPolicy:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (a program to start) or url, not both or neither")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("args, env and cwd are for a started server (command), not a url")
        return self


class McpPolicy(BaseModel):
    """`[mcp]`: the servers, and the URL prefixes a `url` server may be under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: dict[ServerName, McpServerPolicy] = Field(
        default_factory=dict, description="server name -> how to reach it"
    )
    allow_urls: tuple[Annotated[str, AfterValidator(parse_url_prefix)], ...] = Field(
        default=(), description="URL prefixes a url server may be under (default: none)"
    )

    @model_validator(mode="after")
    def _urls_allowed(self) -> McpPolicy:
        prefixes = [_parse_http_url(entry, prefix=True) for entry in self.allow_urls]
        for name, server in self.servers.items():
            if server.url is None:
                continue
            try:
                target = _parse_http_url(server.url)
            except ValueError as error:
                raise ValueError(f"servers.{name}.url {server.url!r}: {error}") from None
            if not any(target.under(prefix) for prefix in prefixes):
                listed = ", ".join(self.allow_urls) or "none"
                raise ValueError(
                    f"servers.{name}.url {server.url!r} is under none of [mcp] allow_urls "
                    f"({listed}); add a prefix for it there"
                )
        return self

    def server_of(self, tool: str) -> str | None:
        """The configured server a `mcp.<server>.<tool>` name belongs to, else None."""
        if not tool.startswith(MCP_PREFIX):
            return None
        server = tool[len(MCP_PREFIX) :].split(".", 1)[0]
        return server if server in self.servers else None
