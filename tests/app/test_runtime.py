"""The runtime behind every front end (`app.runtime`): this machine as an in-process device,
the one interface that the runtime and the remote client both satisfy (the same scenario
through both gives the same events), the fleet-wide stream with replay, cancelling one
star, retrying from a failure, and approvals asked by the in-process device. Real SQLite
files, real tools in tmp_path, the control API over real WebSockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agents.events import FLEET_EVENT_TYPES, Event, event_to_dict
from app.client import Orrery
from app.errors import RequestRejected
from app.interface import OrreryApi
from app.runtime import InProcessDevice, Runtime, approve_all
from memory import Store
from tests.served import Served

WAIT = 30.0

PLAN = """
name: note-and-fail
stars:
  - id: write
    tool: fs.write
    args: {path: note.txt, content: hello}
  - id: read
    after: [write]
    tool: fs.read
    args: {path: note.txt}
  - id: missing
    after: [write]
    tool: fs.read
    args: {path: later.txt}
  - id: report
    after: [read, missing]
    tool: fs.write
    args: {path: report.txt, content: "${read.output.content} and ${missing.output.content}"}
"""

SLOW = """
name: two-naps
stars:
  - id: nap
    tool: shell.run
    args: {cmd: sleep 30}
  - id: quick
    tool: fs.write
    args: {path: q.txt, content: q}
"""


def this_machine(tmp_path: Path, **options: Any) -> InProcessDevice:
    return InProcessDevice(tmp_path / "workspace", name="here", **options)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store.open_path(tmp_path / "orrery.db") as opened:
        yield opened


@pytest.fixture
async def runtime(store: Store, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with Runtime(store, [this_machine(tmp_path)]) as running:
        yield running


def shape(events: list[Event]) -> dict[str | None, list[tuple[Any, ...]]]:
    """What a scenario's events say, without the numbers that differ between two runs:
    each star's events in their order (stars that run at once may interleave either
    way), and the constellation's own (under None) in theirs."""
    kept: dict[str | None, list[tuple[Any, ...]]] = {}
    for event in events:
        data = event_to_dict(event)
        star = data.get("star_id")
        kept.setdefault(star, []).append(
            (data["type"], star, data.get("status"), data.get("device"), data.get("error"))
        )
    return kept


async def scenario(api: OrreryApi) -> tuple[dict[str | None, list[tuple[Any, ...]]], str, str]:
    """Run PLAN (it fails at `missing`), look at it, retry it: what a front end does."""
    run = await api.submit(PLAN)
    events = [event async for event in run.events()]
    assert event_to_dict(events[0])["type"] == "constellation.submitted"
    assert event_to_dict(events[-1])["type"] == "constellation.finished"
    result = await run.wait()
    snapshot = await api.constellation(run.id[:6])  # a unique prefix will do
    assert snapshot.constellation_id == run.id
    assert snapshot.constellation["stars"]["read"]["output"]["content"] == "hello"
    (listed,) = [d for d in await api.devices() if d.name == "here"]
    assert listed.in_process
    assert listed.connected
    return shape(events), result.status, str(result.failed_star)


async def test_the_same_scenario_gives_the_same_events_in_process_and_remotely(
    tmp_path: Path,
) -> None:
    with Store.open_path(tmp_path / "a" / "orrery.db") as store:
        async with Runtime(store, [this_machine(tmp_path / "a")]) as runtime:
            here = await scenario(runtime)
    with Store.open_path(tmp_path / "b" / "orrery.db") as store:
        async with (
            Served(store, tmp_path / "b", extra=[this_machine(tmp_path / "b")]) as served,
            Orrery(served.control_url, data_dir=tmp_path / "b") as client,
        ):
            there = await scenario(client)
    assert here == there
    events, status, failed = here
    assert (status, failed) == ("failed", "missing")
    assert set(events) == {None, "write", "read", "missing", "report"}
    report = events["report"][-1]
    assert report[:3] == ("star.finished", "report", "skipped")
    assert events[None][0][0] == "constellation.submitted"
    assert events[None][-1][:3] == ("constellation.finished", None, "failed")


async def test_retry_keeps_what_succeeded_and_runs_the_failure_again(
    runtime: Runtime, tmp_path: Path
) -> None:
    first = await runtime.submit(PLAN)
    assert (await first.wait()).failed_star == "missing"
    with pytest.raises(RequestRejected) as succeeded:
        await runtime.retry(first.id, "read")
    assert succeeded.value.code == "not_retryable"
    with pytest.raises(RequestRejected) as unknown:
        await runtime.retry(first.id, "nope")
    assert unknown.value.code == "unknown_star"
    (tmp_path / "workspace" / "later.txt").write_text("later")
    again = await runtime.retry(first.id, "missing")
    started = [e async for e in again.events() if e.type == "star.started"]  # type: ignore[attr-defined]
    assert {e.star_id for e in started} == {"missing", "report"}  # type: ignore[attr-defined]
    assert (await again.wait()).succeeded
    snapshot = await runtime.constellation(again.id)
    assert snapshot.constellation["retry_of"] == first.id
    stars = snapshot.constellation["stars"]
    assert len(stars["write"]["attempts"]) == 1  # carried over, not run again
    assert (tmp_path / "workspace" / "report.txt").read_text() == "hello and later"
    with pytest.raises(RequestRejected) as nothing_left:
        await runtime.retry(again.id)
    assert nothing_left.value.code == "not_retryable"


async def test_cancelling_one_star_lets_the_others_finish(runtime: Runtime) -> None:
    run = await runtime.submit(SLOW)
    async with asyncio.timeout(WAIT):
        async for event in run.events():
            if event.type == "star.started" and event.star_id == "nap":  # type: ignore[attr-defined]
                break
    assert await runtime.cancel_star(run.id, "nap", "not needed") == "cancelled"
    with pytest.raises(RequestRejected) as unknown:
        await runtime.cancel_star(run.id, "nope")
    assert unknown.value.code == "unknown_star"
    result = await asyncio.wait_for(run.wait(), WAIT)
    snapshot = await runtime.constellation(run.id)
    assert snapshot.constellation["stars"]["quick"]["status"] == "succeeded"
    assert snapshot.constellation["stars"]["nap"]["status"] == "cancelled"
    assert result.status == "failed"  # a cancelled star is not a success
    assert await runtime.cancel_star(run.id, "quick") == "succeeded"  # finished: unchanged


async def test_the_fleet_stream_replays_from_a_sequence_number(runtime: Runtime) -> None:
    (joined,) = [e async for e in first_events(runtime, 1)]
    assert (joined.type, joined.device) == ("device.joined", "here")  # type: ignore[attr-defined]
    run = await runtime.submit(PLAN)
    await run.wait()
    everything = [e async for e in first_events(runtime, 10_000, after=0, wait=0.2)]
    fleet = [e for e in everything if e.type in FLEET_EVENT_TYPES]  # type: ignore[attr-defined]
    middle = fleet[1].seq
    later = [
        e.seq async for e in first_events(runtime, 10_000, after=middle, types=FLEET_EVENT_TYPES)
    ]
    assert later == [e.seq for e in fleet if e.seq > middle]
    kinds = [e.type for e in fleet]  # type: ignore[attr-defined]
    assert kinds[:2] == ["device.joined", "device.state"]
    assert "constellation.submitted" in kinds
    assert kinds[-1] == "constellation.finished"
    start = runtime.open_stream(None, 0, None)
    assert not start.truncated
    assert start.live is not None
    start.live.close()


async def first_events(
    api: OrreryApi,
    count: int,
    *,
    after: int = 0,
    types: frozenset[str] | None = None,
    wait: float = 0.2,
) -> AsyncIterator[Event]:
    """Up to `count` events of the fleet stream, ending when none comes for `wait` s."""
    stream = api.events(after_seq=after, types=types)
    try:
        for _ in range(count):
            try:
                yield await asyncio.wait_for(anext(stream), wait)
            except TimeoutError:
                return
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


def asks_for_shell(tool: str, args: BaseModel) -> str | None:
    return f"run {args.model_dump().get('cmd')!r}" if tool == "shell.run" else None


async def test_the_in_process_device_asks_its_approvals_through_the_runtime(
    store: Store, tmp_path: Path
) -> None:
    plan = "name: careful\nstars:\n  - id: risky\n    tool: shell.run\n    args: {cmd: echo yes}\n"
    device = this_machine(tmp_path, needs_approval=asks_for_shell)
    async with Runtime(store, [device]) as runtime:
        run = await runtime.submit(plan)
        async with asyncio.timeout(WAIT):
            async for event in run.events():
                if event.type == "approval.needed":  # type: ignore[attr-defined]
                    break
        (pending,) = await runtime.approvals()
        assert (pending.device, pending.tool, pending.star) == ("here", "shell.run", "risky")
        await runtime.approve(pending.request, True, "fine", by="alice")
        assert (await asyncio.wait_for(run.wait(), WAIT)).succeeded
        assert await runtime.approvals() == []
    policy = approve_all("trusted")
    async with Runtime(store, [this_machine(tmp_path, needs_approval=asks_for_shell)],
                       approval_policy=policy) as runtime:  # fmt: skip
        run = await runtime.submit(plan)
        given = [e async for e in run.events() if e.type == "approval.given"]  # type: ignore[attr-defined]
        assert [(g.approved, g.by) for g in given] == [(True, "policy")]  # type: ignore[attr-defined]
        assert given[0].ts > 0  # stamped by the orchestrator's clock, not left at 0


async def test_waiting_for_devices_is_woken_by_events_and_times_out_clearly(
    store: Store, tmp_path: Path
) -> None:
    from app.runtime import DevicesMissing

    async with Runtime(store, [this_machine(tmp_path)]) as runtime:
        assert await runtime.wait_for_devices(1, within=1) == ["here"]
        with pytest.raises(DevicesMissing, match=r"1 of 2 devices connected within 0\.2s"):
            await runtime.wait_for_devices(2, within=0.2)


async def test_a_request_in_words_without_a_planner_is_refused_with_its_code(
    runtime: Runtime,
) -> None:
    with pytest.raises(RequestRejected) as refused:
        await runtime.submit(request="tidy my disk")
    assert (refused.value.code, refused.value.field) == ("no_planner", "request")
    with pytest.raises(RequestRejected) as bad:
        await runtime.submit("name: x\nstars: []\n")
    assert bad.value.code == "invalid_plan"


async def test_a_waiting_star_is_pinned_to_a_device_by_an_edit(runtime: Runtime) -> None:
    run = await runtime.submit(SLOW.replace("id: quick\n", "id: quick\n    after: [nap]\n"))
    async with asyncio.timeout(WAIT):
        async for event in run.events():
            if event.type == "star.started":  # type: ignore[attr-defined]
                break
    version = await runtime.pin_star(run.id, "quick", "here")
    snapshot = await runtime.constellation(run.id)
    assert version == snapshot.version == 2
    assert snapshot.constellation["stars"]["quick"]["on"]["name"] == "here"
    assert snapshot.edits[-1].rationale == "pinned quick to here by a person"
    refusals = {}
    for star, device in (("nap", "here"), ("quick", "elsewhere"), ("nope", "here")):
        with pytest.raises(RequestRejected) as refused:
            await runtime.pin_star(run.id, star, device)
        refusals[star] = (refused.value.code, refused.value.reason)
    assert refusals["nap"][0] == "not_editable"  # it runs already
    assert refusals["quick"][0] == "unknown_device"
    assert "connected: here" in refusals["quick"][1]
    assert refusals["nope"][0] == "unknown_star"
    await runtime.cancel(run.id)


async def test_enrolling_returns_a_token_once_and_refuses_a_bad_name(
    runtime: Runtime, store: Store
) -> None:
    token = await runtime.enroll("laptop")
    assert token.startswith("orr1_")
    assert [row.name for row in store.devices()] == ["laptop"]
    assert await runtime.enroll("laptop") != token  # rotated
    with pytest.raises(RequestRejected) as bad:
        await runtime.enroll("no spaces please")
    assert (bad.value.code, bad.value.field) == ("malformed", "name")
