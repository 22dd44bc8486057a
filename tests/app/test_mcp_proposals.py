"""`orrery mcp`'s look before it runs: an MCP client (the official SDK's, connected in
process) proposes a request in words, sees its stars, discards or starts it, and gets
Orrery's reason as a tool error for a proposal that no longer waits. A real runtime
(real SQLite, this machine in process with real tools), the app's planner over a
scripted model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.types import CallToolResult, TextContent

from app.mcp_server import orrery_mcp
from app.runtime import InProcessDevice, Runtime
from memory import Store
from tests.app.scripted_planner import NOTE_PLAN, NOTE_REQUEST, scripted_planner

WAIT = 30.0


def structured(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    content = result.structured_content
    return content.get("result", content) if set(content) == {"result"} else content


def error_text(result: CallToolResult) -> str:
    assert result.is_error
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_an_mcp_client_proposes_looks_and_starts_or_discards(tmp_path: Path) -> None:
    note = tmp_path / "workspace" / "note.txt"
    with Store.open_path(tmp_path / "orrery.db") as store:
        device = InProcessDevice(tmp_path / "workspace", name="here")
        planner = scripted_planner(NOTE_PLAN, NOTE_PLAN)
        async with (
            Runtime(store, [device], planner=planner) as runtime,
            Client(orrery_mcp(runtime)) as client,
        ):
            listed = {tool.name for tool in (await client.list_tools()).tools}
            assert {"propose", "start", "discard"} <= listed

            dropped = structured(await client.call_tool("propose", {"request": NOTE_REQUEST}))
            assert [(s["id"], s["device"], s["tool"], s["what"]) for s in dropped["stars"]] == [
                ("s1", "here", "fs.write", "note.txt"),
                ("s2", "here", "fs.read", "note.txt"),
            ]
            assert dropped["rationale"] == "write the note, then read it back"
            pid = dropped["proposal_id"]
            assert structured(await client.call_tool("discard", {"proposal_id": pid})) == (
                f"discarded {pid}"
            )
            late = await client.call_tool("start", {"proposal_id": pid})
            assert "was discarded; propose the request again" in error_text(late)
            assert runtime.orchestrator.constellations() == []
            assert not await asyncio.to_thread(note.exists)

            kept = structured(await client.call_tool("propose", {"request": NOTE_REQUEST}))
            started = structured(
                await client.call_tool("start", {"proposal_id": kept["proposal_id"]})
            )
            assert started["constellation_id"] == kept["constellation_id"]
            waited = structured(
                await client.call_tool(
                    "wait",
                    {"constellation_id": started["constellation_id"], "timeout_seconds": WAIT},
                )
            )
            assert waited["status"] == "succeeded", waited
            assert await asyncio.to_thread(note.read_text) == "hello"
