"""The runtime gives a device that joins mid-run its branches (`JoiningDevices`): on a
simulated fleet and a virtual clock, over a real SQLite store. The branch is an edit
like any other: a new version in the events and the snapshot, so the task memory sees
it and a restarted orchestrator takes it up (and still gives a rejoining device no
second branch). Waits are for events, bounded by `WAIT`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.clock import VirtualClock
from agents.constellation import Constellation, ConstellationStatus, StarStatus
from agents.events import EditApplied, Subscription
from agents.simulation import Outcome, SimulatedDispatcher
from app.runtime import Runtime
from devices.registry import DeviceInfo
from memory import Store
from memory.tree import star_node_id
from protocol.tasks import TaskAssignment

WAIT = 10.0  # a bound on waits for events that come at once, never a delay
TOOLS = frozenset({"shell.run", "fs.write"})
WORKERS = frozenset({"workers"})
ATLAS = DeviceInfo(name="atlas", tools=TOOLS, max_tasks=4)
BOREALIS = DeviceInfo(name="borealis", tools=TOOLS, labels=WORKERS)
CYGNUS = DeviceInfo(name="cygnus", tools=TOOLS, labels=WORKERS)
DORADO = DeviceInfo(name="dorado", tools=TOOLS, labels=WORKERS)

# The gate never answers in the first process: what waits for all branches waits.
PLAN = """
name: hosts
stars:
  - id: gate
    tool: shell.run
    on: atlas
    retries: 1
    args: {cmd: "true"}
  - id: host
    tool: shell.run
    on: {each: true, labels: [workers], joining: true}
    retries: 1
    args: {cmd: hostname}
  - id: summary
    tool: fs.write
    on: atlas
    args: {path: hosts.txt, content: "hosts:\\n${host.output.stdout}"}
    after: [gate, host]
"""


def behaviour(*, gate_answers: bool) -> Callable[[TaskAssignment], Outcome]:
    """Each star answers after a second with its device's name; the gate only if told."""

    def behave(assignment: TaskAssignment) -> Outcome:
        if assignment.star_id == "gate" and not gate_answers:
            return Outcome(duration=None)
        return Outcome(duration=1.0, output={"stdout": assignment.device})

    return behave


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open_path(tmp_path / "orrery.db") as opened:
        yield opened


async def next_edit(events: Subscription) -> EditApplied:
    async with asyncio.timeout(WAIT):
        async for event in events:
            if isinstance(event, EditApplied):
                return event
    raise AssertionError("the constellation finished without an edit")


async def test_a_joining_device_gets_a_branch_the_store_memory_and_a_restart_keep(
    store: Store,
) -> None:
    clock = VirtualClock()
    fleet = SimulatedDispatcher(clock, [ATLAS, BOREALIS], behaviour=behaviour(gate_answers=False))
    first = Runtime(store, [fleet], clock=clock)
    run = await first.submit(plan_text=PLAN)
    clock.advance(2.0)  # host-borealis done; the gate hangs
    edits = first.stream.subscribe(run.id)

    fleet.join(CYGNUS)
    edit = await next_edit(edits)
    assert (edit.version, edit.rationale) == (2, "device cygnus joined: host-cygnus of host")

    # Back after a disconnect: no second branch. Dorado, joining after it, gets the next
    # edit, so cygnus's rejoin (handled first) made none.
    fleet.leave("cygnus")
    fleet.join(CYGNUS)
    fleet.join(DORADO)
    edit = await next_edit(edits)
    assert (edit.version, edit.rationale) == (3, "device dorado joined: host-dorado of host")
    edits.close()

    live = first.orchestrator.constellation(run.id)
    assert [s for s in live.stars if s.startswith("host-")] == [
        "host-borealis",
        "host-cygnus",
        "host-dorado",
    ]
    # The store holds every edit and a snapshot with the branches and the record.
    assert [e.payload["version"] for e in store.events(run.id) if e.type == "edit.applied"] == [
        2,
        3,
    ]
    row = store.constellation(run.id)
    assert row is not None
    stored = Constellation.model_validate(row.snapshot)
    assert stored.version == 3
    assert {"host-cygnus", "host-dorado"} <= set(stored.stars)
    assert stored.fan_out is not None
    assert stored.fan_out.joined == {"host": ["cygnus", "dorado"]}
    # The task memory has a node for each new branch.
    first.remembering.flush()
    request = first.remembering.request_of(run.id)
    assert request is not None
    nodes = {node.id for node in first.memory.tree.nodes(request)}
    assert {star_node_id(run.id, "host-cygnus"), star_node_id(run.id, "host-dorado")} <= nodes

    # The orchestrator is killed (nothing is cancelled); the next one takes the run up.
    await first.memory.aclose()
    clock = VirtualClock()
    fleet = SimulatedDispatcher(
        clock,
        [ATLAS, BOREALIS, CYGNUS, DORADO],
        behaviour=behaviour(gate_answers=True),
    )
    async with Runtime(store, [fleet], clock=clock) as second:
        assert second.recover(patience=5.0) == [run.id]
        taken_up = second.orchestrator.constellation(run.id)
        assert taken_up.fan_out is not None
        assert taken_up.fan_out.joined == {"host": ["cygnus", "dorado"]}
        fleet.join(CYGNUS)  # reconnecting after the restart
        assert second.joining.branch("cygnus") == {}
        clock.run_until_idle()  # the attempts out when it was killed run again
        done = second.orchestrator.constellation(run.id)
        assert done.status is ConstellationStatus.SUCCEEDED
    assert done.stars["summary"].status is StarStatus.SUCCEEDED
    summary = [a for a in fleet.assigned if a.star_id == "summary"]
    assert summary[-1].args["content"] == "hosts:\nborealis\ncygnus\ndorado"
