"""Fuzzing the control API (issue 16): whatever an authenticated client sends -- random
text and bytes, random JSON, valid requests with random fields, deep nesting -- the
server answers with a valid message, never `internal`, logs no traceback, and keeps the
connection and itself up. A real served runtime on 127.0.0.1, in its own thread, driven
by hypothesis through a plain WebSocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from app.control.messages import REQUEST_TYPES, ErrorReply, parse_server_message
from app.control.token import read_token
from memory import Store
from tests.served import Served

WAIT = 30.0

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class ServerThread:
    """A served runtime in a thread of its own (its own event loop) until `stop`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        with Store.open_path(self.data_dir / "orrery.db") as store:
            async with Served(store, self.data_dir) as served:
                self.url = served.control_url
                self._ready.set()
                await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(WAIT), "the server did not start"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    running = ServerThread(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def login(server: ServerThread) -> Iterator[ClientConnection]:
    with connect(server.url, max_size=None, open_timeout=WAIT) as ws:
        ws.send(json.dumps({"type": "auth", "id": "a", "token": read_token(server.data_dir)}))
        assert json.loads(ws.recv(timeout=WAIT))["type"] == "authenticated"
        yield ws


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "x" * 300, "c1", "orc1_x", "laptop", "a" * 65]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["id", "type", "token", "client", "plan", "request", "source", "constellation",
          "after_seq", "types", "reason", "star", "device", "name", "approved", "limit",
          "status", "proposal"]  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request of a known type, with some of the known fields set to random values."""
    request: dict[str, Any] = {"type": draw(st.sampled_from(REQUEST_TYPES))}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        request[name] = draw(json_values)
    if draw(st.booleans()):
        request["id"] = draw(st.text(min_size=1, max_size=20).filter(lambda i: "probe" not in i))
    return request


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    requests().map(json.dumps),
    st.integers(150, 5000).map(deep),
    st.just('{"type": "submit", "id": "s", "plan": "' + "[" * 3000 + '"}'),
)


def test_no_frame_breaks_a_control_connection_or_the_server(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    @FUZZ
    @given(sent=st.lists(frames, min_size=1, max_size=4))
    def exchange(sent: list[str | bytes]) -> None:
        with login(server) as ws:
            for number, frame in enumerate(sent):
                ws.send(frame)
                probe = f"probe-{number}"
                ws.send(json.dumps({"type": "devices", "id": probe}))
                while True:  # every answer until the probe's, each a valid server message
                    message = parse_server_message(ws.recv(timeout=WAIT))
                    if isinstance(message, ErrorReply):
                        assert message.code != "internal", message.message
                    if message.id == probe and message.type != "event":
                        assert message.type == "device_list", message
                        break

    exchange()
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
    with login(server) as ws:  # the server is still up, and still answers
        ws.send(json.dumps({"type": "history", "id": "h"}))
        assert parse_server_message(ws.recv(timeout=WAIT)).type == "history_list"
