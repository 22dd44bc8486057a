"""The WebSocket dispatcher with real sockets on 127.0.0.1, a real SQLite store and real
device agents: plans run on remote devices, results are stored exactly once, lost devices
are detected by their silence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.aip_dispatcher import AipDispatcher
from agents.clock import VirtualClock
from agents.constellation import PlanSpec, build_constellation
from agents.constellation.model import ConstellationStatus, StarStatus
from agents.dispatch import DeviceChange
from agents.events import DeviceStateChanged, Event
from agents.fleet_store import StoreKeys, StoreLedger
from agents.orchestrator import Orchestrator
from devices.agent import DeviceAgent
from devices.backoff import Backoff
from memory import Store
from protocol.auth import enroll
from protocol.messages import (
    DEFAULT_MAX_FRAME,
    ErrorCode,
    HelloBody,
    Load,
    ResumeState,
    ToolDescription,
)
from protocol.session import (
    AssignmentReceived,
    DeviceSession,
    PeerError,
    ServerConfig,
    SessionClosed,
    SessionEvent,
    Welcomed,
    ref_of,
)
from protocol.tasks import TaskAssignment, TaskOutcome, TaskResult
from protocol.transport import AipServer, Connection, TransportClosed, connect_aip, serve_aip

WAIT = 20.0


@dataclass
class Fleet:
    store: Store
    dispatcher: AipDispatcher
    orchestrator: Orchestrator
    server: AipServer
    tokens: dict[str, str]
    tmp: Path
    agents: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    def start_agent(
        self,
        name: str,
        *,
        labels: tuple[str, ...] = (),
        url: str | None = None,
        on_event: Callable[[SessionEvent], None] | None = None,
    ) -> DeviceAgent:
        agent = DeviceAgent(
            url or self.url,
            name,
            self.tokens[name],
            data_dir=self.tmp / name,
            labels=labels,
            backoff=Backoff(initial=0.01, factor=2, maximum=0.1),
            on_event=on_event,
        )
        self.agents.append(asyncio.create_task(agent.run(self.stop)))
        return agent

    async def wait_devices(self, count: int) -> None:
        async def ready() -> None:
            while len(self.dispatcher.devices()) < count:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(ready(), WAIT)


async def make_fleet(
    tmp_path: Path,
    names: list[str],
    *,
    clock: VirtualClock | None = None,
    observe: Callable[[str, str, list[str]], None] | None = None,
    **config: float,
) -> Fleet:
    store = Store.open_path(tmp_path / "orchestrator" / "orrery.db")
    tokens = {}
    for name in names:
        token, key = enroll(name)
        store.enroll_device(name, salt=key.salt, key=key.key)
        tokens[name] = token
    dispatcher = AipDispatcher(
        keys=StoreKeys(store),
        ledger=StoreLedger(store),
        clock=clock,
        config=ServerConfig(**config),  # type: ignore[arg-type]
    )
    orchestrator = Orchestrator(dispatcher, clock=clock)
    if observe is not None:  # device states, as the orchestrator publishes them

        def states(event: Event) -> None:
            if isinstance(event, DeviceStateChanged):
                observe(event.device, event.state, [])

        orchestrator.events.listen(states)
    server = await serve_aip(dispatcher.handle, "127.0.0.1", 0)
    return Fleet(store, dispatcher, orchestrator, server, tokens, tmp_path)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    made = await make_fleet(tmp_path, ["alpha", "beta", "gamma"])
    yield made
    await shutdown(made)


async def shutdown(fleet: Fleet) -> None:
    fleet.stop.set()
    if fleet.agents:
        await asyncio.wait_for(asyncio.gather(*fleet.agents, return_exceptions=True), WAIT)
    fleet.server.close()
    await fleet.server.wait_closed()
    fleet.store.close()


PLAN = {
    "name": "spread",
    "stars": [
        {"id": "a", "on": {"labels": ["red"]}, "tool": "shell.run", "args": {"cmd": "echo A"}},
        {"id": "b", "on": {"labels": ["blue"]}, "tool": "shell.run", "args": {"cmd": "echo B"}},
        {
            "id": "c",
            "on": {"labels": ["green"]},
            "tool": "python.run",
            "args": {"code": "print(3)"},
        },
        {
            "id": "join",
            "after": ["a", "b", "c"],
            "on": "alpha",
            "tool": "fs.write",
            "args": {
                "path": "joined.txt",
                "content": "${a.output.stdout}\n${b.output.stdout}\n${c.output.stdout}\n",
            },
        },
    ],
}


async def test_plan_runs_across_three_remote_devices(fleet: Fleet) -> None:
    fleet.start_agent("alpha", labels=("red",))
    fleet.start_agent("beta", labels=("blue",))
    fleet.start_agent("gamma", labels=("green",))
    await fleet.wait_devices(3)

    constellation = build_constellation(PlanSpec.model_validate(PLAN))
    final = await asyncio.wait_for(fleet.orchestrator.run(constellation), WAIT)

    assert final.status is ConstellationStatus.SUCCEEDED, final.model_dump_json(indent=1)
    ran_on = {sid: star.attempts[-1].device for sid, star in final.stars.items()}
    assert ran_on == {"a": "alpha", "b": "beta", "c": "gamma", "join": "alpha"}
    joined = fleet.tmp / "alpha" / "workspace" / "joined.txt"
    assert joined.read_text() == "A\nB\n3\n"
    stored = fleet.store.results(constellation.id)
    assert sorted((r.star_id, r.attempt, r.device) for r in stored) == [
        ("a", 1, "alpha"),
        ("b", 1, "beta"),
        ("c", 1, "gamma"),
        ("join", 1, "alpha"),
    ]


async def test_unknown_device_and_wrong_token_are_refused(fleet: Fleet) -> None:
    from devices.agent import DeviceRefused

    stranger = DeviceAgent(fleet.url, "delta", "orr1_made-up", data_dir=fleet.tmp / "delta")
    with pytest.raises(DeviceRefused) as unknown:
        await asyncio.wait_for(stranger.run(asyncio.Event()), WAIT)
    assert "not enrolled" in str(unknown.value)

    impostor = DeviceAgent(fleet.url, "alpha", fleet.tokens["beta"], data_dir=fleet.tmp / "x")
    with pytest.raises(DeviceRefused) as wrong:
        await asyncio.wait_for(impostor.run(asyncio.Event()), WAIT)
    assert "token" in str(wrong.value)
    assert fleet.dispatcher.devices() == []


@dataclass
class DroppingProxy:
    """A loopback relay between one device and the orchestrator that cuts the connection
    right after the device's first `task.result` has been forwarded, before the `ack`."""

    upstream: str
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    server: AipServer | None = None

    async def handle(self, device_side: Connection) -> None:
        orchestrator_side = await connect_aip(self.upstream)
        cut_this_one = not self.dropped.is_set()  # only the first connection is cut

        async def up() -> None:
            while True:
                frame, binary = await device_side.recv()
                await orchestrator_side.send_all([frame])
                if cut_this_one and not binary and json.loads(frame)["type"] == "task.result":
                    self.dropped.set()
                    await device_side.close("proxy cut the line")
                    await orchestrator_side.close("proxy cut the line")
                    return

        async def down() -> None:
            while True:
                frame, _ = await orchestrator_side.recv()
                if cut_this_one and self.dropped.is_set():
                    return  # the ack (or anything after the result) never reaches the device
                await device_side.send_all([frame])

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await device_side.close()
        await orchestrator_side.close()


async def test_result_survives_a_drop_between_result_and_ack_and_is_stored_once(
    fleet: Fleet,
) -> None:
    proxy = DroppingProxy(upstream=fleet.url)
    proxy.server = await serve_aip(proxy.handle, "127.0.0.1", 0)
    results: list[TaskResult] = []
    original = fleet.orchestrator.on_result

    def counting(result: TaskResult) -> None:
        results.append(result)
        original(result)

    fleet.dispatcher._sink = type(  # observe what the dispatcher hands the orchestrator
        "Spy",
        (),
        {
            "on_result": staticmethod(counting),
            "on_progress": staticmethod(fleet.orchestrator.on_progress),
            "on_devices_changed": staticmethod(fleet.orchestrator.on_devices_changed),
        },
    )()
    agent = fleet.start_agent("alpha", url=f"ws://127.0.0.1:{proxy.server.port}")
    await fleet.wait_devices(1)
    plan = {"name": "once", "stars": [{"id": "s", "tool": "shell.run", "args": {"cmd": "echo x"}}]}
    constellation = build_constellation(PlanSpec.model_validate(plan))
    final = await asyncio.wait_for(fleet.orchestrator.run(constellation), WAIT)

    assert proxy.dropped.is_set()
    assert final.status is ConstellationStatus.SUCCEEDED
    assert len(fleet.store.results(constellation.id)) == 1
    assert [(r.star_id, r.attempt) for r in results] == [("s", 1)]

    async def outbox_empty() -> None:
        while agent.outbox_path.exists() and _outbox_size(agent.outbox_path) > 0:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(outbox_empty(), WAIT)  # the re-sent result was acknowledged
    proxy.server.close()
    await proxy.server.wait_closed()


def _outbox_size(path: Path) -> int:
    from devices.outbox import Outbox

    with Outbox.open(path) as outbox:
        return len(outbox)


async def _raw_device(
    fleet: Fleet, name: str, *, tools: list[ToolDescription] | None = None
) -> tuple[DeviceSession, Connection]:
    """A hand-driven device: handshake done, then silent (it sends no heartbeats)."""
    session, connection, events = await _handshake(fleet, name, tools=tools)
    assert any(isinstance(e, Welcomed) for e in events), events
    return session, connection


async def _handshake(
    fleet: Fleet, name: str, *, tools: list[ToolDescription] | None = None
) -> tuple[DeviceSession, Connection, list[SessionEvent]]:
    """A hand-driven device's handshake, until `welcome` or until it is refused."""
    session = DeviceSession(
        hello=HelloBody(device=name, versions=[1], max_tasks=2, tools=tools or []),
        token=fleet.tokens[name],
        now=asyncio.get_running_loop().time,
    )
    connection = await connect_aip(fleet.url)
    session.start()
    events: list[SessionEvent] = []
    while not session.closed and not any(isinstance(e, Welcomed) for e in events):
        await connection.send_all(session.data_to_send())
        frame, binary = await asyncio.wait_for(connection.recv(), WAIT)
        session.receive_frame(frame, binary=binary)
        events += session.events_received()
    return session, connection, events


async def test_silent_device_is_lost_on_the_virtual_clock_and_its_work_fails_over(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    fleet = await make_fleet(
        tmp_path, ["mute"], clock=clock, heartbeat_interval=5.0, heartbeat_misses=3
    )
    failures: list[TaskResult] = []
    changes: list[int] = []

    class Sink:
        def on_result(self, result: TaskResult) -> None:
            failures.append(result)

        def on_progress(self, progress: object) -> None:
            pass

        def on_devices_changed(self) -> None:
            changes.append(len(fleet.dispatcher.devices()))

    fleet.dispatcher.attach(Sink())
    try:
        tools = [ToolDescription(name="shell.run")]
        session, connection = await _raw_device(fleet, "mute", tools=tools)
        await fleet.wait_devices(1)
        from protocol.tasks import TaskAssignment

        assignment = TaskAssignment(
            constellation_id="c", star_id="s", attempt=1, device="mute", tool="shell.run"
        )
        fleet.dispatcher.assign(assignment)
        frame, _ = await asyncio.wait_for(connection.recv(), WAIT)
        session.receive_frame(frame)
        assert any(isinstance(e, AssignmentReceived) for e in session.events_received())

        clock.advance(14.9)  # less than 3 missed heartbeats of 5 s: still alive
        assert [d.name for d in fleet.dispatcher.devices()] == ["mute"]
        assert failures == []
        clock.advance(5.2)  # past 15 s of silence
        assert fleet.dispatcher.devices() == []
        assert len(failures) == 1
        assert failures[0].status is TaskOutcome.FAILED
        assert "lost" in (failures[0].error or "")
        assert changes[-1] == 0
        await connection.close()
    finally:
        await shutdown(fleet)


async def test_result_for_another_devices_task_is_refused(fleet: Fleet) -> None:
    session, connection = await _raw_device(fleet, "beta")
    forged = TaskResult(
        constellation_id="c1",
        star_id="not-yours",
        attempt=1,
        status=TaskOutcome.SUCCEEDED,
        output={"pwned": True},
    )
    session.send_result(forged)
    await connection.send_all(session.data_to_send())
    frame, _ = await asyncio.wait_for(connection.recv(), WAIT)
    reply = json.loads(frame)
    assert reply["type"] == "error"
    assert reply["body"]["code"] == "not_your_task"
    assert fleet.store.results("c1") == []
    # The connection survives: a heartbeat still goes through.
    session.send_heartbeat(Load(running=0))
    await connection.send_all(session.data_to_send())
    assert [d.name for d in fleet.dispatcher.devices()] == ["beta"]
    await connection.close()


async def test_star_fails_over_when_its_device_is_killed(tmp_path: Path) -> None:
    """A device vanishes mid-star (no goodbye); once its grace runs out the attempt fails
    and the retry runs on the other device."""
    fleet = await make_fleet(tmp_path, ["one", "two"], heartbeat_interval=0.2, heartbeat_misses=2)
    try:
        first = fleet.start_agent("one")
        await fleet.wait_devices(1)
        fleet.start_agent("two")
        await fleet.wait_devices(2)
        plan = {
            "name": "failover",
            "stars": [
                {"id": "slow", "tool": "shell.run", "args": {"cmd": "sleep 30"}, "retries": 1}
            ],
        }
        # Make sure the first attempt lands on "one": take "two" out of the race briefly.
        constellation = build_constellation(PlanSpec.model_validate(plan))
        handle = fleet.orchestrator.submit(constellation)
        star = handle.constellation.stars["slow"]
        victim = star.attempts[0].device
        victim_task = fleet.agents[0] if victim == "one" else fleet.agents[1]
        assert first.name in ("one", "two")
        victim_task.cancel()  # the agent's process dies: sockets drop, nothing is sent

        async def retried() -> None:
            while len(handle.constellation.stars["slow"].attempts) < 2:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(retried(), WAIT)
        second = handle.constellation.stars["slow"].attempts[1]
        assert second.device != victim
        assert handle.constellation.stars["slow"].attempts[0].error is not None
        assert "lost" in (handle.constellation.stars["slow"].attempts[0].error or "")
        assert handle.constellation.stars["slow"].status is StarStatus.RUNNING
        handle.cancel("test over")
    finally:
        await shutdown(fleet)


async def test_cancelling_a_star_stops_it_on_the_remote_device(fleet: Fleet) -> None:
    pidfile = fleet.tmp / "alpha" / "workspace" / "pid"
    agent = fleet.start_agent("alpha")
    await fleet.wait_devices(1)
    plan = {
        "name": "cancel-me",
        "stars": [
            {"id": "long", "tool": "shell.run", "args": {"cmd": "echo $$ > pid; exec sleep 60"}}
        ],
    }
    handle = fleet.orchestrator.submit(build_constellation(PlanSpec.model_validate(plan)))

    async def started() -> None:
        while not (agent.running and pidfile.exists() and pidfile.read_text().strip()):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(started(), WAIT)
    pid = int(pidfile.read_text())
    handle.cancel("no longer needed")
    final = await asyncio.wait_for(handle.wait(), WAIT)
    assert final.status is ConstellationStatus.CANCELLED

    async def gone() -> None:
        while agent.running or _alive(pid):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(gone(), WAIT)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting to be reaped counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # it vanished while we looked
        return False


async def test_connection_that_never_says_hello_is_closed(tmp_path: Path) -> None:
    clock = VirtualClock()
    fleet = await make_fleet(
        tmp_path, ["quiet"], clock=clock, heartbeat_interval=5.0, heartbeat_misses=3
    )
    try:
        connection = await connect_aip(fleet.url)
        # An oversized frame is answered without closing: proof the session is up and its
        # handshake deadline set, before the clock moves.
        await connection.send_all(["x" * (DEFAULT_MAX_FRAME + 1)])
        refusal = json.loads((await asyncio.wait_for(connection.recv(), WAIT))[0])
        assert refusal["body"]["code"] == "too_large"
        clock.advance(14.0)
        assert fleet.dispatcher.devices() == []
        clock.advance(2.0)  # past 15 s without a hello
        frame, _ = await asyncio.wait_for(connection.recv(), WAIT)
        goodbye = json.loads(frame)
        assert goodbye["type"] == "bye"
        assert "handshake" in goodbye["body"]["reason"]
        with pytest.raises(TransportClosed):
            await asyncio.wait_for(connection.recv(), WAIT)
    finally:
        await shutdown(fleet)


async def test_args_that_do_not_fit_the_tools_schema_fail_before_assignment(fleet: Fleet) -> None:
    received: list[SessionEvent] = []
    fleet.start_agent("alpha", on_event=received.append)
    await fleet.wait_devices(1)
    plan = {
        "name": "bad-args",
        "stars": [
            {"id": "extra", "tool": "shell.run", "args": {"nope": 1}},
            {"id": "typed", "tool": "shell.run", "args": {"cmd": 1}},
            {"id": "fine", "tool": "shell.run", "args": {"cmd": "echo fine"}},
        ],
    }
    constellation = build_constellation(PlanSpec.model_validate(plan))
    final = await asyncio.wait_for(fleet.orchestrator.run(constellation), WAIT)

    stars = final.stars
    assert stars["fine"].status is StarStatus.SUCCEEDED
    assert stars["extra"].status is StarStatus.FAILED
    assert stars["extra"].error == (
        "attempt 1/1: star 'extra': invalid arguments for shell.run: args: Additional "
        "properties are not allowed ('nope' was unexpected); args: 'cmd' is a required "
        "property; fix the star's args to match the schema device 'alpha' announced for it"
    )
    assert (stars["typed"].error or "").startswith(
        "attempt 1/1: star 'typed': invalid arguments for shell.run: args.cmd: 1 is not of "
        "type 'string'"
    )
    assigned = [e.assignment.star_id for e in received if isinstance(e, AssignmentReceived)]
    assert assigned == ["fine"]  # the others never reached the device
    assert [r.star_id for r in fleet.store.results(constellation.id)] == ["fine"]


async def test_args_are_checked_in_the_dialect_the_schema_declares(fleet: Fleet) -> None:
    """A Draft 7 tuple (`items` as a list) is checked as Draft 7; the same schema without
    `$schema` is Draft 2020-12, where it is no schema at all: the star fails saying so."""
    pair = {
        "type": "object",
        "properties": {"pair": {"items": [{"type": "string"}, {"type": "integer"}]}},
    }
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", **pair}
    tools = [
        ToolDescription(name="pair.old", args_schema=draft7),
        ToolDescription(name="pair.new", args_schema=pair),
    ]
    _, connection = await _raw_device(fleet, "beta", tools=tools)
    await fleet.wait_devices(1)
    failures: list[TaskResult] = []
    fleet.dispatcher.attach(_Failures(failures))
    for star, tool, pair_value in [
        ("a", "pair.old", ["x", "y"]),
        ("b", "pair.new", ["x", 1]),
    ]:
        fleet.dispatcher.assign(
            TaskAssignment(
                constellation_id="c",
                star_id=star,
                attempt=1,
                device="beta",
                tool=tool,
                args={"pair": pair_value},
            )
        )
    assert [f.star_id for f in failures] == ["a", "b"]
    assert "args.pair.1: 'y' is not of type 'integer'" in (failures[0].error or "")
    assert "is not a usable JSON Schema" in (failures[1].error or "")
    fleet.dispatcher.assign(
        TaskAssignment(
            constellation_id="c",
            star_id="c",
            attempt=1,
            device="beta",
            tool="pair.old",
            args={"pair": ["x", 1]},
        )
    )
    frame, _ = await asyncio.wait_for(connection.recv(), WAIT)
    assert json.loads(frame)["body"]["star_id"] == "c"  # valid for Draft 7: sent
    await connection.close()


class _Failures:
    def __init__(self, into: list[TaskResult], states: list[tuple[str, str]] | None = None) -> None:
        self.into = into
        self.states = states

    def on_device_change(self, change: DeviceChange) -> None:
        if self.states is not None:
            self.states.append((change.device, change.state))

    def on_approval(self, asked: object) -> None:
        pass

    def on_result(self, result: TaskResult) -> None:
        self.into.append(result)

    def on_progress(self, progress: object) -> None:
        pass

    def on_devices_changed(self) -> None:
        pass


async def test_a_device_stopped_on_purpose_is_offline_not_lost_and_hands_its_star_over(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    states: list[tuple[str, str]] = []
    fleet = await make_fleet(
        tmp_path, ["one", "two"], clock=clock, observe=lambda d, s, _: states.append((d, s))
    )
    try:
        stop_one = asyncio.Event()
        one = DeviceAgent(
            fleet.url,
            "one",
            fleet.tokens["one"],
            data_dir=fleet.tmp / "one",
            backoff=Backoff(initial=0.01, factor=2, maximum=0.1),
            shutdown_grace=0.0,
        )
        running_one = asyncio.create_task(one.run(stop_one))
        await fleet.wait_devices(1)
        ready = fleet.tmp / "two" / "workspace"
        ready.mkdir(parents=True)
        (ready / "here").touch()  # the star finishes at once on "two" only
        plan = {
            "name": "handover",
            "stars": [
                {
                    "id": "work",
                    "tool": "shell.run",
                    "args": {"cmd": "test -e here || exec sleep 60"},
                    "retries": 1,
                }
            ],
        }
        handle = fleet.orchestrator.submit(build_constellation(PlanSpec.model_validate(plan)))

        async def started() -> None:
            while not one.running:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(started(), WAIT)
        fleet.start_agent("two")
        await fleet.wait_devices(2)
        stop_one.set()  # as SIGTERM does in `orrery device`
        await asyncio.wait_for(running_one, WAIT)
        final = await asyncio.wait_for(handle.wait(), WAIT)

        assert final.status is ConstellationStatus.SUCCEEDED
        first, second = final.stars["work"].attempts
        assert first.device == "one"
        assert "'one' shut down before the star finished" in (first.error or "")
        assert second.device == "two"
        assert [state for device, state in states if device == "one"][-1] == "offline"
        clock.advance(3 * ServerConfig().heartbeat_interval * ServerConfig().heartbeat_misses)
        assert ("one", "lost") not in states  # it said goodbye: no grace, no loss
    finally:
        await shutdown(fleet)


async def test_attempts_a_leaving_device_still_holds_fail_over_at_once(tmp_path: Path) -> None:
    clock = VirtualClock()  # never advanced: nothing may wait for a grace period
    states: list[tuple[str, str]] = []
    fleet = await make_fleet(
        tmp_path, ["raw"], clock=clock, observe=lambda d, s, _: states.append((d, s))
    )
    failures: list[TaskResult] = []
    failed = asyncio.Event()

    class Sink(_Failures):
        def on_result(self, result: TaskResult) -> None:
            super().on_result(result)
            failed.set()

    fleet.dispatcher.attach(Sink(failures, states))
    try:
        tools = [ToolDescription(name="shell.run")]
        session, connection = await _raw_device(fleet, "raw", tools=tools)
        await fleet.wait_devices(1)
        assignment = TaskAssignment(
            constellation_id="c", star_id="s", attempt=1, device="raw", tool="shell.run"
        )
        fleet.dispatcher.assign(assignment)
        frame, _ = await asyncio.wait_for(connection.recv(), WAIT)
        session.receive_frame(frame)
        session.close("going for lunch")  # a bye, without handing the attempt back
        await connection.send_all(session.data_to_send())
        await asyncio.wait_for(failed.wait(), WAIT)
        (failure,) = failures
        assert failure.status is TaskOutcome.FAILED
        assert failure.error == (
            "device 'raw' left (going for lunch) before the star finished; "
            "it can run on another device"
        )
        assert fleet.dispatcher.devices() == []
        assert states[-1] == ("raw", "offline")
        assert ("raw", "lost") not in states
        await connection.close()
    finally:
        await shutdown(fleet)


async def test_a_second_process_with_the_same_name_is_refused_and_evicts_nobody(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    first_events: list[SessionEvent] = []
    stop_first = asyncio.Event()
    first = DeviceAgent(
        fleet.url,
        "alpha",
        fleet.tokens["alpha"],
        data_dir=fleet.tmp / "alpha",
        backoff=Backoff(initial=0.01, factor=2, maximum=0.1),
        on_event=first_events.append,
    )
    running_first = asyncio.create_task(first.run(stop_first))
    await fleet.wait_devices(1)

    refusals: list[PeerError] = []
    refused_thrice = asyncio.Event()
    second_welcomed = asyncio.Event()

    def second_saw(event: SessionEvent) -> None:
        if isinstance(event, PeerError):
            refusals.append(event)
            if len(refusals) == 3:
                refused_thrice.set()
        elif isinstance(event, Welcomed):
            second_welcomed.set()

    stop_second = asyncio.Event()
    second = DeviceAgent(
        fleet.url,
        "alpha",
        fleet.tokens["alpha"],
        data_dir=fleet.tmp / "alpha-again",
        backoff=Backoff(initial=0.01, factor=2, maximum=0.1),
        on_event=second_saw,
    )
    running_second = asyncio.create_task(second.run(stop_second))
    try:
        await asyncio.wait_for(refused_thrice.wait(), WAIT)
        assert {r.code for r in refusals} == {ErrorCode.ALREADY_CONNECTED}
        refusal = refusals[0].message
        assert refusal.startswith("device 'alpha' is already connected (from 127.0.0.1:")
        assert "stop the other process, or enrol this one under a name of its own" in refusal
        assert first.connected
        assert not second.connected
        said = [r.getMessage() for r in caplog.records if r.name == "orrery.device"]
        assert any(
            line.startswith("device alpha: cannot connect to ")
            and "(refused by the orchestrator: device 'alpha' is already connected" in line
            and "; retrying in " in line
            for line in said
        ), said
        assert [type(e) for e in first_events].count(Welcomed) == 1
        assert not any(isinstance(e, SessionClosed) for e in first_events)  # never evicted
        assert [d.name for d in fleet.dispatcher.devices()] == ["alpha"]

        stop_first.set()  # the first one leaves: the second takes the name over
        await asyncio.wait_for(running_first, WAIT)
        await asyncio.wait_for(second_welcomed.wait(), WAIT)
        assert second.connected
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.wait_for(asyncio.gather(running_first, running_second), WAIT)


async def test_a_new_connection_replaces_one_that_went_quiet(tmp_path: Path) -> None:
    clock = VirtualClock()
    fleet = await make_fleet(tmp_path, ["half"], clock=clock)
    try:
        _, old_connection = await _raw_device(fleet, "half")
        await fleet.wait_devices(1)
        _, _, early = await _handshake(fleet, "half")  # the old one is live: refused
        (refused,) = [e for e in early if isinstance(e, PeerError)]
        assert refused.code is ErrorCode.ALREADY_CONNECTED

        clock.advance(2 * ServerConfig().heartbeat_interval + 0.1)  # missed a heartbeat
        _, new_connection, events = await _handshake(fleet, "half")
        assert any(isinstance(e, Welcomed) for e in events)
        frame, _ = await asyncio.wait_for(old_connection.recv(), WAIT)
        goodbye = json.loads(frame)
        assert goodbye["type"] == "bye"
        assert goodbye["body"]["reason"] == "replaced by a new connection from the same device"
        assert [d.name for d in fleet.dispatcher.devices()] == ["half"]
        await new_connection.close()
        await old_connection.close()
    finally:
        await shutdown(fleet)


async def _until_assigned(session: DeviceSession, connection: Connection) -> TaskAssignment:
    """Read frames on a hand-driven device until a `task.assign` arrives; the assignment."""
    while True:
        await connection.send_all(session.data_to_send())
        frame, binary = await asyncio.wait_for(connection.recv(), WAIT)
        session.receive_frame(frame, binary=binary)
        for event in session.events_received():
            if isinstance(event, AssignmentReceived):
                await connection.send_all(session.data_to_send())
                return event.assignment


async def test_a_device_back_without_its_attempt_has_it_fail_over_at_once(tmp_path: Path) -> None:
    """A device that reconnects with an empty `resume` (it restarted: its process and the
    star's process are gone) gets its attempt reported interrupted at once; one that says
    it still runs the attempt keeps it. The virtual clock never moves: no grace ran out."""
    clock = VirtualClock()
    start = clock.now()
    fleet = await make_fleet(tmp_path, ["restarted", "resumed"], clock=clock)
    shell = [ToolDescription(name="shell.run", args_schema={"type": "object"})]
    try:
        outcomes = {}
        for name in ("restarted", "resumed"):
            session, connection = await _raw_device(fleet, name, tools=shell)
            await fleet.wait_devices(1)
            plan = {"name": name, "stars": [{"id": "s", "tool": "shell.run", "args": {}}]}
            handle = fleet.orchestrator.submit(build_constellation(PlanSpec.model_validate(plan)))
            assignment = await _until_assigned(session, connection)
            await connection.close()  # the socket drops without a goodbye
            running = [ref_of(assignment)] if name == "resumed" else []
            again = DeviceSession(
                hello=HelloBody(
                    device=name,
                    versions=[1],
                    max_tasks=2,
                    tools=shell,
                    resume=ResumeState(running=running),
                ),
                token=fleet.tokens[name],
                now=asyncio.get_running_loop().time,
            )
            new_connection = await connect_aip(fleet.url)
            again.start()
            while not any(isinstance(e, Welcomed) for e in again.events_received()):
                await new_connection.send_all(again.data_to_send())
                frame, binary = await asyncio.wait_for(new_connection.recv(), WAIT)
                again.receive_frame(frame, binary=binary)
            if name == "resumed":  # still its attempt: its result is taken
                again.send_result(TaskResult.success(assignment, {"stdout": "done"}))
                await new_connection.send_all(again.data_to_send())
            final = await asyncio.wait_for(handle.wait(), WAIT)
            outcomes[name] = (final.status, final.stars["s"].attempts[0].error)
            await new_connection.close()
        assert outcomes["resumed"] == (ConstellationStatus.SUCCEEDED, None)
        status, error = outcomes["restarted"]
        assert status is ConstellationStatus.FAILED
        assert "came back without this attempt" in (error or "")
        assert clock.now() == start  # no timer ran: nothing waited for a grace
    finally:
        await shutdown(fleet)
