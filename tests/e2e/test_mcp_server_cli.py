"""`orrery mcp` driven by the official MCP SDK's stdio client, against real processes:
`orrery serve`, one `orrery device` whose policy wants shell.run approved, and `orrery
mcp --server URL` started by the SDK's client as an MCP client starts any server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from tests.e2e.processes import enroll, start_device, start_serve, stop, wait_for_devices

pytestmark = pytest.mark.slow

WAIT = 60.0
PLAN = """
name: through mcp
stars:
  - id: greet
    tool: shell.run
    on: helper
    args: {cmd: echo hello from an MCP client}
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    home = tmp_path / "orchestrator"
    serve, aip, control = start_serve(home)
    device_home = tmp_path / "device"
    device_home.mkdir()
    policy = device_home / "policy.toml"
    policy.write_text('[approval]\nrequired = ["shell.run"]\n')
    device = start_device(
        device_home, aip, "helper", enroll(home, "helper"), "--policy", str(policy)
    )
    try:
        wait_for_devices(control, home, ["helper"])
        yield home, control
    finally:
        stop([device, serve])


def structured(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    content = result.structured_content
    return content.get("result", content) if set(content) == {"result"} else content


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


def test_an_mcp_client_submits_a_plan_approves_its_call_waits_and_reads_the_result(
    served: tuple[Path, str],
) -> None:
    home, control = served
    command = StdioServerParameters(
        command=sys.executable,
        args=["-m", "app.cli", "--data-dir", str(home), "mcp", "--server", control],
        cwd=str(Path.cwd()),
    )

    async def drive() -> None:
        async with stdio_client(command) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            listed = {tool.name for tool in (await session.list_tools()).tools}
            assert listed == {
                "submit",
                "propose",
                "start",
                "discard",
                "status",
                "wait",
                "cancel",
                "approvals",
                "approve",
                "devices",
                "history",
            }
            devices = structured(await session.call_tool("devices", {}))
            helper = next(device for device in devices if device["name"] == "helper")
            assert helper["connected"] is True
            assert "shell.run" in helper["tools"]

            bad = await session.call_tool("submit", {"plan": "name: x\nstars: []\n"})
            assert "stars" in error_text(bad)
            neither = await session.call_tool("submit", {})
            assert "give exactly one" in error_text(neither)

            submitted = structured(await session.call_tool("submit", {"plan": PLAN}))
            constellation = submitted["constellation_id"]
            assert submitted["stars"] == 1

            pending: list[dict[str, Any]] = []
            async with asyncio.timeout(WAIT):
                while not pending:  # the device asks once the star starts
                    pending = structured(await session.call_tool("approvals", {}))
                    if not pending:
                        await asyncio.sleep(0.1)
            assert pending[0]["tool"] == "shell.run"
            assert "echo hello from an MCP client" in pending[0]["summary"]
            answer = await session.call_tool("approve", {"request": pending[0]["request"]})
            assert not answer.is_error, answer.content

            waited = structured(
                await session.call_tool(
                    "wait", {"constellation_id": constellation, "timeout_seconds": WAIT}
                )
            )
            assert waited["finished"] is True
            assert waited["status"] == "succeeded", waited
            (greet,) = waited["stars"]
            assert greet["device"] == "helper"
            assert greet["output"]["stdout"] == "hello from an MCP client\n"

            now = structured(await session.call_tool("status", {"constellation_id": constellation}))
            assert now["status"] == "succeeded"
            history = structured(await session.call_tool("history", {"limit": 5}))
            assert history[0]["id"] == constellation
            unknown = await session.call_tool("status", {"constellation_id": "no-such-run"})
            assert "no-such-run" in error_text(unknown)

            # A run waiting on a person is cancelled from the client.
            waiting = structured(
                await session.call_tool("submit", {"plan": PLAN.replace("through", "stopped")})
            )
            cancelled = await session.call_tool(
                "cancel", {"constellation_id": waiting["constellation_id"]}
            )
            assert structured(cancelled) == "cancelled"
            ended = structured(
                await session.call_tool(
                    "wait", {"constellation_id": waiting["constellation_id"], "timeout_seconds": 30}
                )
            )
            assert ended["status"] == "cancelled"
            assert ended["finished"] is True

    asyncio.run(drive())


def test_orrery_mcp_needs_a_server(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "--data-dir", str(tmp_path), "mcp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--server" in done.stderr
    assert done.stdout == ""  # nothing on stdout, the MCP channel
