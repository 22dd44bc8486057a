"""The control API as a raw WebSocket client meets it: a real served runtime on 127.0.0.1, a
real SQLite store in tmp_path, an in-process device agent over real AIP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.control.token import TOKEN_FILE, read_token
from app.runtime import ApprovalPolicy, approve_all, ask_a_person
from memory import EventRecordIn, Store
from tests.app.in_process_device import in_process_device
from tests.served import Served

WAIT = 20.0

PLAN = """
name: two-steps
rationale: write, then read back
stars:
  - id: write
    tool: fs.write
    args: {path: note.txt, content: hello}
  - id: read
    after: [write]
    tool: fs.read
    args: {path: note.txt}
"""

GUARDED = """
name: guarded
stars:
  - id: risky
    tool: shell.run
    args: {cmd: echo ran}
"""

SLOW = """
name: slow
stars:
  - id: nap
    tool: shell.run
    args: {cmd: sleep 30}
"""


def shell_needs_approval(tool: str, args: BaseModel) -> str | None:
    return f"run {args.model_dump().get('cmd')!r}" if tool == "shell.run" else None


class Fixture:
    def __init__(self, served: Served, data_dir: Path) -> None:
        self.served = served
        self.data_dir = data_dir
        self.token = read_token(data_dir)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, policy: ApprovalPolicy = ask_a_person) -> AsyncIterator[Fixture]:
    """A served runtime with one device whose shell calls need approval."""
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with (
            Served(store, tmp_path, approval_policy=policy) as running,
            in_process_device(
                running,
                store,
                tmp_path,
                labels=["linux"],
                needs_approval=shell_needs_approval,
                within=WAIT,
            ),
        ):
            yield Fixture(running, tmp_path)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Fixture]:
    async with serving(tmp_path) as fixture:
        yield fixture


class Raw:
    """A bare control connection: send dicts, read replies as dicts."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            reply: dict[str, Any] = json.loads(await self.ws.recv())
        return reply

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return the reply with its id (skipping events)."""
        await self.send(message)
        while True:
            reply = await self.recv()
            if reply["id"] == message.get("id") and reply["type"] != "event":
                return reply

    async def events_until_finished(self, subscription: str) -> list[dict[str, Any]]:
        events = []
        while True:
            reply = await self.recv()
            if reply["type"] == "event" and reply["id"] == subscription:
                events.append(reply)
                if reply["event"]["type"] == "constellation.finished":
                    return events


@contextlib.asynccontextmanager
async def raw(fixture: Fixture, token: str | None = None) -> AsyncIterator[Raw]:
    async with connect(fixture.served.control_url) as ws:
        client = Raw(ws)
        reply = await client.ask({"type": "auth", "id": "a", "token": token or fixture.token})
        assert reply["type"] == "authenticated", reply
        yield client


async def test_the_token_is_made_on_first_start_with_mode_0600(served: Fixture) -> None:
    path = served.data_dir / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert served.token.startswith("orc1_")
    assert served.served.control_url.endswith("/control/v1")


async def test_a_wrong_token_is_refused_with_a_reason_and_the_connection_closed(
    served: Fixture,
) -> None:
    async with connect(served.served.control_url) as ws:
        await ws.send(json.dumps({"type": "auth", "id": "a", "token": "orc1_wrong"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert reply["type"] == "error"
        assert reply["code"] == "unauthorized"
        assert reply["field"] == "token"
        assert "control.token" in reply["message"]
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)


async def test_a_request_before_auth_is_refused(served: Fixture) -> None:
    async with connect(served.served.control_url) as ws:
        await ws.send(json.dumps({"type": "history", "id": "h"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert (reply["code"], reply["id"]) == ("unauthorized", "h")
        assert "authenticate first" in reply["message"]
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)


async def test_other_paths_are_still_404(served: Fixture) -> None:
    url = served.served.control_url.replace("/control/v1", "/nothing")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 404


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        ({"type": "subscribe", "id": "m1", "constellation": ""}, "malformed", "constellation"),
        ({"type": "subscribe", "id": "m2", "constellation": "c", "after_seq": -1}, "malformed",
         "after_seq"),
        ({"type": "history", "id": "m3", "limit": "many"}, "malformed", "limit"),
        ({"type": "submit", "id": "m4"}, "malformed", "request"),
        ({"type": "cancel", "id": "m5", "constellation": "c", "bogus": 1}, "malformed", "bogus"),
        ({"type": "launch", "id": "m6"}, "unknown_command", "type"),
        ({"id": "m7"}, "malformed", "type"),
        ({"type": "submit", "id": "m8", "plan": "name: x\nstars: []\n"}, "invalid_plan", "plan"),
        ({"type": "submit", "id": "m9", "request": "tidy my disk"}, "no_planner", "request"),
        ({"type": "constellation", "id": "m10", "constellation": "nope"},
         "unknown_constellation", "constellation"),
        ({"type": "approve", "id": "m11", "request": "nope", "approved": True},
         "unknown_approval", "request"),
    ],
)  # fmt: skip
async def test_a_bad_request_is_answered_with_an_error_naming_the_field(
    served: Fixture, request_: dict[str, Any], code: str, field: str
) -> None:
    async with raw(served) as client:
        reply = await client.ask(request_)
        assert reply["type"] == "error", reply
        assert (reply["code"], reply["field"]) == (code, field), reply
        if code in ("malformed", "unknown_command"):
            assert reply["message"].startswith(f"{field}: "), reply
        # The connection survives: the next request is answered.
        assert (await client.ask({"type": "history", "id": "after"}))["type"] == "history_list"


async def test_frames_that_are_not_requests_are_answered_and_the_connection_survives(
    served: Fixture,
) -> None:
    async with raw(served) as client:
        await client.send("{not json")
        reply = await client.recv()
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "malformed", None)
        await client.send("[1, 2]")
        assert "JSON object" in (await client.recv())["message"]
        assert (await client.ask({"type": "devices", "id": "d"}))["type"] == "device_list"


async def test_an_invalid_plan_names_its_line(served: Fixture) -> None:
    async with raw(served) as client:
        plan = "name: bad\nstars:\n  - id: a\n    tool: no.such_tool\n"
        reply = await client.ask({"type": "submit", "id": "s", "plan": plan, "source": "p.yaml"})
        assert reply["code"] == "invalid_plan"
        assert reply["message"].startswith("p.yaml:4:")
        assert "no.such_tool" in reply["message"]


async def test_submit_a_plan_and_stream_its_events_from_the_start(served: Fixture) -> None:
    async with raw(served) as client:
        submitted = await client.ask({"type": "submit", "id": "s", "plan": PLAN})
        assert submitted["type"] == "submitted", submitted
        assert (submitted["name"], submitted["stars"]) == ("two-steps", 2)
        assert submitted["rationale"] == "write, then read back"
        cid = submitted["constellation"]
        subscribed = await client.ask({"type": "subscribe", "id": "w", "constellation": cid})
        assert subscribed["type"] == "subscribed"
        events = await client.events_until_finished("w")
    kinds = [e["event"]["type"] for e in events]
    assert kinds[0] == "constellation.submitted"  # replayed from the start
    assert kinds[-1] == "constellation.finished"
    assert events[-1]["event"]["status"] == "succeeded"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))  # in order, none twice
    read = next(e["event"] for e in events if e["event"].get("star_id") == "read"
                and e["event"]["type"] == "star.finished")  # fmt: skip
    assert read["status"] == "succeeded"
    # The run is in the store, and `after_seq` replays only what came later.
    async with raw(served) as client:
        later = await client.ask(
            {"type": "subscribe", "id": "x", "constellation": cid, "after_seq": seqs[-3]}
        )
        assert later["status"] == "succeeded"
        tail = await client.events_until_finished("x")
        assert [e["seq"] for e in tail] == seqs[-2:]
        history = await client.ask({"type": "history", "id": "h"})
        assert [c["id"] for c in history["constellations"]] == [cid]
        assert history["constellations"][0]["stars"] == 2
        snapshot = await client.ask({"type": "constellation", "id": "c", "constellation": cid})
        assert snapshot["rationale"] == "write, then read back"
        assert snapshot["constellation"]["stars"]["read"]["status"] == "succeeded"


async def test_cancel_ends_a_running_constellation(tmp_path: Path) -> None:
    async with serving(tmp_path, approve_all("test")) as served, raw(served) as client:
        cid = (await client.ask({"type": "submit", "id": "s", "plan": SLOW}))["constellation"]
        await client.ask({"type": "subscribe", "id": "w", "constellation": cid})
        while True:  # wait until the star runs on the device
            message = await client.recv()
            if message["type"] == "event" and message["event"]["type"] == "star.started":
                break
        cancelled = await client.ask(
            {"type": "cancel", "id": "k", "constellation": cid, "reason": "enough"}
        )
        assert cancelled["type"] == "cancelled"
        assert cancelled["status"] == "cancelled"
        events = await client.events_until_finished("w")
    assert events[-1]["event"]["status"] == "cancelled"


async def test_a_pending_approval_is_listed_and_approved(served: Fixture) -> None:
    async with raw(served) as client:
        cid = (await client.ask({"type": "submit", "id": "s", "plan": GUARDED}))["constellation"]
        await client.ask({"type": "subscribe", "id": "w", "constellation": cid})
        while True:
            message = await client.recv()
            if message["type"] == "event" and message["event"]["type"] == "approval.needed":
                request = message["event"]["request"]
                break
        listed = await client.ask({"type": "approvals", "id": "l"})
        assert [a["request"] for a in listed["approvals"]] == [request]
        assert listed["approvals"][0]["tool"] == "shell.run"
        decided = await client.ask(
            {"type": "approve", "id": "y", "request": request, "approved": True, "reason": "ok"}
        )
        assert decided == {"type": "decided", "id": "y", "request": request, "approved": True}
        events = await client.events_until_finished("w")
    given = next(e["event"] for e in events if e["event"]["type"] == "approval.given")
    assert given["approved"] is True
    assert given["by"].startswith("control: ")
    assert events[-1]["event"]["status"] == "succeeded"


async def test_devices_lists_the_enrolled_device_with_its_tools(served: Fixture) -> None:
    async with raw(served) as client:
        reply = await client.ask({"type": "devices", "id": "d"})
    (device,) = reply["devices"]
    assert (device["name"], device["connected"], device["labels"]) == ("worker", True, ["linux"])
    assert "fs.write" in device["tools"]


async def test_a_star_no_device_can_run_fails_fast_and_says_so(served: Fixture) -> None:
    plan = "name: gpu\nstars:\n  - id: big\n    on: {labels: [gpu]}\n    tool: sys.info\n"
    async with raw(served) as client:
        cid = (await client.ask({"type": "submit", "id": "s", "plan": plan}))["constellation"]
        await client.ask({"type": "subscribe", "id": "w", "constellation": cid})
        finished = (await client.events_until_finished("w"))[-1]["event"]
    assert finished["status"] == "failed"
    assert finished["no_capable_device"] is True
    assert "lacks label(s) gpu" in finished["reason"]


async def test_a_run_whose_orchestrator_stopped_is_replayed_then_reported_interrupted(
    tmp_path: Path,
) -> None:
    with Store.open_path(tmp_path / "orrery.db") as store:
        # What an orchestrator that died mid-run left behind: a running row, two events.
        store.save_constellation("c-old", name="old", status="running", version=1, snapshot={})
        store.append_events(
            [
                EventRecordIn("c-old", 1, "constellation.submitted", 1.0,
                              {"type": "constellation.submitted", "constellation_id": "c-old",
                               "seq": 1, "ts": 1.0, "name": "old", "version": 1, "stars": 1}),
                EventRecordIn("c-old", 2, "star.ready", 2.0,
                              {"type": "star.ready", "constellation_id": "c-old", "seq": 2,
                               "ts": 2.0, "star_id": "s"}),
            ]
        )  # fmt: skip
        async with (
            Served(store, tmp_path) as second,
            raw(Fixture(second, tmp_path)) as client,
        ):
            reply = await client.ask({"type": "subscribe", "id": "w", "constellation": "c-old"})
            assert reply["status"] == "running"
            replayed = [await client.recv(), await client.recv()]
            assert [m["seq"] for m in replayed] == [1, 2]
            interrupted = await client.recv()
            assert (interrupted["type"], interrupted["id"]) == ("error", "w")
            assert interrupted["code"] == "interrupted"
