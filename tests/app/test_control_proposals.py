"""Look before it runs, through the control API: `propose` plans a request in words and
nothing touches a device until `start`; `discard` drops it; a proposal that does not wait
(started, discarded, expired, never made) is refused with `unknown_proposal` saying why.
A real served runtime on 127.0.0.1 (real SQLite, this machine in process with real tools),
the app's planner over a scripted model; raw WebSocket frames, the Python client, and the
runtime in process take the same path."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from app.client import Orrery
from app.control.token import read_token
from app.errors import RequestRejected
from app.interface import OrreryApi
from app.runtime import InProcessDevice, Runtime
from app.runtime.proposals import ProposalBook
from memory import Store
from tests.app.scripted_planner import NOTE_PLAN, NOTE_REQUEST, scripted_planner
from tests.served import Served

WAIT = 20.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Raw:
    """A bare control connection: send dicts, read the reply to each (events skipped)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.ws.send(json.dumps(message))
        async with asyncio.timeout(WAIT):
            while True:
                reply: dict[str, Any] = json.loads(await self.ws.recv())
                if reply["id"] == message["id"] and reply["type"] != "event":
                    return reply

    async def finished(self, subscription: str) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                reply: dict[str, Any] = json.loads(await self.ws.recv())
                event = reply.get("event") or {}
                if reply["id"] == subscription and event.get("type") == "constellation.finished":
                    return dict(event)


@contextlib.asynccontextmanager
async def served(tmp_path: Path, clock: Clock, plans: int) -> AsyncIterator[Served]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        here = InProcessDevice(tmp_path / "workspace", name="here")
        async with Served(
            store,
            tmp_path,
            planner=scripted_planner(*[NOTE_PLAN] * plans),
            extra=[here],
            proposals=ProposalBook(ttl=60, now=clock),
        ) as running:
            yield running


@contextlib.asynccontextmanager
async def raw(running: Served, data_dir: Path) -> AsyncIterator[Raw]:
    async with connect(running.control_url) as ws:
        client = Raw(ws)
        reply = await client.ask({"type": "auth", "id": "a", "token": read_token(data_dir)})
        assert reply["type"] == "authenticated", reply
        yield client


def refused(reply: dict[str, Any], why: str) -> None:
    assert reply["type"] == "error", reply
    assert (reply["code"], reply["field"]) == ("unknown_proposal", "proposal"), reply
    assert why in reply["message"], reply["message"]


async def test_a_proposal_runs_nothing_until_started_and_is_refused_once_it_ended(
    tmp_path: Path,
) -> None:
    clock = Clock()
    note = tmp_path / "workspace" / "note.txt"
    async with served(tmp_path, clock, plans=3) as running, raw(running, tmp_path) as api:
        proposal = await api.ask({"type": "propose", "id": "p1", "request": NOTE_REQUEST})
        assert proposal["type"] == "proposal", proposal
        assert proposal["request"] == NOTE_REQUEST
        assert proposal["rationale"] == "write the note, then read it back"
        assert proposal["expires_in"] == 60
        rows = [(s["id"], s["device"], s["tool"], s["what"], s["after"]) for s in proposal["stars"]]
        assert rows == [
            ("s1", "here", "fs.write", "note.txt", []),
            ("s2", "here", "fs.read", "note.txt", ["s1"]),
        ]
        assert set(proposal["plan"]["stars"]) == {"s1", "s2"}
        assert {s["status"] for s in proposal["plan"]["stars"].values()} == {"pending"}
        # Planned, and nothing touched a device: no run, no file, nothing recorded.
        assert not note.exists()
        assert running.runtime.orchestrator.constellations() == []
        assert (await api.ask({"type": "history", "id": "h1"}))["constellations"] == []

        started = await api.ask({"type": "start", "id": "s1", "proposal": proposal["proposal"]})
        assert started["type"] == "submitted", started
        assert (started["constellation"], started["stars"]) == (proposal["constellation"], 2)
        subscribed = await api.ask(
            {"type": "subscribe", "id": "w", "constellation": started["constellation"]}
        )
        assert subscribed["type"] == "subscribed"
        assert (await api.finished("w"))["status"] == "succeeded"
        assert note.read_text() == "hello"
        again = await api.ask({"type": "start", "id": "s2", "proposal": proposal["proposal"]})
        refused(again, f"started already: it runs as constellation {started['constellation']!r}")

        dropped = await api.ask({"type": "propose", "id": "p2", "request": NOTE_REQUEST})
        pid = dropped["proposal"]
        first = await api.ask({"type": "discard", "id": "d1", "proposal": pid})
        assert (first["type"], first["discarded"]) == ("discarded", True)
        second = await api.ask({"type": "discard", "id": "d2", "proposal": pid})
        assert (second["type"], second["discarded"]) == ("discarded", False)
        refused(await api.ask({"type": "start", "id": "s3", "proposal": pid}), "was discarded")
        refused(
            await api.ask({"type": "discard", "id": "d3", "proposal": proposal["proposal"]}),
            "started already",
        )

        late = await api.ask({"type": "propose", "id": "p3", "request": NOTE_REQUEST})
        clock.now += 61
        refused(
            await api.ask({"type": "start", "id": "s4", "proposal": late["proposal"]}),
            "expired: it waited more than 60s without being started; propose the request again",
        )
        refused(
            await api.ask({"type": "start", "id": "s5", "proposal": "p-never"}),
            "'p-never' is not known here",
        )
        missing = await api.ask({"type": "start", "id": "s6"})
        assert (missing["code"], missing["field"]) == ("malformed", "proposal")
        history = (await api.ask({"type": "history", "id": "h2"}))["constellations"]
        assert [entry["id"] for entry in history] == [started["constellation"]]
        assert running.runtime.proposals.sweep() == []  # nothing left waiting
        assert len(running.runtime.proposals) == 0


async def review(api: OrreryApi, note: Path) -> list[str]:
    """Propose, discard, propose again and start: what a front end does; the codes of
    the refusals met on the way."""
    codes = []
    dropped = await api.propose(NOTE_REQUEST)
    assert [star.what for star in dropped.stars] == ["note.txt", "note.txt"]
    assert (await api.discard_proposal(dropped.proposal)).discarded
    assert not await asyncio.to_thread(note.exists)
    with pytest.raises(RequestRejected) as discarded:
        await api.start_proposal(dropped.proposal)
    codes.append(discarded.value.code)
    kept = await api.propose(NOTE_REQUEST)
    run = await api.start_proposal(kept.proposal)
    assert (run.id, run.stars) == (kept.constellation, 2)
    assert (await asyncio.wait_for(run.wait(), WAIT)).succeeded
    assert await asyncio.to_thread(note.read_text) == "hello"
    with pytest.raises(RequestRejected) as started:
        await api.discard_proposal(kept.proposal)
    codes.append(started.value.code)
    return codes


async def test_the_runtime_and_the_client_share_one_path(tmp_path: Path) -> None:
    here = tmp_path / "here"
    with Store.open_path(here / "orrery.db") as store:
        device = InProcessDevice(here / "workspace", name="here")
        planner = scripted_planner(NOTE_PLAN, NOTE_PLAN)
        async with Runtime(store, [device], planner=planner) as runtime:
            in_process = await review(runtime, here / "workspace" / "note.txt")
    there = tmp_path / "there"
    async with (
        served(there, Clock(), plans=2) as running,
        Orrery(running.control_url, data_dir=there) as client,
    ):
        remote = await review(client, there / "workspace" / "note.txt")
    assert in_process == remote == ["unknown_proposal", "unknown_proposal"]


async def test_a_server_without_a_planner_refuses_to_propose(tmp_path: Path) -> None:
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with Served(store, tmp_path) as running, raw(running, tmp_path) as api:
            reply = await api.ask({"type": "propose", "id": "p", "request": "tidy my disk"})
    assert (reply["code"], reply["field"]) == ("no_planner", "request")
