"""Bad frames against a real orchestrator socket on 127.0.0.1: each gets an `error` reply
naming the problem; fatal ones close that connection, and other devices never notice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.aip_dispatcher import AipDispatcher
from agents.fleet_store import StoreKeys, StoreLedger
from agents.orchestrator import Orchestrator
from memory import Store
from protocol.auth import enroll
from protocol.messages import DEFAULT_MAX_FRAME, HelloBody, Load, ToolDescription
from protocol.session import DeviceSession, ServerConfig, Welcomed
from protocol.tasks import TaskAssignment
from protocol.transport import AipServer, Connection, TransportClosed, connect_aip, serve_aip

WAIT = 20.0


class Server:
    def __init__(self, tmp: Path) -> None:
        self.store = Store.open_path(tmp / "orrery.db")
        self.tokens: dict[str, str] = {}
        for name in ("left", "right"):
            token, key = enroll(name)
            self.store.enroll_device(name, salt=key.salt, key=key.key)
            self.tokens[name] = token
        self.dispatcher = AipDispatcher(
            keys=StoreKeys(self.store), ledger=StoreLedger(self.store), config=ServerConfig()
        )
        self.orchestrator = Orchestrator(self.dispatcher)
        self.server: AipServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.port}"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    made = Server(tmp_path)
    made.server = await serve_aip(made.dispatcher.handle, "127.0.0.1", 0)
    yield made
    made.server.close()
    await made.server.wait_closed()
    made.store.close()


def hello(name: str, **changes: Any) -> dict[str, Any]:
    body = HelloBody(device=name, versions=[1]).model_dump(mode="json")
    body.update(changes)
    return {"v": 1, "type": "hello", "id": "h1", "ts": 0.0, "body": body}


async def reply(connection: Connection) -> dict[str, Any]:
    frame, binary = await asyncio.wait_for(connection.recv(), WAIT)
    assert not binary
    result: dict[str, Any] = json.loads(frame)
    return result


async def closed(connection: Connection) -> bool:
    try:
        await asyncio.wait_for(connection.recv(), WAIT)
    except TransportClosed:
        return True
    return False


async def authenticated(server: Server, name: str) -> tuple[DeviceSession, Connection]:
    session = DeviceSession(
        hello=HelloBody(
            device=name, versions=[1], max_tasks=2, tools=[ToolDescription(name="shell.run")]
        ),
        token=server.tokens[name],
        now=asyncio.get_running_loop().time,
    )
    connection = await connect_aip(server.url)
    session.start()
    while not any(isinstance(e, Welcomed) for e in session.events_received()):
        await connection.send_all(session.data_to_send())
        frame, binary = await asyncio.wait_for(connection.recv(), WAIT)
        session.receive_frame(frame, binary=binary)
    return session, connection


async def test_wrong_protocol_version_in_envelope_is_refused(server: Server) -> None:
    connection = await connect_aip(server.url)
    frame = hello("left")
    frame["v"] = 7
    await connection.send_all([json.dumps(frame)])
    answer = await reply(connection)
    assert answer["body"]["code"] == "unsupported_version"
    assert "7" in answer["body"]["message"]
    assert await closed(connection)


async def test_device_that_speaks_only_a_future_version_is_refused(server: Server) -> None:
    connection = await connect_aip(server.url)
    await connection.send_all([json.dumps(hello("left", versions=[2, 3]))])
    answer = await reply(connection)
    assert answer["body"]["code"] == "unsupported_version"
    assert await closed(connection)


async def test_replayed_proof_is_refused(server: Server) -> None:
    # Record a genuine handshake's proof ...
    first = await connect_aip(server.url)
    await first.send_all([json.dumps(hello("left"))])
    challenge = await reply(first)
    session = DeviceSession(
        hello=HelloBody(device="left", versions=[1]),
        token=server.tokens["left"],
        now=asyncio.get_running_loop().time,
    )
    session.start()
    session.data_to_send()
    session.receive_frame(json.dumps(challenge))
    (proof,) = session.data_to_send()
    await first.close()
    # ... and replay it on a new connection, which was sent a fresh nonce.
    second = await connect_aip(server.url)
    await second.send_all([json.dumps(hello("left"))])
    fresh = await reply(second)
    assert fresh["body"]["nonce"] != challenge["body"]["nonce"]
    await second.send_all([proof])
    answer = await reply(second)
    assert answer["body"]["code"] == "bad_proof"
    assert await closed(second)
    assert server.dispatcher.devices() == []


async def test_garbage_oversized_and_stray_binary_frames_leave_others_alone(
    server: Server,
) -> None:
    _, bystander = await authenticated(server, "right")
    session, connection = await authenticated(server, "left")

    await connection.send_all(["{this is not json"])
    garbage = await reply(connection)
    assert garbage["body"]["code"] == "malformed"
    assert "not JSON" in garbage["body"]["message"]

    await connection.send_all([json.dumps({"v": 1, "type": "task.result", "id": "x", "body": {}})])
    missing = await reply(connection)
    assert missing["body"]["code"] == "malformed"
    assert "constellation_id" in missing["body"]["message"]  # names the missing field

    big = json.dumps(
        {"v": 1, "type": "heartbeat", "id": "y", "body": {}, "pad": "x" * DEFAULT_MAX_FRAME}
    )
    await connection.send_all([big])
    oversized = await reply(connection)
    assert oversized["body"]["code"] == "too_large"

    await connection.send_all([b"\x00\x01stray bytes"])
    stray = await reply(connection)
    assert stray["body"]["code"] == "binary_unexpected"

    # Still connected and working: a heartbeat is accepted and a task can be assigned.
    session.send_heartbeat(Load(running=0))
    await connection.send_all(session.data_to_send())
    assert sorted(d.name for d in server.dispatcher.devices()) == ["left", "right"]
    server.dispatcher.assign(
        TaskAssignment(
            constellation_id="c", star_id="s", attempt=1, device="right", tool="shell.run"
        )
    )
    assigned = await reply(bystander)
    assert assigned["type"] == "task.assign"
    await connection.close()
    await bystander.close()


async def test_messages_before_the_handshake_close_the_connection(server: Server) -> None:
    connection = await connect_aip(server.url)
    await connection.send_all(
        [json.dumps({"v": 1, "type": "heartbeat", "id": "z", "ts": 0.0, "body": {}})]
    )
    answer = await reply(connection)
    assert answer["body"]["code"] == "unexpected"
    assert "hello" in answer["body"]["message"]
    assert await closed(connection)
