"""`DeviceAgent` against a small orchestrator side on real loopback sockets; `Backoff`.

The orchestrator here is `serve_aip` + `ServerSession` and nothing else: it welcomes the
device, records every event with the connection it came on, acknowledges results (unless
told not to) and can drop a connection. The agent runs in-process as an asyncio task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from devices.agent import DeviceAgent, DeviceRefused
from devices.backoff import Backoff
from devices.outbox import Outbox
from protocol.auth import DeviceKey, enroll
from protocol.messages import ErrorCode, TaskRef
from protocol.session import (
    DeviceAuthenticated,
    HeartbeatReceived,
    PeerError,
    ProgressReceived,
    ResultAcked,
    ResultReceived,
    ServerConfig,
    ServerSession,
    SessionClosed,
    SessionEvent,
    TaskAccepted,
    Welcomed,
)
from protocol.tasks import TaskAssignment, TaskOutcome
from protocol.transport import AipServer, Connection, SessionDriver, serve_aip

if TYPE_CHECKING:
    from tests.devices.conftest import Pids

WAIT = 15.0  # bound for anything awaited; correctness never depends on a sleep
DEVICE = "dev-a"
HEARTBEAT = 0.05  # seconds, sent in `welcome`

E = TypeVar("E", bound=SessionEvent)


@functools.cache
def enrolled(device: str) -> tuple[str, DeviceKey]:
    """A token and the orchestrator's key record, once per test run (PBKDF2 is slow)."""
    return enroll(device)


def ref(star: str, attempt: int = 1) -> TaskRef:
    return TaskRef(constellation_id="c1", star_id=star, attempt=attempt)


def shell(star: str, cmd: str, attempt: int = 1) -> TaskAssignment:
    return TaskAssignment(
        constellation_id="c1",
        star_id=star,
        attempt=attempt,
        device=DEVICE,
        tool="shell.run",
        args={"cmd": cmd},
        timeout=WAIT,
    )


class Log:
    """Items with an arrival time, awaitable until one matches."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Any]] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append((time.monotonic(), item))
        self._changed.set()

    async def wait(self, predicate: Callable[[Any], bool], count: int = 1) -> list[Any]:
        """The first `count` matching items, once that many have arrived."""
        async with asyncio.timeout(WAIT):
            while True:
                self._changed.clear()
                found = [item for _, item in self.items if predicate(item)]
                if len(found) >= count:
                    return found[:count]
                await self._changed.wait()

    def times(self, predicate: Callable[[Any], bool]) -> list[float]:
        return [at for at, item in self.items if predicate(item)]


@dataclass
class Seen:
    """One event the orchestrator saw, and on which connection (0, 1, ...)."""

    connection: int
    event: SessionEvent


def kind(event_type: type[E], connection: int | None = None) -> Callable[[Any], bool]:
    """A predicate for `Log.wait`: a `Seen` of this type (on this connection)."""

    def matches(seen: Any) -> bool:
        return isinstance(seen.event, event_type) and connection in (None, seen.connection)

    return matches


class Orchestrator:
    """The orchestrator's side of AIP, reduced to what these tests need."""

    def __init__(self, keys: dict[str, DeviceKey], config: ServerConfig) -> None:
        self.keys = keys
        self.config = config
        self.seen = Log()
        self.auto_ack = True
        self.drop_on_result = False  # drop the connection on the next result, without an ack
        self.assigned: set[tuple[str, str, int]] = set()
        self.connections = 0
        self._current: tuple[ServerSession, SessionDriver, Connection] | None = None
        self.server: AipServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.port}"

    async def handle(self, connection: Connection) -> None:
        number = self.connections
        self.connections += 1
        session = ServerSession(
            keys=self.keys.get,
            now=time.monotonic,
            config=self.config,
            owns=lambda device, key: key in self.assigned,
        )
        driver = SessionDriver(
            session, connection, functools.partial(self._on_events, number, session, connection)
        )
        self._current = (session, driver, connection)
        await driver.run()

    def _on_events(
        self,
        number: int,
        session: ServerSession,
        connection: Connection,
        events: list[SessionEvent],
    ) -> None:
        for event in events:
            self.seen.add(Seen(number, event))
            if isinstance(event, DeviceAuthenticated):
                session.welcome()
            elif isinstance(event, ResultReceived):
                if self.drop_on_result:
                    self.drop_on_result = False
                    asyncio.get_running_loop().create_task(connection.close("dropped by test"))
                elif self.auto_ack:
                    session.ack_result(event.result, event.message_id)

    def assign(self, assignment: TaskAssignment) -> None:
        assert self._current is not None
        session, driver, _ = self._current
        self.assigned.add((assignment.constellation_id, assignment.star_id, assignment.attempt))
        session.assign(assignment)
        driver.flush()

    def cancel(self, task: TaskRef) -> None:
        assert self._current is not None
        session, driver, _ = self._current
        self.assigned.discard(task.key)
        session.cancel(task, "stopped by the test")
        driver.flush()

    async def drop(self) -> None:
        """Close the current connection without a goodbye (as a crash or a network loss)."""
        assert self._current is not None
        _, _, connection = self._current
        self._current = None
        await connection.close("dropped by test")

    def results(self, star: str) -> list[ResultReceived]:
        return [
            seen.event
            for _, seen in self.seen.items
            if isinstance(seen.event, ResultReceived) and seen.event.result.star_id == star
        ]


@pytest.fixture
async def orchestrator() -> AsyncIterator[Orchestrator]:
    _, key = enrolled(DEVICE)
    orch = Orchestrator({DEVICE: key}, ServerConfig(heartbeat_interval=HEARTBEAT))
    async with await serve_aip(orch.handle, "127.0.0.1", 0) as server:
        orch.server = server
        yield orch


class Running:
    """A `DeviceAgent` running as a task, its events, and a way to stop it."""

    def __init__(self, agent: DeviceAgent, events: Log) -> None:
        self.agent = agent
        self.events = events
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(agent.run(self.stop))

    async def stopped(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, WAIT)

    def unacked_on_disk(self) -> list[tuple[str, str, int]]:
        with Outbox.open(self.agent.outbox_path) as outbox:
            return [key for key, _ in outbox.pending()]


@pytest.fixture
async def start(
    tmp_path: Path, workspace: Path, orchestrator: Orchestrator
) -> AsyncIterator[Callable[..., Running]]:
    started: list[Running] = []

    def starter(token: str | None = None, name: str = DEVICE, **options: Any) -> Running:
        events = Log()
        agent = DeviceAgent(
            orchestrator.url,
            name,
            token if token is not None else enrolled(DEVICE)[0],
            data_dir=tmp_path / "data",
            workspace=workspace,
            labels=["test"],
            max_tasks=3,
            backoff=Backoff(initial=0.01, factor=2, maximum=0.05),
            on_event=events.add,
            **options,
        )
        running = Running(agent, events)
        started.append(running)
        return running

    yield starter
    for running in started:
        running.stop.set()
        await asyncio.gather(asyncio.wait_for(running.task, WAIT), return_exceptions=True)


def is_event(event_type: type[E]) -> Callable[[Any], bool]:
    return lambda event: isinstance(event, event_type)


# ------------------------------------------------------------------ handshake and results


async def test_hello_describes_the_device_and_its_tools(
    orchestrator: Orchestrator, start: Callable[..., Running]
) -> None:
    device = start()
    (seen,) = await orchestrator.seen.wait(kind(DeviceAuthenticated))
    await device.events.wait(is_event(Welcomed))
    hello = seen.event.hello
    assert hello.device == DEVICE
    assert {"test", hello.platform} <= set(hello.labels)  # the platform is a label too
    assert hello.max_tasks == 3
    assert hello.resources.cpus >= 1
    assert hello.resources.memory_mb > 0
    tools = {tool.name: tool for tool in hello.tools}
    assert {"shell.run", "python.run", "fs.read", "fs.write", "fs.list"} <= set(tools)
    assert "cmd" in tools["shell.run"].args_schema["properties"]
    assert tools["shell.run"].description
    assert hello.resume.running == []
    assert hello.resume.unacked == []
    assert device.agent.connected


HAS_MEMINFO = Path("/proc/meminfo").exists()


def meminfo_mib() -> int:
    """MemTotal from /proc/meminfo (in kB there), in MiB, read here independently."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            number, unit = line.split()[1:3]
            assert unit == "kB"
            return int(number) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


async def test_hello_reports_the_vram_the_probe_reads_and_the_memory_of_the_host(
    orchestrator: Orchestrator, start: Callable[..., Running]
) -> None:
    probed: list[None] = []

    def probe() -> int | None:
        probed.append(None)
        return 3 * 2**30 + 5

    start(free_vram=probe)
    (seen,) = await orchestrator.seen.wait(kind(DeviceAuthenticated))
    resources = seen.event.hello.resources
    assert probed
    assert resources.gpu is True
    assert resources.vram_free_mb == 3 * 1024
    if HAS_MEMINFO:
        assert resources.memory_mb == meminfo_mib()


async def test_without_a_probe_the_device_reports_no_gpu(
    orchestrator: Orchestrator, start: Callable[..., Running]
) -> None:
    start()
    (seen,) = await orchestrator.seen.wait(kind(DeviceAuthenticated))
    assert seen.event.hello.resources.gpu is False
    assert seen.event.hello.resources.vram_free_mb == 0


async def test_an_assigned_task_reports_progress_and_a_result_that_is_acked(
    orchestrator: Orchestrator, start: Callable[..., Running]
) -> None:
    device = start()
    await orchestrator.seen.wait(kind(DeviceAuthenticated))
    orchestrator.assign(shell("hi", "echo hi"))
    await orchestrator.seen.wait(kind(TaskAccepted))
    (progress,) = await orchestrator.seen.wait(kind(ProgressReceived))
    (seen,) = await orchestrator.seen.wait(kind(ResultReceived))
    assert progress.event.progress.message == "hi"
    result = seen.event.result
    assert (result.star_id, result.attempt, result.status) == ("hi", 1, TaskOutcome.SUCCEEDED)
    assert result.output["stdout"] == "hi\n"
    (acked,) = await device.events.wait(is_event(ResultAcked))
    assert acked.task == ref("hi")
    assert device.agent.unacked() == []
    await device.stopped()
    assert device.unacked_on_disk() == []


@pytest.mark.parametrize(
    ("token", "name", "code"),
    [
        ("orr1_not-the-right-token", DEVICE, ErrorCode.BAD_PROOF),
        (None, "stranger", ErrorCode.UNKNOWN_DEVICE),
    ],
)
async def test_a_refused_device_stops_at_once_without_retrying(
    orchestrator: Orchestrator,
    start: Callable[..., Running],
    token: str | None,
    name: str,
    code: ErrorCode,
) -> None:
    device = start(token=token, name=name)
    with pytest.raises(DeviceRefused) as refused:
        await asyncio.wait_for(device.task, WAIT)
    assert refused.value.code is code
    assert name in refused.value.message
    assert orchestrator.connections == 1


async def test_a_result_not_acked_before_a_drop_is_sent_again_after_reconnecting(
    orchestrator: Orchestrator, start: Callable[..., Running]
) -> None:
    orchestrator.drop_on_result = True
    device = start()
    await orchestrator.seen.wait(kind(DeviceAuthenticated, 0))
    orchestrator.assign(shell("once", "echo once"))
    await orchestrator.seen.wait(kind(ResultReceived, 0))
    (hello,) = await orchestrator.seen.wait(kind(DeviceAuthenticated, 1))
    assert hello.event.hello.resume.unacked == [ref("once")]  # the device said what it holds
    (again,) = await orchestrator.seen.wait(kind(ResultReceived, 1))
    first, second = orchestrator.results("once")
    assert (again.event.result.star_id, again.event.result.attempt) == ("once", 1)
    assert first.result == second.result  # the same attempt, delivered twice: at least once
    await device.events.wait(is_event(ResultAcked))
    assert device.agent.unacked() == []
    await device.stopped()
    assert device.unacked_on_disk() == []


async def test_a_task_keeps_running_across_a_reconnect_and_reports_afterwards(
    orchestrator: Orchestrator, start: Callable[..., Running], workspace: Path
) -> None:
    gate = workspace / "gate"
    os.mkfifo(gate)
    device = start()
    await orchestrator.seen.wait(kind(DeviceAuthenticated, 0))
    orchestrator.assign(shell("slow", "read word < gate; echo got $word"))
    await orchestrator.seen.wait(kind(TaskAccepted, 0))
    await orchestrator.drop()
    await device.events.wait(is_event(SessionClosed))
    (hello,) = await orchestrator.seen.wait(kind(DeviceAuthenticated, 1))
    assert hello.event.hello.resume.running == [ref("slow")]
    assert orchestrator.results("slow") == []
    await asyncio.wait_for(asyncio.to_thread(gate.write_text, "ready\n"), WAIT)
    (seen,) = await orchestrator.seen.wait(kind(ResultReceived, 1))
    assert seen.event.result.output["stdout"] == "got ready\n"
    await device.events.wait(is_event(ResultAcked))
    await device.stopped()
    assert device.unacked_on_disk() == []


# ------------------------------------------------------------------ heartbeats and cancel


async def test_heartbeats_arrive_at_the_interval_and_carry_the_load(
    orchestrator: Orchestrator, start: Callable[..., Running], pids: Pids
) -> None:
    start()
    await orchestrator.seen.wait(kind(DeviceAuthenticated))
    beats = await orchestrator.seen.wait(kind(HeartbeatReceived), count=4)
    assert all(beat.event.load.running == 0 for beat in beats)
    times = orchestrator.seen.times(kind(HeartbeatReceived))[:4]
    assert times[-1] - times[0] >= 3 * HEARTBEAT * 0.8  # a timer, not a busy loop
    assert all(beat.event.load.memory_percent > 0 for beat in beats)

    orchestrator.assign(shell("busy", "echo $$; exec sleep 60"))
    (started,) = await orchestrator.seen.wait(kind(ProgressReceived))
    pids.seen.append(int(started.event.progress.message))
    busy = await orchestrator.seen.wait(
        lambda seen: isinstance(seen.event, HeartbeatReceived) and seen.event.load.running == 1
    )
    assert busy


async def test_a_cancelled_task_is_killed_and_reports_nothing(
    orchestrator: Orchestrator, start: Callable[..., Running], pids: Pids
) -> None:
    device = start()
    await orchestrator.seen.wait(kind(DeviceAuthenticated))
    orchestrator.assign(shell("doomed", "echo $$; exec sleep 60"))
    (started,) = await orchestrator.seen.wait(kind(ProgressReceived))
    pid = int(started.event.progress.message)
    pids.seen.append(pid)
    assert pids.alive(pid)
    orchestrator.cancel(ref("doomed"))
    await pids.gone(pid)
    orchestrator.assign(shell("after", "echo after"))  # the device still works afterwards
    await orchestrator.seen.wait(
        lambda seen: isinstance(seen.event, ResultReceived) and seen.event.result.star_id == "after"
    )
    await device.events.wait(is_event(ResultAcked))
    assert device.agent.running == []
    await device.stopped()
    assert orchestrator.results("doomed") == []
    assert device.unacked_on_disk() == []  # no result was made for it, sent or kept


async def test_an_assignment_for_another_device_is_accepted_and_failed_not_run(
    orchestrator: Orchestrator, start: Callable[..., Running], workspace: Path
) -> None:
    device = start()
    await orchestrator.seen.wait(kind(DeviceAuthenticated))
    stray = shell("stray", "touch ran").model_copy(update={"device": "someone-else"})
    orchestrator.assign(stray)
    await orchestrator.seen.wait(kind(TaskAccepted))
    (seen,) = await orchestrator.seen.wait(kind(ResultReceived))
    result = seen.event.result
    assert result.status is TaskOutcome.FAILED
    assert result.error == (
        f"task.assign names device 'someone-else', but this is device '{DEVICE}'; not run"
    )
    await device.events.wait(is_event(ResultAcked))
    assert not (workspace / "ran").exists()


async def test_a_result_that_crosses_a_cancel_is_refused_and_dropped(
    orchestrator: Orchestrator, start: Callable[..., Running]
) -> None:
    """The device's own timeout fires just as the orchestrator gives up on the attempt:
    its result meets `not_your_task`, the device drops it, and the late cancel is harmless."""
    device = start()
    await orchestrator.seen.wait(kind(DeviceAuthenticated))
    racing = shell("racing", "exec sleep 30").model_copy(update={"timeout": 0.2})
    orchestrator.assign(racing)
    await orchestrator.seen.wait(kind(TaskAccepted))
    orchestrator.assigned.discard(racing.key)  # fenced on the orchestrator's side first
    (refused,) = await device.events.wait(
        lambda e: isinstance(e, PeerError) and e.code is ErrorCode.NOT_YOUR_TASK
    )
    assert "racing" in refused.message
    assert device.agent.unacked() == []  # dropped from the outbox: it can never succeed
    orchestrator.cancel(ref("racing"))  # the cancel that crossed it: nothing to stop
    orchestrator.assign(shell("after", "echo after"))
    await orchestrator.seen.wait(
        lambda seen: isinstance(seen.event, ResultReceived) and seen.event.result.star_id == "after"
    )
    assert orchestrator.results("racing") == []
    await device.stopped()
    assert device.unacked_on_disk() == []


async def test_stopping_says_goodbye(
    orchestrator: Orchestrator, start: Callable[..., Running]
) -> None:
    device = start()
    await device.events.wait(is_event(Welcomed))
    await device.stopped()
    (closed,) = await orchestrator.seen.wait(kind(SessionClosed))
    assert closed.event.reason == "device stopping"
    assert not closed.event.dropped


# ------------------------------------------------------------------ handing back at stop


class LogRecords(logging.Handler):
    """The device agent's log messages, in a `Log` (to wait until it says something)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages = Log()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.add(record.getMessage())


@pytest.fixture
def device_log() -> Iterator[Log]:
    logger = logging.getLogger("orrery.device")
    handler, level = LogRecords(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(level)


async def blocked_on_a_fifo(
    orchestrator: Orchestrator, device: Running, workspace: Path, star: str
) -> Path:
    """Assign a star that waits until the test writes a line to a FIFO; once it runs."""
    fifo = workspace / f"{star}.fifo"
    os.mkfifo(fifo)
    await device.events.wait(is_event(Welcomed))
    orchestrator.assign(shell(star, f"read line < {fifo.name}; echo got $line"))
    await orchestrator.seen.wait(kind(TaskAccepted))
    return fifo


async def stop_and_wait_for_the_hand_back(device: Running, device_log: Log) -> None:
    device.stop.set()
    await device_log.wait(lambda message: "star(s) get up to" in message)


async def test_stopping_lets_a_running_star_finish_within_the_grace(
    orchestrator: Orchestrator, start: Callable[..., Running], workspace: Path, device_log: Log
) -> None:
    device = start(shutdown_grace=WAIT)
    fifo = await blocked_on_a_fifo(orchestrator, device, workspace, "slow")
    await stop_and_wait_for_the_hand_back(device, device_log)
    assert not device.task.done()  # waiting for the star, not for the grace to pass
    await asyncio.wait_for(asyncio.to_thread(fifo.write_text, "go\n"), WAIT)
    await asyncio.wait_for(device.task, WAIT)
    (result,) = orchestrator.results("slow")
    assert result.result.status is TaskOutcome.SUCCEEDED
    assert result.result.output["stdout"] == "got go\n"
    (closed,) = await orchestrator.seen.wait(kind(SessionClosed))
    assert closed.event.reason == "device stopping"
    assert device.unacked_on_disk() == []  # acknowledged before the goodbye


async def test_a_star_still_running_after_the_grace_is_handed_back_as_failed(
    orchestrator: Orchestrator, start: Callable[..., Running], workspace: Path, device_log: Log
) -> None:
    device = start(shutdown_grace=0.2)
    await blocked_on_a_fifo(orchestrator, device, workspace, "stuck")
    began = time.monotonic()
    await stop_and_wait_for_the_hand_back(device, device_log)
    await asyncio.wait_for(device.task, WAIT)
    assert time.monotonic() - began >= 0.2
    (result,) = orchestrator.results("stuck")
    assert result.result.status is TaskOutcome.FAILED
    assert "shut down before the star finished" in (result.result.error or "")
    assert device.unacked_on_disk() == []  # the failure was acknowledged before the goodbye


async def test_an_unacknowledged_hand_back_is_kept_after_a_bounded_wait(
    orchestrator: Orchestrator, start: Callable[..., Running], workspace: Path, device_log: Log
) -> None:
    orchestrator.auto_ack = False
    device = start(shutdown_grace=0.1)
    await blocked_on_a_fifo(orchestrator, device, workspace, "unacked")
    await stop_and_wait_for_the_hand_back(device, device_log)
    await orchestrator.seen.wait(kind(ResultReceived))
    began = time.monotonic()
    await asyncio.wait_for(device.task, WAIT)
    assert 1.5 <= time.monotonic() - began <= WAIT  # it waited ~2 s for the ack, no longer
    assert device.unacked_on_disk() == [("c1", "unacked", 1)]  # sent again after a restart


async def test_the_agent_keeps_dialling_until_the_orchestrator_is_there(
    tmp_path: Path, workspace: Path
) -> None:
    _, key = enrolled(DEVICE)
    orch = Orchestrator({DEVICE: key}, ServerConfig(heartbeat_interval=HEARTBEAT))
    server = await serve_aip(orch.handle, "127.0.0.1", 0)
    port = server.port
    server.close()
    await server.wait_closed()
    events = Log()
    agent = DeviceAgent(
        f"ws://127.0.0.1:{port}",
        DEVICE,
        enrolled(DEVICE)[0],
        data_dir=tmp_path / "data",
        workspace=workspace,
        backoff=Backoff(initial=0.01, maximum=0.02),
        on_event=events.add,
    )
    running = Running(agent, events)
    try:
        async with await serve_aip(orch.handle, "127.0.0.1", port) as orch.server:
            await events.wait(is_event(Welcomed))
    finally:
        await running.stopped()


def test_a_bad_url_or_name_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ws://HOST:PORT"):
        DeviceAgent("localhost:8765", DEVICE, "t", data_dir=tmp_path)
    with pytest.raises(ValueError, match="device"):
        DeviceAgent("ws://localhost:8765", "no spaces allowed", "t", data_dir=tmp_path)


# ------------------------------------------------------------------ backoff


def test_backoff_grows_exponentially_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.5, factor=2, maximum=3)
    ceilings = []
    rng = random.Random(7)
    for _ in range(6):
        ceilings.append(backoff.ceiling)
        backoff.next_delay(rng)
    assert ceilings == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_backoff_delays_are_fully_jittered_below_the_ceiling() -> None:
    rng = random.Random(1)
    delays = []
    for _ in range(2000):
        backoff = Backoff(initial=1, factor=2, maximum=30)
        delays.append(backoff.next_delay(rng))
    assert all(0 <= delay <= 1 for delay in delays)
    assert min(delays) < 0.05  # spread over the whole range
    assert max(delays) > 0.95
    assert 0.45 < sum(delays) / len(delays) < 0.55


def test_backoff_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(initial=0.5, maximum=30)
    rng = random.Random(3)
    for _ in range(5):
        backoff.next_delay(rng)
    assert backoff.ceiling == 16.0
    backoff.reset()
    assert backoff.ceiling == 0.5
    assert backoff.next_delay(rng) <= 0.5


def test_backoff_survives_very_many_failures() -> None:
    backoff = Backoff(initial=0.5, factor=10, maximum=60)
    rng = random.Random(5)
    assert all(0 <= backoff.next_delay(rng) <= 60 for _ in range(10_000))
    assert backoff.ceiling == 60


def test_backoff_is_the_same_for_the_same_random_sequence() -> None:
    first, second = Backoff(), Backoff()
    rng_a, rng_b = random.Random(11), random.Random(11)
    assert [first.next_delay(rng_a) for _ in range(8)] == [
        second.next_delay(rng_b) for _ in range(8)
    ]


@pytest.mark.parametrize(
    "options",
    [{"initial": 0}, {"initial": -1}, {"factor": 0.5}, {"initial": 5, "maximum": 1}],
)
def test_backoff_rejects_nonsense(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**options)


async def test_it_logs_one_line_on_connecting_on_a_drop_and_on_stopping(
    orchestrator: Orchestrator, start: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orrery.device")
    device = start()
    await device.events.wait(is_event(Welcomed))
    url = f"{orchestrator.url}/aip/v1"
    tools = len(device.agent._tools)
    connected = f"connected to {url} as {DEVICE} ({tools} tools)"
    assert lines(caplog) == [connected]

    await orchestrator.drop()
    await device.events.wait(is_event(Welcomed), count=2)
    [lost] = [line for line in lines(caplog) if "lost" in line]
    assert lost.startswith(f"device {DEVICE}: connection to {url} lost (")
    assert "; 0 star(s) keep running; reconnecting in " in lost
    assert lines(caplog) == [connected, lost, connected]

    await device.stopped()
    assert lines(caplog) == [connected, lost, connected, f"device {DEVICE}: stopped"]


async def test_a_connection_that_cannot_be_made_is_a_warning_with_the_retry(
    tmp_path: Path, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orrery.device")
    _, key = enrolled(DEVICE)
    orch = Orchestrator({DEVICE: key}, ServerConfig(heartbeat_interval=HEARTBEAT))
    server = await serve_aip(orch.handle, "127.0.0.1", 0)
    port = server.port
    server.close()
    await server.wait_closed()
    events = Log()
    agent = DeviceAgent(
        f"ws://127.0.0.1:{port}",
        DEVICE,
        enrolled(DEVICE)[0],
        data_dir=tmp_path / "data",
        workspace=workspace,
        backoff=Backoff(initial=0.01, maximum=0.02),
        on_event=events.add,
    )
    warned = asyncio.Event()
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: (  # type: ignore[method-assign]
        warned.set() if "cannot connect" in record.getMessage() else None
    )  # (the first warning says which tools run unconfined)
    logging.getLogger("orrery.device").addHandler(handler)
    running = Running(agent, events)
    try:
        await asyncio.wait_for(warned.wait(), WAIT)
    finally:
        logging.getLogger("orrery.device").removeHandler(handler)
        await running.stopped()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0].startswith(f"device {DEVICE}: python.run, shell.run run unconfined")
    warning = warnings[1]
    assert warning.startswith(f"device {DEVICE}: cannot connect to ws://127.0.0.1:{port}/aip/v1 (")
    assert "; retrying in " in warning


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The INFO lines of the device agent itself, in order."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "orrery.device" and record.levelno == logging.INFO
    ]
