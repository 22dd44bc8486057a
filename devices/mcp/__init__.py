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
import logging
from pathlib import Path
from types import TracebackType

from devices.mcp.server import McpServer, McpServerGone, McpToolSpec
from devices.mcp.tool import McpResult, McpTool, mcp_tool, schema_problem
from devices.tools.mcp_policy import McpPolicy

__all__ = [
    "McpResult",
    "McpServer",
    "McpServerGone",
    "McpServers",
    "McpTool",
    "McpToolSpec",
]

log = logging.getLogger("orrery.device.mcp")


class McpServers:
    """The servers of one `[mcp]` policy section, started together and stopped together."""

    def __init__(self, policy: McpPolicy, *, workspace: Path, log_dir: Path) -> None:
        self.policy = policy
        self.servers = {
            name: McpServer(name, config, workspace=workspace, log_dir=log_dir)
            for name, config in sorted(policy.servers.items())
        }

    async def start(self) -> None:
        """Start every server and wait (each up to its `startup_timeout`) for its tools."""
        for server in self.servers.values():
            server.start()
        listed = await asyncio.gather(
            *(s.wait_listed(s.config.startup_timeout) for s in self.servers.values())
        )
        for server, ok in zip(self.servers.values(), listed, strict=True):
            if not ok:
                log.warning(
                    "MCP server %s did not list its tools within %gs (%s); its tools are not "
                    "offered until the device starts again (its stderr: %s)",
                    server.name,
                    server.config.startup_timeout,
                    server.last_failure,
                    server.log_path,
                )

    @property
    def unlisted(self) -> list[str]:
        """Servers whose tools are not known (they did not start in time)."""
        return [name for name, server in self.servers.items() if server.tools is None]

    def tools(self) -> list[McpTool]:
        """A device tool for every usable tool the servers listed."""
        offered: list[McpTool] = []
        for server in self.servers.values():
            for spec in server.tools or ():
                problem = schema_problem(spec.input_schema)
                if problem is not None:
                    log.warning("MCP tool %s not offered: %s", spec.device_name, problem)
                    continue
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
