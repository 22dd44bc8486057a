"""`McpServer`: one MCP server of a device's policy, started, watched and restarted.

A `command` server runs as a child of the device (through `devices/mcp/launch.py`, so
it dies with the device even when the device is killed) and speaks MCP on stdio; a `url`
server is reached over streamable HTTP. Both go through the official `mcp` SDK's client.

The supervisor keeps one connection up: it starts the server, initialises the session,
lists the tools (the first listing is what the device offers), then waits until the
server's output ends (it exited) or the device stops. A server that exits, or cannot be
started, is started again after an exponential backoff with jitter (`devices.backoff`);
a call in flight when it exits fails with `McpServerGone`. Its standard error goes to
`<log_dir>/<name>.log` (0600, in a 0700 folder: it may tell what the server saw).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import random
import sys
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectSendStream
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp.types import CallToolResult, Implementation, PaginatedRequestParams

from devices.backoff import Backoff
from devices.tools.errors import ToolFailed
from devices.tools.mcp_policy import McpServerPolicy, mcp_tool_name
from protocol.private import open_private, private_dir

__all__ = ["LAUNCHER", "McpServer", "McpServerGone", "McpToolSpec"]

log = logging.getLogger("orrery.device.mcp")

LAUNCHER = Path(__file__).with_name("launch.py")
MAX_TOOLS = 256
"""Tools taken from one server's listing; the rest are left out (with a warning)."""
_TOOL_NAME_CHARS = 64  # protocol.messages.ToolDescription.name
_CLIENT = Implementation(name="orrery-device", version="0.1.0")
_TRANSPORT_ERRORS = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    OSError,
    httpx2.TransportError,
)


class McpServerGone(ToolFailed):
    """The server is not running (it exited, mid-call or before); it is being restarted."""

    def __init__(self, server: str, tool: str, why: str) -> None:
        super().__init__(
            f"MCP server {server!r} {why} during the call of {tool!r}; the device is "
            "restarting it, so the star can be retried"
        )
        self.server = server


@dataclass(frozen=True)
class McpToolSpec:
    """One tool a server listed: its MCP name, a description and its input JSON schema."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def device_name(self) -> str:
        return mcp_tool_name(self.server, self.name)


def usable_tool_name(server: str, name: str) -> str | None:
    """Why `name` cannot be offered as a device tool, or None when it can."""
    if not name or not (name[0].isalpha() or name[0] == "_"):
        return "its name does not start with a letter or '_'"
    if not all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        return "its name has characters other than ASCII letters, digits, '_' and '-'"
    if len(mcp_tool_name(server, name)) > _TOOL_NAME_CHARS:
        return f"mcp.{server}.<name> would be longer than {_TOOL_NAME_CHARS} characters"
    return None


class McpServer:
    """Supervises one configured server; `start()`, `wait_listed()`, `call()`, `aclose()`."""

    def __init__(
        self,
        name: str,
        config: McpServerPolicy,
        *,
        workspace: Path,
        log_dir: Path,
        backoff: Backoff | None = None,
        healthy_after: float = 30.0,
    ) -> None:
        self.name = name
        self.config = config
        self.workspace = workspace
        self.log_path = log_dir / f"{name}.log"
        self._backoff = backoff if backoff is not None else Backoff(initial=0.5, maximum=30.0)
        self._healthy_after = healthy_after
        self._rng = random.Random()
        self._stop = asyncio.Event()
        self._listed = asyncio.Event()
        self._up = asyncio.Event()
        self._session: ClientSession | None = None
        self._died: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.tools: list[McpToolSpec] | None = None
        """The first listing (what the device offers); None until the server has listed."""
        self.starts = 0
        """How many times a connection was set up and listed its tools."""
        self.last_failure = "not started yet"

    # -- lifecycle

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"MCP server {self.name!r} is already supervised")
        private_dir(self.log_path.parent)
        self._task = asyncio.create_task(self._supervise(), name=f"mcp {self.name}")

    async def wait_listed(self, within: float) -> bool:
        """Whether the server listed its tools within `within` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._listed.wait()
        return self._listed.is_set()

    async def wait_up(self, within: float) -> bool:
        """Whether a connection is up (now or within `within` seconds)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._up.wait()
        return self._up.is_set()

    @property
    def stderr_note(self) -> str:
        """Where its standard error goes, for log lines (nothing for a `url` server)."""
        return f" (its stderr: {self.log_path})" if self.config.command is not None else ""

    @property
    def up(self) -> bool:
        return self._session is not None

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop the server (close its input, then terminate it) and the supervision."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- calls

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> CallToolResult:
        """Call `tool`; `McpServerGone` if the server exits during the call, or is down and
        not up again within its `startup_timeout` (a call made while it restarts waits)."""
        if self._session is None and not self._stop.is_set():
            await self.wait_up(self.config.startup_timeout)
        session, died = self._session, self._died
        if session is None or died is None:
            raise McpServerGone(self.name, tool, f"is not running ({self.last_failure})")
        calling = asyncio.ensure_future(session.call_tool(tool, dict(arguments)))
        dying = asyncio.ensure_future(died.wait())
        try:
            await asyncio.wait({calling, dying}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dying.cancel()
            if not calling.done():
                calling.cancel()
                await asyncio.gather(calling, return_exceptions=True)
        gone = "exited" if self.config.command is not None else "was lost"
        if died.is_set() and (calling.cancelled() or calling.exception() is not None):
            raise McpServerGone(self.name, tool, gone)
        try:
            return calling.result()
        except MCPError as error:
            if not (died.is_set() or "closed" in str(error).lower()):
                raise ToolFailed(
                    f"MCP server {self.name!r} refused the call of {tool!r}: {error}"
                ) from None
            why = gone
        except _TRANSPORT_ERRORS as error:
            why = f"was lost ({type(error).__name__})"
        except Exception as error:  # an answer the SDK could not use (e.g. off its schema)
            raise ToolFailed(
                f"MCP server {self.name!r} gave an answer to {tool!r} that cannot be used: "
                f"{type(error).__name__}: {str(error)[:300]}"
            ) from None
        died.set()  # the connection is broken: the supervisor starts (or dials) it again
        raise McpServerGone(self.name, tool, why)

    # -- supervision

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            started = loop.time()
            try:
                why = await self._connect_once()
            except Exception as error:  # any failure to start or talk: restart it
                why = _reason(error)
            finally:
                self._session = None
                self._up.clear()
            if self._stop.is_set():
                break
            self.last_failure = why
            if loop.time() - started >= self._healthy_after:
                self._backoff.reset()
            delay = self._backoff.next_delay(self._rng)
            log.warning(
                "MCP server %s: %s; %s again in %.2fs%s",
                self.name,
                why,
                "starting it" if self.config.command is not None else "dialling it",
                delay,
                self.stderr_note,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        log.info("MCP server %s: stopped", self.name)

    async def _connect_once(self) -> str:
        """One run of the server: why it ended."""
        async with contextlib.AsyncExitStack() as stack:
            if self.config.command is not None:
                errlog = stack.enter_context(
                    io.TextIOWrapper(open_private(self.log_path, "ab"), encoding="utf-8")
                )
                read, write = await stack.enter_async_context(
                    stdio_client(self._stdio_parameters(), errlog=errlog)
                )
            else:
                assert self.config.url is not None
                read, write = await stack.enter_async_context(
                    streamable_http_client(self.config.url)
                )
            died = asyncio.Event()
            relayed, relay_out = anyio.create_memory_object_stream[SessionMessage | Exception](0)
            relay = asyncio.create_task(_relay(read, relayed, died), name=f"mcp {self.name} relay")
            stack.push_async_callback(_cancel, relay)
            session = await stack.enter_async_context(
                ClientSession(relay_out, write, client_info=_CLIENT)
            )
            try:
                async with asyncio.timeout(self.config.startup_timeout):
                    await session.initialize()
                    listing = await self._list(session)
            except TimeoutError:
                return (
                    f"did not start and list its tools within {self.config.startup_timeout:g}s "
                    "(startup_timeout)"
                )
            if self.tools is None:
                self.tools = listing
                self._say_listing(listing)
            self.starts += 1
            self._session, self._died = session, died
            self._up.set()
            self._listed.set()
            log.info("MCP server %s: up (%d tools)", self.name, len(listing))
            stopping = asyncio.ensure_future(self._stop.wait())
            dying = asyncio.ensure_future(died.wait())
            try:
                await asyncio.wait({stopping, dying}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                dying.cancel()
            self._session = None
            self._up.clear()
            return "stopping" if self._stop.is_set() else "exited"
        raise AssertionError("unreachable")  # pragma: no cover

    def _stdio_parameters(self) -> StdioServerParameters:
        command = self.config.command
        assert command is not None
        return StdioServerParameters(
            command=sys.executable,
            args=["-I", "-S", str(LAUNCHER), str(os.getpid()), command, *self.config.args],
            env=dict(self.config.env),
            cwd=self.config.cwd or self.workspace,
        )

    async def _list(self, session: ClientSession) -> list[McpToolSpec]:
        specs: list[McpToolSpec] = []
        cursor: str | None = None
        while True:
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            for tool in page.tools:
                why = usable_tool_name(self.name, tool.name)
                if why is not None:
                    log.warning("MCP server %s: tool %r not offered: %s", self.name, tool.name, why)
                    continue
                specs.append(
                    McpToolSpec(
                        server=self.name,
                        name=tool.name,
                        description=(tool.description or tool.title or "").strip(),
                        input_schema=dict(tool.input_schema),
                    )
                )
            cursor = page.next_cursor
            if not cursor or len(specs) >= MAX_TOOLS:
                break
        if len(specs) > MAX_TOOLS:
            log.warning("MCP server %s: only its first %d tools offered", self.name, MAX_TOOLS)
        return specs[:MAX_TOOLS]

    def _say_listing(self, listing: list[McpToolSpec]) -> None:
        names = ", ".join(spec.device_name for spec in listing) or "none"
        log.info("MCP server %s: tools %s", self.name, names)


async def _relay(
    read: AsyncIterable[SessionMessage | Exception],
    out: MemoryObjectSendStream[SessionMessage | Exception],
    died: asyncio.Event,
) -> None:
    """Pass the server's messages to the session; set `died` when they end (it exited)."""
    try:
        async with out:
            async for message in read:
                await out.send(message)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
        pass
    finally:
        died.set()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _reason(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, FileNotFoundError | PermissionError):
        return f"cannot be started: {error.strerror or error}"
    text = str(error).strip().splitlines()
    return f"failed: {type(error).__name__}{': ' + text[0][:300] if text else ''}"
