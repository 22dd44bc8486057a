"""`orrery mcp --server URL`: Orrery as an MCP server on standard input and output.

An MCP client (an assistant, an IDE) starts this command and talks MCP to it on
stdin/stdout; each tool call goes to the `orrery serve` at `--server` through the control
API (`app.mcp_server`). Nothing else is written to standard output; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio

from app.commands.clients import remote
from app.exit_codes import EXIT_OK


async def main(options: argparse.Namespace, stop: asyncio.Event) -> int:
    from app.mcp_server import serve_stdio

    async with remote(options) as client:
        await serve_stdio(client, stop)
    return EXIT_OK
