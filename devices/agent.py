"""`DeviceAgent`: the core of `orrery device`, one machine's connection to the orchestrator.

It dials out over AIP (reconnecting with backoff), proves its enrolment, runs assigned
tasks with a `LocalDispatcher`, and keeps every result in a durable outbox until the
orchestrator acknowledges it, so results survive lost connections and restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext

from pydantic import BaseModel, ValidationError

from devices import host
from devices.artifact_channel import ArtifactChannel
from devices.backoff import Backoff
from devices.changes import Changes
from devices.host import VramProbe, no_gpu, platform_name
from devices.local import LocalDispatcher
from devices.outbox import Outbox, OutboxError
from devices.tools import ToolRegistry, default_tools
from devices.tools.policy import default_policy
from devices.tools.sandbox import sandbox_for, unconfined, unconfined_warning
from protocol.messages import (
    PROTOCOL_VERSION,
    ErrorCode,
    HelloBody,
    Load,
    Resources,
    ResumeState,
    TaskRef,
    ToolDescription,
)
from protocol.private import private_dir
from protocol.session import (
    ApprovalDecided,
    AssignmentReceived,
    CancelRequested,
    DeviceSession,
    PeerError,
    ResultAcked,
    SessionClosed,
    SessionEvent,
    SessionState,
    Welcomed,
    ref_of,
)
from protocol.tasks import TaskAssignment, TaskProgress, TaskResult
from protocol.transport import ConnectFailed, Connection, SessionDriver, aip_url, connect_aip

log = logging.getLogger("orrery.device")

TaskKey = tuple[str, str, int]
ApprovalRule = Callable[[str, BaseModel], str | None]
"""(tool name, parsed args) -> a summary when the call needs a person's approval."""

REFUSALS = frozenset({ErrorCode.BAD_PROOF, ErrorCode.UNKNOWN_DEVICE, ErrorCode.UNSUPPORTED_VERSION})
"""Handshake errors that retrying cannot fix: the agent stops and raises `DeviceRefused`."""

_MB = 1024 * 1024
_MAX_UNACKED_IN_HELLO = 65_536  # ResumeState.unacked's limit
_MAX_RUNNING_IN_HELLO = 1_024


class DeviceRefused(Exception):
    """The orchestrator refused this device at the handshake; retrying will not help.

    `code` is `bad_proof` (wrong token: enrol the device again and use the new token),
    `unknown_device` (enrol it first) or `unsupported_version` (upgrade one side).
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"the orchestrator refused this device ({code}): {message}")
        self.code = code
        self.message = message


# ------------------------------------------------------------------ machine facts


def _resources(cpus: int, free_vram: VramProbe) -> Resources:
    """CPUs, memory and, when `free_vram` knows a GPU, its free memory."""
    free = free_vram()
    return Resources(
        cpus=cpus,
        memory_mb=(host.memory().total or 0) // _MB,
        gpu=free is not None,
        vram_free_mb=(free or 0) // _MB,
    )


def describe_tools(tools: ToolRegistry) -> list[ToolDescription]:
    """The `hello` description of every tool: name, a one-line summary and the JSON schema."""
    described = []
    for name, schema in tools.schemas().items():
        summary = str(schema.get("description", "")).strip().splitlines()
        described.append(
            ToolDescription(
                name=name, description=(summary[0] if summary else "")[:2000], args_schema=schema
            )
        )
    return described


def say_confinement(name: str, tools: ToolRegistry, workspace: Path, data_dir: Path) -> None:
    """Say (on "orrery.device") which offered tools run unconfined (WARNING), or how the
    process tools are confined (INFO); `PolicyError` if the policy's sandbox cannot run."""
    policy = getattr(tools, "policy", None) or default_policy()
    offered = tools.names()
    box = sandbox_for(policy, workspace, (data_dir,))
    loose = unconfined(policy, offered)
    if loose:
        log.warning("%s", unconfined_warning(name, loose))
    elif box is not None:
        network = "with" if box.network else "without"
        log.info(
            "device %s: shell.run and python.run run in bubblewrap: only the workspace is "
            "writable, the data dir hidden, %s network",
            name,
            network,
        )


# ------------------------------------------------------------------ one connection


@dataclass
class _Link:
    """The live connection, while there is one."""

    session: DeviceSession
    driver: SessionDriver = field(init=False)
    welcomed: bool = False
    refusal: DeviceRefused | None = None
    heartbeats: asyncio.Task[None] | None = None
    sent_results: dict[str, TaskKey] = field(default_factory=dict)  # message id -> attempt

    @property
    def active(self) -> bool:
        return self.session.state is SessionState.ACTIVE and not self.session.closed


class _ResultSink:
    """What the `LocalDispatcher` reports to: the agent, which stores and forwards."""

    def __init__(self, agent: DeviceAgent) -> None:
        self._agent = agent

    def on_progress(self, progress: TaskProgress) -> None:
        self._agent._forward_progress(progress)

    def on_result(self, result: TaskResult) -> None:
        self._agent._store_and_forward(result)


class _RemoteApprovals:
    """The device's `ApprovalGate`: asks the orchestrator (and through it a person)."""

    def __init__(self, agent: DeviceAgent, needs: ApprovalRule) -> None:
        self._agent = agent
        self._needs = needs
        self.pending: dict[str, asyncio.Future[tuple[bool, str]]] = {}

    def needed(self, tool: str, args: BaseModel) -> str | None:
        return self._needs(tool, args)

    async def ask(self, assignment: TaskAssignment, tool: str, summary: str) -> tuple[bool, str]:
        live = self._agent._live()
        if live is None:
            return False, "the device is not connected to an orchestrator to ask"
        session, driver = live
        request = uuid.uuid4().hex
        waiter: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self.pending[request] = waiter
        try:
            session.request_approval(ref_of(assignment), request, tool, summary)
            driver.flush()
            log.info("device %s: %s waits for approval: %s", self._agent.name, tool, summary)
            return await waiter
        finally:
            self.pending.pop(request, None)

    def on_event(self, event: SessionEvent) -> None:
        if isinstance(event, ApprovalDecided):
            waiter = self.pending.get(event.request)
            if waiter is not None and not waiter.done():
                who = f" by {event.by}" if event.by else ""
                waiter.set_result((event.approved, f"{event.reason}{who}".strip()))
        elif isinstance(event, SessionClosed):
            for waiter in self.pending.values():
                if not waiter.done():
                    waiter.set_result((False, "the connection was lost while waiting"))


# ------------------------------------------------------------------ the agent


class DeviceAgent:
    """A device: connects to the orchestrator at `server_url` and runs what it assigns.

    `run(stop)` returns once `stop` is set (after saying goodbye and stopping running
    tasks), or raises `DeviceRefused` if the orchestrator rejects the device's identity.
    Unacknowledged results live in `data_dir / "outbox.db"` and are sent again after
    every reconnect (at least once; the orchestrator drops duplicates).

    `on_event`, if given, sees every session event after the agent has handled it
    (connection state for a status display; synchronisation points for tests).
    `free_vram` reads the GPU's free memory for `hello` (and the default tools' sys.info);
    `app/` passes NVML's reader, the default knows of no GPU.

    When it starts it says which tools it offers run unconfined (a WARNING naming them,
    `say_confinement`; a `[sandbox]` bwrap cannot run raises `PolicyError` instead).
    It logs on "orrery.device", at INFO, one line when it connects ("connected to URL as
    NAME (N tools)"), when a connection is lost and when it reconnects, and when it stops
    (a connection that cannot be made is a WARNING, with the reason and the retry delay).
    """

    def __init__(
        self,
        server_url: str,
        name: str,
        token: str,
        *,
        data_dir: Path,
        workspace: Path | None = None,
        labels: Iterable[str] = (),
        max_tasks: int = 4,
        ssl: SSLContext | None = None,
        backoff: Backoff | None = None,
        tools: ToolRegistry | None = None,
        open_timeout: float = 10.0,
        on_event: Callable[[SessionEvent], None] | None = None,
        needs_approval: ApprovalRule | None = None,
        shutdown_grace: float = 10.0,
        free_vram: VramProbe = no_gpu,
    ) -> None:
        self.shutdown_grace = shutdown_grace
        self._free_vram = free_vram
        self.url = aip_url(server_url)  # a bad URL fails here, not in the retry loop
        self.name = name
        self._token = token
        self.data_dir = Path(data_dir)
        self.workspace = Path(workspace) if workspace is not None else self.data_dir / "workspace"
        self.labels = sorted(set(labels) | {platform_name()})  # as LocalDispatcher labels it
        self.max_tasks = max_tasks
        self._ssl = ssl
        self._backoff = backoff if backoff is not None else Backoff()
        self._rng = random.Random()
        self._tools = tools if tools is not None else default_tools(free_vram)
        self._open_timeout = open_timeout
        self._on_event = on_event
        self._cpus = host.cpu_count() or 1
        self._running: dict[TaskKey, TaskAssignment] = {}
        self._link: _Link | None = None
        self._changes = Changes()  # running attempts, unacknowledged results, the connection
        self._outbox: Outbox | None = None
        self._dispatcher: LocalDispatcher | None = None
        self.artifacts = ArtifactChannel(self._live, self.data_dir / "incoming-artifacts")
        self._approvals = _RemoteApprovals(self, needs_approval) if needs_approval else None
        self._hello_body(ResumeState())  # validates name, labels and max_tasks now

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.db"

    @property
    def connected(self) -> bool:
        """Whether the handshake finished on a connection that is still open."""
        return self._link is not None and self._link.welcomed and self._link.active

    @property
    def running(self) -> list[TaskRef]:
        """The attempts this device is running now."""
        return [TaskRef(constellation_id=c, star_id=s, attempt=a) for c, s, a in self._running]

    def unacked(self) -> list[TaskRef]:
        """Results kept for the orchestrator and not acknowledged yet (while running)."""
        if self._outbox is None:
            raise RuntimeError(f"device agent {self.name!r} is not running")
        return [
            TaskRef(constellation_id=c, star_id=s, attempt=a)
            for (c, s, a), _ in self._outbox.pending()
        ]

    # -- the main loop

    async def run(self, stop: asyncio.Event) -> None:
        """Serve the orchestrator until `stop` is set; reconnect after every loss."""
        if self._dispatcher is not None:
            raise RuntimeError(f"device agent {self.name!r} is already running")
        private_dir(self.data_dir)  # 0700: the outbox and fetched artifacts live here
        self.workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
        say_confinement(self.name, self._tools, self.workspace, self.data_dir)
        self._outbox = Outbox.open(self.outbox_path)
        self._dispatcher = LocalDispatcher(
            self.workspace,
            name=self.name,
            max_tasks=self.max_tasks,
            labels=self.labels,
            tools=self._tools,
            artifacts=self.artifacts,
            approvals=self._approvals,
            private=(self.data_dir,),
        )
        self._dispatcher.attach(_ResultSink(self))
        log.debug("device %s: serving %s (workspace %s)", self.name, self.url, self.workspace)
        try:
            while not stop.is_set():
                welcomed, why = await self._serve_once(stop)
                if welcomed:
                    self._backoff.reset()
                if stop.is_set():
                    break
                delay = self._backoff.next_delay(self._rng)
                if welcomed:
                    log.info(
                        "device %s: connection to %s lost (%s); %d star(s) keep running; "
                        "reconnecting in %.2fs",
                        self.name,
                        self.url,
                        why,
                        len(self._running),
                        delay,
                    )
                else:
                    log.warning(
                        "device %s: cannot connect to %s (%s); retrying in %.2fs",
                        self.name,
                        self.url,
                        why,
                        delay,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self._dispatcher.aclose()
            self._dispatcher = None
            self._running.clear()
            try:
                kept = len(self._outbox)
            except OutboxError:  # the log line is not worth failing the shutdown
                kept = 0
            self._outbox.close()
            self._outbox = None
            log.info(
                "device %s: stopped%s",
                self.name,
                f"; {kept} result(s) kept in the outbox for the next start" if kept else "",
            )

    async def _serve_once(self, stop: asyncio.Event) -> tuple[bool, str]:
        """One connection from dial to loss: whether the handshake finished, and why the
        connection ended (or could not be made).

        Raises `DeviceRefused` when the orchestrator refused the handshake for good.
        """
        connection = await self._dial(stop)
        if connection is None:
            return False, "stopping"
        if isinstance(connection, ConnectFailed):
            return False, str(connection)
        link = self._open_link(connection)
        driving = asyncio.create_task(link.driver.run(), name=f"aip {self.name}")
        driving.add_done_callback(lambda _: self._changes.notify())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({driving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not driving.done():
                await self._hand_back(link, driving)
                link.session.close("device stopping")
                link.driver.flush()
            await driving
        finally:
            stopping.cancel()
            if link.heartbeats is not None:
                link.heartbeats.cancel()
            if not driving.done():
                driving.cancel()
            await asyncio.gather(driving, stopping, return_exceptions=True)
            if link.heartbeats is not None:
                await asyncio.gather(link.heartbeats, return_exceptions=True)
            self._link = None
        if link.refusal is not None:
            raise link.refusal
        return link.welcomed, link.session.close_reason or "connection closed"

    async def _hand_back(self, link: _Link, driving: asyncio.Task[None]) -> None:
        """Before saying goodbye: let running stars finish for up to `shutdown_grace` s,
        report the rest as failed (so the orchestrator runs them elsewhere), and wait a
        moment for the acknowledgements, so nothing is left behind."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_grace
        if self._running:
            log.info(
                "device %s: stopping; %d star(s) get up to %gs to finish",
                self.name,
                len(self._running),
                self.shutdown_grace,
            )
        await self._changes.wait_until(lambda: not self._running or driving.done(), deadline)
        for assignment in list(self._running.values()):
            assert self._dispatcher is not None
            self._dispatcher.cancel(assignment, "device shutting down")
            self._store_and_forward(
                TaskResult.failure(
                    assignment,
                    f"device {self.name!r} shut down before the star finished; "
                    "it can run on another device",
                )
            )
        await self._changes.wait_until(
            lambda: not link.sent_results or driving.done(), loop.time() + 2.0
        )

    async def _dial(self, stop: asyncio.Event) -> Connection | ConnectFailed | None:
        """A new connection, why it could not be made, or None if `stop` was set first."""
        dialing = asyncio.create_task(
            connect_aip(self.url, ssl=self._ssl, open_timeout=self._open_timeout)
        )
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({dialing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not dialing.done():
                dialing.cancel()
            await asyncio.gather(dialing, stopping, return_exceptions=True)
        if dialing.cancelled():
            return None
        failure = dialing.exception()
        if isinstance(failure, ConnectFailed):
            return failure
        if failure is not None:
            raise failure
        connection = dialing.result()
        if stop.is_set():
            await connection.close("device stopping")
            return None
        return connection

    def _open_link(self, connection: Connection) -> _Link:
        assert self._outbox is not None
        unacked = [
            TaskRef(constellation_id=c, star_id=s, attempt=a)
            for (c, s, a), _ in self._outbox.pending()[:_MAX_UNACKED_IN_HELLO]
        ]
        resume = ResumeState(running=self.running[:_MAX_RUNNING_IN_HELLO], unacked=unacked)
        session = DeviceSession(hello=self._hello_body(resume), token=self._token, now=time.time)
        link = _Link(session)
        link.driver = SessionDriver(session, connection, functools.partial(self._handle, link))
        self._link = link
        log.debug(
            "device %s: dialled %s; handshake (%d running, %d unacked)",
            self.name,
            connection.remote,
            len(resume.running),
            len(unacked),
        )
        session.start()
        return link

    def _hello_body(self, resume: ResumeState) -> HelloBody:
        return HelloBody(
            device=self.name,
            versions=[PROTOCOL_VERSION],
            platform=platform_name(),
            labels=self.labels,
            tools=describe_tools(self._tools),
            resources=_resources(self._cpus, self._free_vram),
            max_tasks=self.max_tasks,
            resume=resume,
        )

    # -- session events

    def _live(self) -> tuple[DeviceSession, SessionDriver] | None:
        link = self._link
        if link is None or not link.welcomed or not link.active:
            return None
        return link.session, link.driver

    def _handle(self, link: _Link, events: list[SessionEvent]) -> None:
        for event in events:
            self.artifacts.on_event(event)
            if self._approvals is not None:
                self._approvals.on_event(event)
            if isinstance(event, Welcomed):
                self._welcomed(link, event)
            elif isinstance(event, AssignmentReceived):
                self._assign(event.assignment)
            elif isinstance(event, CancelRequested):
                self._cancel(event.task, event.reason)
            elif isinstance(event, ResultAcked):
                for message_id in [m for m, k in link.sent_results.items() if k == event.task.key]:
                    del link.sent_results[message_id]
                self._acked(event.task)
            elif isinstance(event, PeerError):
                self._peer_error(link, event)
            elif isinstance(event, SessionClosed):
                log.debug("device %s: session closed (%s)", self.name, event.reason)
            if self._on_event is not None:
                self._on_event(event)
        self._changes.notify()

    def _welcomed(self, link: _Link, event: Welcomed) -> None:
        assert self._outbox is not None
        link.welcomed = True
        stored = {task.key for task in event.known_unacked}
        resent = 0
        for key, payload in self._outbox.pending():
            if key in stored:  # the orchestrator has it: as good as an ack
                self._outbox.remove(key)
                continue
            try:
                result = TaskResult.model_validate_json(payload)
            except ValidationError as error:
                log.error(
                    "device %s: dropping unreadable outbox entry %s/%s#%d: %s",
                    self.name,
                    *key,
                    error,
                )
                self._outbox.remove(key)
                continue
            link.sent_results[link.session.send_result(result)] = key
            resent += 1
        interval = link.session.heartbeat_interval
        link.heartbeats = asyncio.create_task(
            self._beat(link, interval), name=f"heartbeats {self.name}"
        )
        log.debug("device %s: session %s, heartbeat every %gs", self.name, event.session, interval)
        log.info(
            "connected to %s as %s (%d tools)%s",
            self.url,
            self.name,
            len(self._tools),
            f"; re-sent {resent} result(s) kept while disconnected" if resent else "",
        )

    def _assign(self, assignment: TaskAssignment) -> None:
        assert self._dispatcher is not None
        key = assignment.key
        log.info(
            "device %s: assigned %s#%d (%s)",
            self.name,
            assignment.task_id,
            assignment.attempt,
            assignment.tool,
        )
        self._running[key] = assignment
        self._dispatcher.assign(assignment)

    def _cancel(self, task: TaskRef, reason: str) -> None:
        assert self._dispatcher is not None
        assignment = self._running.pop(task.key, None)
        if assignment is None:
            log.info(
                "device %s: cancel for %s/%s#%d, which is not running",
                self.name,
                *task.key,
            )
            return
        log.info(
            "device %s: cancelling %s#%d: %s", self.name, assignment.task_id, task.attempt, reason
        )
        self._dispatcher.cancel(assignment, reason)

    def _acked(self, task: TaskRef) -> None:
        assert self._outbox is not None
        try:
            removed = self._outbox.remove(task.key)
        except OutboxError as error:  # it stays pending and is sent once more: harmless
            log.error("device %s: %s", self.name, error.message)
            return
        if removed:
            log.debug("device %s: result of %s/%s#%d acknowledged", self.name, *task.key)

    def _peer_error(self, link: _Link, event: PeerError) -> None:
        if not link.welcomed and event.code in REFUSALS:
            link.refusal = DeviceRefused(event.code, event.message)
            log.error(
                "device %s: refused by the orchestrator (%s): %s",
                self.name,
                event.code,
                event.message,
            )
        elif event.code is ErrorCode.NOT_YOUR_TASK and event.ref in link.sent_results:
            # Final: that attempt was fenced (cancelled, timed out, retried elsewhere).
            key = link.sent_results.pop(event.ref)
            log.warning(
                "device %s: result of %s/%s#%d refused (%s); dropping it from the outbox",
                self.name,
                *key,
                event.message,
            )
            if self._outbox is not None:
                try:
                    self._outbox.remove(key)
                except OutboxError as error:
                    log.error("device %s: %s", self.name, error.message)
        elif not link.welcomed:  # the connection ends; the retry line says why
            log.debug("device %s: refused (%s): %s", self.name, event.code, event.message)
        else:
            log.warning(
                "device %s: orchestrator reports %s: %s", self.name, event.code, event.message
            )

    # -- heartbeats

    async def _beat(self, link: _Link, interval: float) -> None:
        """Send a heartbeat with the current load every `interval` seconds (a timer)."""
        while link.active:
            await asyncio.sleep(interval)
            if not link.active:
                return
            link.session.send_heartbeat(self.load())
            link.driver.flush()

    def load(self) -> Load:
        return Load(
            running=len(self._running),
            cpu_percent=host.cpu_percent(self._cpus),
            memory_percent=host.memory().used_percent,
        )

    # -- from the dispatcher

    def _forward_progress(self, progress: TaskProgress) -> None:
        link = self._link
        if link is not None and link.welcomed and link.active:
            link.session.send_progress(progress)
            link.driver.flush()

    def _store_and_forward(self, result: TaskResult) -> None:
        """Make the result durable first, then send it if connected (else after reconnect)."""
        key = result.key
        self._running.pop(key, None)
        self._changes.notify()
        if self._outbox is None:  # shutting down: nobody will send it
            log.warning("device %s: result of %s/%s#%d after shutdown", self.name, *key)
            return
        try:
            self._outbox.put(key, result.model_dump_json())
        except OutboxError as error:  # still worth sending: it is only not durable
            log.error("device %s: result of %s/%s#%d not kept: %s", self.name, *key, error.message)
        link = self._link
        if link is not None and link.welcomed and link.active:
            link.sent_results[link.session.send_result(result)] = key
            link.driver.flush()
            log.info("device %s: sent result of %s/%s#%d (%s)", self.name, *key, result.status)
        else:
            log.info("device %s: result of %s/%s#%d kept for reconnect", self.name, *key)


__all__ = ["REFUSALS", "DeviceAgent", "DeviceRefused", "describe_tools"]
