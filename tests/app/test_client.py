"""`app.client` against a real served runtime on 127.0.0.1 (real SQLite store, an in-process
device over real AIP): submit, stream, wait, typed errors, the sync wrapper, and
reconnecting after the server restarts without delivering an event twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.events import ConstellationFinished, Event, StarStarted
from app.client import (
    AuthRefused,
    Orrery,
    RequestRejected,
    ServerUnreachable,
    SyncOrrery,
    control_url,
)
from memory import Store
from tests.app.in_process_device import in_process_device
from tests.served import Served

WAIT = 30.0

PLAN = """
name: two-steps
stars:
  - id: write
    tool: fs.write
    args: {path: note.txt, content: hello}
  - id: read
    after: [write]
    tool: fs.read
    args: {path: note.txt}
"""

SLOW = """
name: slow
stars:
  - id: nap
    tool: shell.run
    args: {cmd: sleep 30}
  - id: after
    after: [nap]
    tool: fs.write
    args: {path: never.txt, content: x}
"""


def device(
    served: Served, store: Store, tmp_path: Path
) -> contextlib.AbstractAsyncContextManager[None]:
    return in_process_device(served, store, tmp_path, shutdown_grace=0.5, within=WAIT)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    with Store.open_path(tmp_path / "orrery.db") as opened:
        yield opened


@pytest.fixture
async def served(store: Store, tmp_path: Path) -> AsyncIterator[Served]:
    async with Served(store, tmp_path) as running, device(running, store, tmp_path):
        yield running


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_control_url_accepts_host_port_aip_and_http_urls() -> None:
    assert control_url("ws://h:1") == "ws://h:1/control/v1"
    assert control_url("http://h:1/aip/v1") == "ws://h:1/control/v1"
    assert control_url("wss://h:1/control/v1") == "wss://h:1/control/v1"
    with pytest.raises(ValueError, match="ws://HOST:PORT"):
        control_url("h:1")


async def test_submit_stream_and_wait(served: Served, tmp_path: Path) -> None:
    async with Orrery(served.control_url, data_dir=tmp_path) as client:
        run = await client.submit(plan_text=PLAN)
        assert (run.name, run.stars) == ("two-steps", 2)
        events = [event async for event in run.events()]
        result = await asyncio.wait_for(run.wait(), WAIT)
        assert result.succeeded
        assert isinstance(events[-1], ConstellationFinished)
        assert [e.seq for e in events] == sorted({e.seq for e in events})
        # A second reader of the same run sees the same events.
        assert [e.seq async for e in run.events()] == [e.seq for e in events]
        (entry,) = await client.history()
        assert (entry.id, entry.status) == (run.id, "succeeded")
        (listed,) = await client.devices()
        assert listed.connected
        snapshot = await run.snapshot()
        assert snapshot.constellation["stars"]["read"]["output"]["content"] == "hello"


async def test_errors_are_typed(served: Served, tmp_path: Path) -> None:
    with pytest.raises(ServerUnreachable, match="cannot reach"):
        async with Orrery(f"ws://127.0.0.1:{closed_port()}", token="t", connect_timeout=2):
            pass
    with pytest.raises(AuthRefused, match="wrong control token"):
        async with Orrery(served.control_url, token="orc1_not-it"):
            pass
    with pytest.raises(AuthRefused, match="no control token"):
        async with Orrery(served.control_url, data_dir=tmp_path / "elsewhere"):
            pass
    async with Orrery(served.control_url, data_dir=tmp_path) as client:
        with pytest.raises(RequestRejected) as rejected:
            await client.submit(plan_text="name: x\nstars: []\n", source="x.yaml")
        assert (rejected.value.code, rejected.value.field) == ("invalid_plan", "plan")
        assert rejected.value.reason.startswith("x.yaml:")
        with pytest.raises(RequestRejected) as rejected:
            await client.submit(request="clean up my disk")
        assert rejected.value.code == "no_planner"
        with pytest.raises(RequestRejected) as rejected:
            await client.cancel("no-such-constellation")
        assert rejected.value.field == "constellation"
        assert (await client.history()) == []  # the connection survived every refusal


class FakePlanner:
    """A planner (`app.runtime.Planner`) that answers by keyword, for the control API."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    async def plan(self, request: str, devices: object) -> object:
        return await self.answer(request, devices)  # type: ignore[operator]

    def review_runs(self, orchestrator: object, devices: object) -> object:
        return lambda: None

    def forget(self, constellation_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_request_in_words_goes_to_the_planner(store: Store, tmp_path: Path) -> None:
    from agents.constellation.plan_file import parse_plan
    from agents.models.errors import ModelFileMissing
    from agents.planner.errors import NoCapableDevice, PlanRejected
    from devices.registry import DeviceInfo

    asked: list[tuple[str, list[str]]] = []

    async def planner(text: str, devices: object) -> object:
        assert isinstance(devices, list)
        asked.append((text, [d.name for d in devices if isinstance(d, DeviceInfo)]))
        if "impossible" in text:
            raise PlanRejected("plan", ["no tool can do that"])
        if "nowhere" in text:
            raise NoCapableDevice([])
        if "unloadable" in text:
            raise ModelFileMissing(tmp_path / "gone.gguf")
        if "buggy" in text:
            raise KeyError("a bug in the planner")
        return parse_plan(PLAN)

    async with (
        Served(store, tmp_path, planner=FakePlanner(planner)) as served,  # type: ignore[arg-type]
        device(served, store, tmp_path),
    ):
        await requests_in_words(served, tmp_path, asked)


async def requests_in_words(
    served: Served, tmp_path: Path, asked: list[tuple[str, list[str]]]
) -> None:
    async with Orrery(served.control_url, data_dir=tmp_path) as client:
        run = await client.submit(request="write a note and read it")
        assert (await asyncio.wait_for(run.wait(), WAIT)).succeeded
        with pytest.raises(RequestRejected) as nowhere:
            await client.submit(request="run it nowhere")
        with pytest.raises(RequestRejected) as rejected:
            await client.submit(request="something impossible")
        with pytest.raises(RequestRejected) as unloadable:
            await client.submit(request="an unloadable model")
        with pytest.raises(RequestRejected) as buggy:
            await client.submit(request="a buggy planner")
    assert rejected.value.code == "plan_rejected"
    assert "last problem: no tool can do that" in rejected.value.reason
    assert (nowhere.value.code, nowhere.value.field) == ("no_capable_device", "request")
    assert unloadable.value.code == "plan_rejected"
    assert unloadable.value.reason.startswith("the planner's model failed:")
    assert "gone.gguf" in unloadable.value.reason
    assert buggy.value.code == "internal"  # a bug is not reported as a rejected plan
    assert "KeyError" in buggy.value.reason
    assert asked[0] == ("write a note and read it", ["worker"])
    # One positional argument: plan text, a plan file, or else a request in words.
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(PLAN)
    async with Orrery(served.control_url, data_dir=tmp_path) as client:
        for target in (PLAN, plan_file):
            assert (await asyncio.wait_for((await client.submit(target)).wait(), WAIT)).succeeded
        await asyncio.wait_for((await client.submit("tidy up, please")).wait(), WAIT)
        with pytest.raises(ValueError, match="exactly one"):
            await client.submit(PLAN, request="and this too")
    assert asked[-1][0] == "tidy up, please"
    assert len(asked) == 6  # the plan and the plan file did not go to the planner


async def test_the_sync_client_runs_a_plan(served: Served, tmp_path: Path) -> None:
    def script() -> tuple[list[str], str, int]:
        with SyncOrrery(served.control_url, data_dir=tmp_path) as client:
            run = client.submit(plan_text=PLAN)
            kinds = [event.type for event in run.events(timeout=WAIT)]
            result = run.wait(timeout=WAIT)
            return kinds, result.status, len(client.history())

    kinds, status, runs = await asyncio.to_thread(script)
    assert kinds[0] == "constellation.submitted"
    assert kinds[-1] == "constellation.finished"
    assert (status, runs) == ("succeeded", 1)


async def test_the_sync_client_reports_an_unreachable_server() -> None:
    def script() -> None:
        SyncOrrery(f"ws://127.0.0.1:{closed_port()}", token="t", connect_timeout=2)

    with pytest.raises(ServerUnreachable):
        await asyncio.to_thread(script)


async def test_after_the_server_restarts_the_client_resubscribes_without_duplicates(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="orrery.client")
    async with Orrery(served.control_url, data_dir=tmp_path) as client:
        run = await client.submit(plan_text=SLOW)
        seen: list[Event] = []
        async with asyncio.timeout(WAIT):
            async for event in run.events():
                seen.append(event)
                if isinstance(event, StarStarted):
                    # The server goes away; while it is down the constellation moves on
                    # (cancelled in process), so those events reach the client only
                    # through the replay after it reconnects.
                    await served.endpoint.__aexit__(None, None, None)
                    served.runtime.orchestrator.cancel(
                        run.id, "cancelled while the client was away"
                    )
                    await asyncio.sleep(0.3)
                    await served.endpoint.__aenter__()
        result = await run.wait()
    seqs = [event.seq for event in seen]
    assert seqs == sorted(set(seqs)), seqs  # nothing twice, nothing out of order
    assert result.status == "cancelled"
    finished = [e for e in seen if e.type == "star.finished"]
    assert {getattr(e, "star_id", None) for e in finished} == {"nap", "after"}
    # Everything the orchestrator published for this run reached the caller exactly once.
    logged = [e.seq for e in served.runtime.journal.after(run.id, 0)]
    assert seqs == logged
    messages = [record.getMessage() for record in caplog.records]
    assert any("dropped; reconnecting" in m for m in messages), messages
    resubscribed = [m for m in messages if m.startswith(f"subscribed to c={run.id} after ")]
    assert len(resubscribed) == 2, resubscribed
    assert not resubscribed[1].endswith(" after 0"), resubscribed  # only what it missed


async def test_a_new_server_on_the_same_store_replays_finished_runs(
    store: Store, tmp_path: Path
) -> None:
    first = Served(store, tmp_path)
    await first.__aenter__()
    port = first.endpoint.port
    try:
        async with device(first, store, tmp_path):
            client = Orrery(first.control_url, data_dir=tmp_path, reconnect_within=10)
            await client.connect()
            run = await client.submit(plan_text=PLAN)
            before = [e.seq async for e in run.events()]
    finally:
        await first.__aexit__(None, None, None)
    try:
        async with Served(store, tmp_path, port=port):  # a new process would do the same
            # The same client reconnects by itself; the run now comes from the store.
            again = [e.seq async for e in client.run(run.id).events()]
            assert again == before
            assert [entry.id for entry in await client.history()] == [run.id]
    finally:
        await client.close()
