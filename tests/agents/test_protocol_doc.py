"""What docs/protocol.md says the reference orchestrator does, checked against the real
dispatcher on 127.0.0.1 with a real SQLite store: the worked example's frames, replayed
by a device that lost the `ack`, and a device that announces its platform as `darwin`."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import protocol.session
from agents.aip_dispatcher import AipDispatcher
from agents.constellation import PlanSpec, build_constellation
from agents.fleet_store import StoreKeys, StoreLedger
from agents.orchestrator import Orchestrator
from memory import Store
from protocol.auth import derive_key, enroll
from protocol.messages import HelloBody, TaskAssign, ToolDescription, parse_message
from protocol.session import AssignmentReceived, DeviceSession, Welcomed
from protocol.transport import AipServer, Connection, connect_aip, serve_aip

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
WAIT = 20.0


def worked_example() -> tuple[str, dict[str, str]]:
    """The worked example's text and its frames by message type."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Worked example")
    section = text[start : text.index("\n## ", start + 1)]
    frames = re.findall(r"```json\n(.*?)\n```", section, re.DOTALL)
    return section, {json.loads(frame)["type"]: frame for frame in frames}


@dataclass
class Orchestra:
    store: Store
    dispatcher: AipDispatcher
    server: AipServer

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"


@pytest.fixture
async def orchestra(tmp_path: Path) -> AsyncIterator[Orchestra]:
    store = Store.open_path(tmp_path / "orrery.db")
    dispatcher = AipDispatcher(keys=StoreKeys(store), ledger=StoreLedger(store))
    server = await serve_aip(dispatcher.handle, "127.0.0.1", 0)
    yield Orchestra(store, dispatcher, server)
    server.close()
    await server.wait_closed()
    store.close()


async def receive(connection: Connection) -> list[dict[str, Any]]:
    """The envelopes of the next frame (a batch is unpacked)."""
    frame, _ = await asyncio.wait_for(connection.recv(), WAIT)
    data = json.loads(frame)
    return data if isinstance(data, list) else [data]


async def test_a_result_resent_after_a_lost_ack_is_acked_again_as_the_example_says(
    orchestra: Orchestra, monkeypatch: pytest.MonkeyPatch
) -> None:
    section, frames = worked_example()
    assert "acks it again without acting on it" in section
    token = re.findall(r"`(orr1_[A-Za-z0-9_-]+)`", section)[0]
    challenge = json.loads(frames["challenge"])["body"]
    key = derive_key(token, challenge["salt"])
    orchestra.store.enroll_device("laptop", salt=challenge["salt"], key=key.hex())
    monkeypatch.setattr(protocol.session, "new_nonce", lambda: challenge["nonce"])

    # Frames 1-9 as in the example; the device never reads the ack (frame 10).
    first = await connect_aip(orchestra.url)
    await first.send_all([frames["hello"]])
    assert [m["type"] for m in await receive(first)] == ["challenge"]
    await first.send_all([frames["proof"]])
    assert [m["type"] for m in await receive(first)] == ["welcome"]
    assign = parse_message(frames["task.assign"])
    assert isinstance(assign, TaskAssign)
    orchestra.dispatcher.assign(assign.body)
    assert [m["type"] for m in await receive(first)] == ["task.assign"]
    await first.send_all([frames[kind] for kind in ("task.accept", "task.progress", "task.result")])
    (ack,) = await receive(first)
    assert ack["type"] == "ack"
    await first.close("the ack was lost")

    # Reconnecting with the result still in the outbox, as the example describes.
    resumed = json.loads(frames["hello"])
    task = {"constellation_id": "3fa2c9d81b4e", "star_id": "usage", "attempt": 1}
    resumed["body"]["resume"] = {"running": [], "unacked": [task]}
    second = await connect_aip(orchestra.url)
    await second.send_all([json.dumps(resumed)])
    assert [m["type"] for m in await receive(second)] == ["challenge"]
    await second.send_all([frames["proof"]])
    (welcome,) = await receive(second)
    assert welcome["body"]["known_unacked"] == []  # the reference leaves it empty
    result = json.loads(frames["task.result"])
    result["id"] = "resent-result-1"
    await second.send_all([json.dumps(result)])
    (again,) = await receive(second)
    assert again["type"] == "ack", again  # not `not_your_task`
    assert again["body"] == {"ref": "resent-result-1", "task": task}
    assert len(orchestra.store.results("3fa2c9d81b4e")) == 1
    await second.close()


async def test_a_device_announcing_darwin_runs_stars_that_ask_for_macos(
    orchestra: Orchestra,
) -> None:
    token, key = enroll("mac")
    orchestra.store.enroll_device("mac", salt=key.salt, key=key.key)
    session = DeviceSession(
        hello=HelloBody(
            device="mac", versions=[1], platform="darwin", tools=[ToolDescription(name="echo.say")]
        ),
        token=token,
        now=asyncio.get_running_loop().time,
    )
    connection = await connect_aip(orchestra.url)
    session.start()
    while not any(isinstance(e, Welcomed) for e in session.events_received()):
        await connection.send_all(session.data_to_send())
        frame, binary = await asyncio.wait_for(connection.recv(), WAIT)
        session.receive_frame(frame, binary=binary)
    assert [d.platform for d in orchestra.dispatcher.devices()] == ["macos"]

    orchestrator = Orchestrator(orchestra.dispatcher)
    plan = {"name": "mac", "stars": [{"id": "s", "tool": "echo.say", "on": {"platform": "macos"}}]}
    handle = orchestrator.submit(build_constellation(PlanSpec.model_validate(plan)))
    frame, _ = await asyncio.wait_for(connection.recv(), WAIT)
    session.receive_frame(frame)
    (assigned,) = [e for e in session.events_received() if isinstance(e, AssignmentReceived)]
    assert (assigned.assignment.star_id, assigned.assignment.device) == ("s", "mac")
    handle.cancel("test over")
    await connection.close()


def test_the_one_connection_rule_is_the_dispatchers() -> None:
    from agents.aip_dispatcher import LIVE_WITHIN

    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Reconnecting")
    reconnecting = text[start : text.index("\n## ", start + 1)]
    assert (
        f"within {LIVE_WITHIN} \N{MULTIPLICATION SIGN} `heartbeat_interval` seconds" in reconnecting
    )
    assert "MUST refuse the new connection\n    with `already_connected`" in reconnecting
    assert "MUST NOT treat it as permanent" in reconnecting
