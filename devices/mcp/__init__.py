"""MCP servers as device tools: `McpServers` starts the servers a device's policy lists
(`[mcp]`, `devices.tools.mcp_policy`), supervises them (`devices.mcp.server`), and gives
each listed tool as a device `Tool` named `mcp.<server>.<tool>` (`devices.mcp.tool`).

    async with McpServers(policy.mcp, workspace=..., log_dir=...) as servers:
        tools = device_tools(policy, mcp=servers)
        ...

Tools are what each server listed the first time it came up, within its
`startup_timeout`; a server that was not up by then is retried in the background but its
tools are offered only from the device's next start (the `hello` is sent once per
connection and tools are fixed for a run). Tools whose input schema cannot check
arguments are not offered, with a warning saying why.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from types import TracebackType

from devices.mcp.server import McpServer, McpServerGone, McpToolSpec
from devices.mcp.tool import McpResult, McpTool, mcp_tool, schema_problem
from devices.tools.mcp_policy import McpPolicy

__all__ = [
    "MAX_SCHEMAS_CHARS",
    "MAX_SCHEMA_CHARS",
    "MAX_TOOLS",
    "McpResult",
    "McpServer",
    "McpServerGone",
    "McpServers",
    "McpTool",
    "McpToolSpec",
]

log = logging.getLogger("orrery.device.mcp")

MAX_TOOLS = 200
"""MCP tools one device offers (a `hello` carries at most 256 tools, built-ins included)."""
MAX_SCHEMA_CHARS = 32_768
"""The largest input schema (as JSON) of a tool that is offered."""
MAX_SCHEMAS_CHARS = 512 * 1024
"""All offered MCP tools' schemas together (a `hello` frame is at most 1 MiB)."""


def unconfined_servers_warning(names: list[str]) -> str:
    """What a device says at start about its MCP servers (they are never sandboxed)."""
    return (
        f"MCP servers {', '.join(names)} run with this device user's full rights, outside "
        "any [sandbox]: their tools do whatever the servers do; list only servers you "
        "trust, and disable or gate their risky tools in [tools] and [approval] "
        "(docs/mcp.md)"
    )


class McpServers:
    """The servers of one `[mcp]` policy section, started together and stopped together."""

    def __init__(self, policy: McpPolicy, *, workspace: Path, log_dir: Path) -> None:
        self.policy = policy
        self.servers = {
            name: McpServer(name, config, workspace=workspace, log_dir=log_dir)
            for name, config in sorted(policy.servers.items())
        }

    async def start(self) -> None:
        """Start every server and wait (each up to its `startup_timeout`) for its tools.
        Says (a WARNING) that the servers run with the device user's rights."""
        if self.servers:
            log.warning("%s", unconfined_servers_warning(list(self.servers)))
        for server in self.servers.values():
            server.start()
        listed = await asyncio.gather(
            *(s.wait_listed(s.config.startup_timeout) for s in self.servers.values())
        )
        for server, ok in zip(self.servers.values(), listed, strict=True):
            if not ok:
                log.warning(
                    "MCP server %s did not list its tools within %gs (%s); its tools are not "
                    "offered until the device starts again%s",
                    server.name,
                    server.config.startup_timeout,
                    server.last_failure,
                    server.stderr_note,
                )

    @property
    def unlisted(self) -> list[str]:
        """Servers whose tools are not known (they did not start in time)."""
        return [name for name, server in self.servers.items() if server.tools is None]

    def tools(self) -> list[McpTool]:
        """A device tool for every usable tool the servers listed, within the `hello`'s
        bounds: at most `MAX_TOOLS` tools, each schema at most `MAX_SCHEMA_CHARS` of JSON,
        all of them at most `MAX_SCHEMAS_CHARS` (the rest are left out, with a warning)."""
        offered: list[McpTool] = []
        total = 0
        for server in self.servers.values():
            for spec in server.tools or ():
                size = len(json.dumps(spec.input_schema, default=str))
                problem = schema_problem(spec.input_schema)
                if problem is None and size > MAX_SCHEMA_CHARS:
                    problem = (
                        f"its input schema is {size} characters of JSON, over {MAX_SCHEMA_CHARS}"
                    )
                elif problem is None and len(offered) >= MAX_TOOLS:
                    problem = f"the device offers at most {MAX_TOOLS} MCP tools"
                elif problem is None and total + size > MAX_SCHEMAS_CHARS:
                    problem = f"the MCP tools' schemas would be over {MAX_SCHEMAS_CHARS} characters"
                if problem is not None:
                    log.warning("MCP tool %s not offered: %s", spec.device_name, problem)
                    continue
                total += size
                offered.append(mcp_tool(server, spec))
        return offered

    async def aclose(self) -> None:
        await asyncio.gather(*(server.aclose() for server in self.servers.values()))

    async def __aenter__(self) -> McpServers:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
