"""Approvals: a risky tool call waits on the device until a person decides at the
orchestrator. Real AIP over 127.0.0.1, an in-process device agent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from agents.constellation import ConstellationStatus, PlanSpec, build_constellation
from agents.events import ApprovalGiven, ApprovalNeeded, Event
from app.device_processes import DeviceProcesses
from app.errors import RequestRejected
from app.runtime.assembly import fleet_tools
from devices.agent import DeviceAgent
from memory import Store
from tests.served import Served


def shell_needs_approval(tool: str, args: BaseModel) -> str | None:
    return f"run {args.model_dump().get('cmd')!r}" if tool == "shell.run" else None


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Served, list[Event], Path]]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with Served(store, tmp_path) as orchestra:
            processes = DeviceProcesses(store, tmp_path / "devices")
            processes.add("careful", ["worker"])
            token = processes.token("careful")
            agent = DeviceAgent(
                orchestra.url,
                "careful",
                token,
                data_dir=tmp_path / "careful",
                needs_approval=shell_needs_approval,
            )
            stop = asyncio.Event()
            running = asyncio.create_task(agent.run(stop))
            events: list[Event] = []
            orchestra.stream.listen(events.append)
            try:
                await orchestra.wait_for_devices(1, within=20)
                yield orchestra, events, agent.workspace
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(running, 20)


def two_stars() -> object:
    spec = PlanSpec.model_validate(
        {
            "name": "needs-a-yes",
            "stars": [
                {"id": "note", "tool": "fs.write", "args": {"path": "n.txt", "content": "x"}},
                {"id": "risky", "tool": "shell.run", "args": {"cmd": "echo ran > ran.txt"}},
            ],
        }
    )
    return build_constellation(spec, known_tools=fleet_tools())


async def waiting_request(events: list[Event]) -> ApprovalNeeded:
    for _ in range(400):
        needed = [e for e in events if isinstance(e, ApprovalNeeded)]
        if needed:
            return needed[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no approval was requested")


async def test_an_approved_call_runs_after_the_decision(
    setup: tuple[Served, list[Event], Path],
) -> None:
    orchestra, events, workspace = setup
    running = asyncio.create_task(orchestra.run(two_stars()))  # type: ignore[arg-type]
    needed = await waiting_request(events)
    assert (needed.star_id, needed.tool, needed.device) == ("risky", "shell.run", "careful")
    assert "echo ran > ran.txt" in needed.summary
    await asyncio.sleep(0.3)
    assert not (workspace / "ran.txt").exists()  # it waits
    assert not running.done()
    assert [p.request for p in await orchestra.runtime.approvals()] == [needed.request]

    await orchestra.runtime.approve(needed.request, True, "looks fine", by="alice")
    final = await asyncio.wait_for(running, 30)

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    assert (workspace / "ran.txt").read_text().strip() == "ran"
    (given,) = [e for e in events if isinstance(e, ApprovalGiven)]
    assert (given.approved, given.by) == (True, "alice")
    assert await orchestra.runtime.approvals() == []


async def test_a_refused_call_fails_its_star_with_the_reason(
    setup: tuple[Served, list[Event], Path],
) -> None:
    orchestra, events, workspace = setup
    running = asyncio.create_task(orchestra.run(two_stars()))  # type: ignore[arg-type]
    needed = await waiting_request(events)

    await orchestra.runtime.approve(needed.request, False, "not on a Friday", by="bob")
    final = await asyncio.wait_for(running, 30)

    assert final.status is ConstellationStatus.FAILED
    assert final.stars["note"].status.value == "succeeded"  # only the risky call waited
    error = final.stars["risky"].attempts[-1].error or ""
    assert "shell.run was not approved" in error
    assert "not on a Friday" in error
    assert not (workspace / "ran.txt").exists()


async def test_an_unknown_approval_is_a_clear_error(
    setup: tuple[Served, list[Event], Path],
) -> None:
    orchestra, _, _ = setup
    with pytest.raises(RequestRejected, match="no pending approval 'nope'"):
        await orchestra.runtime.approve("nope", True)


async def test_cancelling_a_run_withdraws_its_pending_approval(
    setup: tuple[Served, list[Event], Path],
) -> None:
    """`approvals` must not list a call whose attempt no longer runs."""
    orchestra, events, workspace = setup
    handle = orchestra.runtime.start_constellation(two_stars())  # type: ignore[arg-type]
    needed = await waiting_request(events)
    assert [p.request for p in await orchestra.runtime.approvals()] == [needed.request]

    await handle.cancel("changed my mind")
    final = await asyncio.wait_for(handle.wait(), 30)

    assert final.status == "cancelled"
    assert await orchestra.runtime.approvals() == []
    with pytest.raises(RequestRejected, match="no pending approval"):
        await orchestra.runtime.approve(needed.request, True)
    assert not (workspace / "ran.txt").exists()
