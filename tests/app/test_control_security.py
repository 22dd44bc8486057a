"""The control API under attack (issue 16): deeply nested and oversized frames before and
after authentication, failed-login rate limits, and large plans that must not stall the
server. A real served runtime on 127.0.0.1 with a real SQLite store; raw WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.control.token import read_token
from memory import Store
from protocol.json_limits import MAX_DEPTH
from tests.served import Served

WAIT = 30.0
DEEP_ARRAYS = "[" * 100_000 + "]" * 100_000
DEEP_OBJECTS = '{"a":' * 100_000 + "1" + "}" * 100_000


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with Served(store, tmp_path) as running:
            yield running


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        reply: dict[str, Any] = json.loads(await ws.recv())
    return reply


async def ask(ws: ClientConnection, request: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(request))
    while True:
        reply = await recv(ws)
        if reply.get("id") == request["id"] and reply["type"] != "event":
            return reply


@contextlib.asynccontextmanager
async def authenticated(served: Served) -> AsyncIterator[ClientConnection]:
    async with connect(served.control_url, max_size=None) as ws:
        reply = await ask(ws, {"type": "auth", "id": "a", "token": read_token(served.data_dir)})
        assert reply["type"] == "authenticated", reply
        yield ws


async def closed(ws: ClientConnection) -> int | None:
    """Wait for the server to close `ws`; its close code."""
    with pytest.raises(ConnectionClosed) as ended:
        async with asyncio.timeout(WAIT):
            await ws.recv()
    return ended.value.rcvd.code if ended.value.rcvd else None


# --------------------------------------------------------------- nesting and size


@pytest.mark.parametrize("frame", [DEEP_ARRAYS, DEEP_OBJECTS], ids=["arrays", "objects"])
async def test_deep_nesting_before_auth_is_answered_malformed_not_dropped(
    served: Served, frame: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with connect(served.control_url, max_size=None) as ws:
        await ws.send(frame)
        reply = await recv(ws)
        assert (reply["type"], reply["code"]) == ("error", "malformed"), reply
        assert "authenticate first" in reply["message"]
        assert "nested" in reply["message"] or "limit" in reply["message"]
        assert await closed(ws) == 1000  # closed as refused, not 1011 (an internal error)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize("frame", [DEEP_ARRAYS, DEEP_OBJECTS], ids=["arrays", "objects"])
async def test_deep_nesting_after_auth_is_answered_and_the_connection_stays(
    served: Served, frame: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with authenticated(served) as ws:
        await ws.send(frame)
        reply = await recv(ws)
        assert (reply["type"], reply["code"]) == ("error", "malformed"), reply
        assert f"nested more than {MAX_DEPTH} levels" in reply["message"]
        assert (await ask(ws, {"type": "devices", "id": "d"}))["type"] == "device_list"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_nesting_just_within_the_limit_is_read(served: Served) -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH - 3):
        deep = [deep]
    async with authenticated(served) as ws:
        reply = await ask(ws, {"type": "history", "id": "h", "status": deep})
        assert (reply["code"], reply["field"]) == ("malformed", "status")  # read, then refused


async def test_a_large_first_frame_is_refused_before_it_is_parsed(served: Served) -> None:
    from app.control.messages import MAX_AUTH_FRAME

    async with connect(served.control_url, max_size=None) as ws:
        padding = "x" * MAX_AUTH_FRAME
        await ws.send(json.dumps({"type": "auth", "id": "a", "token": "t", "client": padding}))
        reply = await recv(ws)
        assert (reply["code"], reply["id"]) == ("malformed", None)
        assert "exceeds the limit" in reply["message"]
        await closed(ws)


# --------------------------------------------------------------- failed logins


async def test_an_address_with_many_failed_logins_waits_even_with_the_right_token(
    served: Served,
) -> None:
    from app.control.login_limit import MAX_FAILURES as limit

    for attempt in range(limit):
        async with connect(served.control_url) as ws:
            reply = await ask(ws, {"type": "auth", "id": f"w{attempt}", "token": "orc1_guess"})
            assert reply["code"] == "unauthorized"
    async with connect(served.control_url) as ws:
        with contextlib.suppress(ConnectionClosed):  # the answer may come first
            await ws.send(
                json.dumps({"type": "auth", "id": "a", "token": read_token(served.data_dir)})
            )
        reply = await recv(ws)  # refused before its `auth` was read
        assert (reply["type"], reply["code"]) == ("error", "rate_limited"), reply
        assert "too many failed logins from 127.0.0.1" in reply["message"]
        await closed(ws)
