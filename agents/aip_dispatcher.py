"""The WebSocket dispatcher: devices dial in over AIP and stars go out as `task.assign`.

One `ServerSession` (sans-I/O) per connection does the protocol; this module keeps the
fleet: which devices are connected, what each was assigned, when one is lost. Results
are written to the result ledger before they are acknowledged, so a result delivered
twice (after a reconnect) is stored and reported once.

One name, one connection: a device that connects while another connection of its name
is live (heard from within two heartbeat intervals) is refused with `already_connected`,
so two processes started with one name cannot evict each other; a new connection does
replace one that has gone quiet (a half-open remnant of the same device).

Liveness: a device that is silent for `heartbeat_interval * heartbeat_misses` is lost,
and so is one whose socket dropped and that has not come back within the same grace.
Its running attempts are then reported failed ("device lost"), so the orchestrator
retries them on another device within their retry budget. A device that says goodbye
(`bye`) is offline, not lost: it left on purpose, having handed back what it ran, and
whatever it still held fails over at once, without waiting for the grace. A device
that reconnects without an attempt it was assigned (neither in `hello.resume.running` nor
in `resume.unacked`: it restarted, or never received the `task.assign`) has that attempt
reported failed ("interrupted") at once, so it fails over without waiting either.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.artifact_store import ArtifactStore, QuotaExceeded
from agents.clock import Clock, RealClock, Timer
from agents.dispatch import ApprovalAsked, DeviceChange, TaskSink, UnknownApproval
from agents.tool_args import ToolArgsChecker
from devices.registry import DeviceInfo
from memory import StoreError
from protocol.artifact_stream import send_artifact
from protocol.artifacts import ArtifactError, ArtifactReceiver
from protocol.auth import DeviceKey
from protocol.messages import ErrorCode, ProtocolViolation
from protocol.session import (
    ApprovalRequested,
    ArtifactChunk,
    ArtifactFinished,
    ArtifactOffered,
    ArtifactRequested,
    DeviceAuthenticated,
    PeerError,
    ProgressReceived,
    ResultReceived,
    ServerConfig,
    ServerSession,
    SessionClosed,
    SessionEvent,
    TaskAccepted,
    ref_of,
)
from protocol.tasks import TaskAssignment, TaskResult
from protocol.transport import Connection, SessionDriver

log = logging.getLogger("orrery.aip.dispatcher")

Key = tuple[str, str, int]

LIVE_WITHIN = 2
"""A connection heard from within this many heartbeat intervals is live: a second
connection of its device is refused rather than replacing it."""


class ResultLedger(Protocol):
    """Durable, idempotent storage of results by (constellation, star, attempt)."""

    def record(self, result: TaskResult, device: str) -> bool:
        """Store durably; True if this attempt's result is new, False if already stored."""

    def reported_by(self, constellation_id: str, star_id: str, attempt: int) -> str | None:
        """The device whose result for this attempt is stored, if any."""


class KeyStore(Protocol):
    def device_key(self, device: str) -> DeviceKey | None: ...


@dataclass(slots=True)
class _Device:
    name: str
    session: ServerSession
    driver: SessionDriver
    info: DeviceInfo
    args: ToolArgsChecker  # checks task.assign args against the tools' announced schemas
    tool_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    connected: bool = True
    liveness: Timer | None = None
    grace: Timer | None = None
    state: str = "online"  # "online" or "busy" (every slot taken) while connected


UPLOADING_TOOLS = frozenset({"artifact.put", "agent.do"})
"""Tools whose stars may upload artifacts (agent.do may call artifact.put)."""

__all__ = ["UPLOADING_TOOLS", "AipDispatcher", "KeyStore", "ResultLedger", "UnknownApproval"]


class AipDispatcher:
    """A `Dispatcher` (and `Approvals`) whose devices are AIP connections (see `handle`).

    Device state changes and approval requests go to the attached sink
    (`TaskSink.on_device_change`, `TaskSink.on_approval`).
    """

    def __init__(
        self,
        *,
        keys: KeyStore,
        ledger: ResultLedger,
        clock: Clock | None = None,
        config: ServerConfig | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.keys = keys
        self.artifacts = artifacts
        self._receivers: dict[ServerSession, ArtifactReceiver] = {}
        self._approvals: dict[str, ApprovalAsked] = {}  # request id -> what waits
        self._sending: set[asyncio.Task[None]] = set()
        self.ledger = ledger
        self.clock: Clock = clock or RealClock()
        self.config = config or ServerConfig()
        self._sink: TaskSink | None = None
        self._devices: dict[str, _Device] = {}
        self._assigned: dict[str, dict[Key, TaskAssignment]] = {}
        self._waiting: dict[str, Timer] = {}  # adopted devices not back yet -> their grace

    # ---------------------------------------------------------------- Dispatcher

    def attach(self, sink: TaskSink) -> None:
        self._sink = sink

    def devices(self) -> Sequence[DeviceInfo]:
        return [device.info for device in self._devices.values() if device.connected]

    def silence(self) -> dict[str, float]:
        """Connected device -> seconds since a frame (a heartbeat, at least) came from it."""
        now = self.clock.now()
        return {
            name: max(0.0, now - device.session.last_seen)
            for name, device in self._devices.items()
            if device.connected
        }

    def tool_schemas(self) -> dict[str, dict[str, Any]]:
        """Tool name -> argument schema, as the connected devices announced them.

        Devices of different versions may describe a tool differently; the first
        connected device (by name) that offers it wins.
        """
        schemas: dict[str, dict[str, Any]] = {}
        for name in sorted(self._devices):
            device = self._devices[name]
            if device.connected:
                for tool, schema in device.tool_schemas.items():
                    schemas.setdefault(tool, schema)
        return schemas

    def assign(self, assignment: TaskAssignment) -> None:
        device = self._devices.get(assignment.device)
        if device is None or not device.connected:
            self._report(
                TaskResult.failure(assignment, f"device {assignment.device!r} is not connected")
            )
            return
        problem = device.args.problem(assignment)
        if problem is not None:  # checked before sending, so it fails here and now
            log.info("not assigning %s to %s: %s", assignment.task_id, device.name, problem)
            self._report(TaskResult.failure(assignment, problem))
            return
        key = assignment.key
        self._assigned.setdefault(device.name, {})[key] = assignment
        self._update_state(device.name)
        try:
            device.session.assign(assignment)
        except ProtocolViolation as exc:
            self._assigned[device.name].pop(key, None)
            self._report(TaskResult.failure(assignment, exc.message))
            return
        self._flush(device)

    def adopt(self, assignment: TaskAssignment) -> bool:
        """Take back an attempt an earlier orchestrator process gave to an AIP device
        (crash recovery): it counts as assigned, so the device's result is accepted when it
        reconnects; if the device comes back without it, it is interrupted (see
        `_authenticated`), and if it does not come back within the reconnect grace, it is
        lost. False for a device this dispatcher does not know (not enrolled)."""
        device = assignment.device
        if self.keys.device_key(device) is None:
            return False
        self._assigned.setdefault(device, {})[assignment.key] = assignment
        if device not in self._devices and device not in self._waiting:
            grace = self.config.heartbeat_interval * self.config.heartbeat_misses
            self._waiting[device] = self.clock.call_later(
                grace, lambda: self._not_back(device, grace)
            )
        return True

    def _not_back(self, device: str, grace: float) -> None:
        """An adopted device's grace ran out: if it has not reconnected, what it held is lost."""
        self._waiting.pop(device, None)
        if device in self._devices:
            return
        running = self._assigned.pop(device, {})
        if running:
            log.warning(
                "device %s did not reconnect within %gs of the restart; %d attempts fail over",
                device,
                grace,
                len(running),
            )
        for assignment in running.values():
            self._report(
                TaskResult.failure(
                    assignment,
                    f"device {device!r} lost: it did not reconnect within {grace:g}s "
                    "after the orchestrator restarted",
                )
            )

    def cancel(self, assignment: TaskAssignment, reason: str) -> None:
        key = assignment.key
        self._assigned.get(assignment.device, {}).pop(key, None)
        self._forget_approvals(assignment.device, key)
        self._update_state(assignment.device)
        device = self._devices.get(assignment.device)
        if device is not None and device.connected:
            device.session.cancel(ref_of(assignment), reason)
            self._flush(device)

    # ---------------------------------------------------------------- connections

    async def handle(self, connection: Connection) -> None:
        """Serve one device connection until it closes (pass this to `serve_aip`)."""
        session = ServerSession(
            keys=self.keys.device_key, now=self.clock.now, config=self.config, owns=self._owns
        )
        driver = SessionDriver(
            session, connection, lambda events: self._on_events(session, driver, events)
        )
        # A connection gets as long to finish the handshake as a device to miss heartbeats.
        patience = self.config.heartbeat_interval * self.config.heartbeat_misses
        deadline = self.clock.call_later(
            patience, lambda: self._handshake_overdue(session, driver, patience)
        )
        try:
            await driver.run()
        finally:
            deadline.cancel()
            receiver = self._receivers.pop(session, None)
            if receiver is not None and self.artifacts is not None:
                self.artifacts.discard(receiver)

    def _handshake_overdue(
        self, session: ServerSession, driver: SessionDriver, patience: float
    ) -> None:
        if session.device is None and not session.closed:
            log.info("closing a connection that did not finish the handshake in %gs", patience)
            session.close(f"no handshake within {patience:g}s")
            driver.flush()

    def _flush(self, device: _Device) -> None:
        device.driver.flush()

    # ---------------------------------------------------------------- session events

    def _on_events(
        self, session: ServerSession, driver: SessionDriver, events: list[SessionEvent]
    ) -> None:
        device = self._devices.get(session.device) if session.device else None
        if device is not None and device.session is not session:
            device = None  # an older connection of a device that has since reconnected
        for event in events:
            if isinstance(event, DeviceAuthenticated):
                device = self._authenticated(session, driver, event)
            elif isinstance(event, ResultReceived):
                self._result(session, event)
            elif isinstance(event, ProgressReceived):
                if self._sink is not None:
                    self._sink.on_progress(event.progress)
            elif isinstance(event, TaskAccepted):
                log.debug("device %s accepted %s", session.device, event.task.key)
            elif isinstance(event, PeerError):
                log.info("device %s reported %s: %s", session.device, event.code, event.message)
            elif isinstance(event, SessionClosed) and device is not None:
                self._disconnected(device, event)
            elif isinstance(event, ArtifactOffered | ArtifactChunk | ArtifactFinished):
                self._upload(session, event)
            elif isinstance(event, ArtifactRequested):
                self._fetch(session, driver, event)
            elif isinstance(event, ApprovalRequested) and session.device is not None:
                asked = ApprovalAsked(
                    request=event.request,
                    constellation_id=event.task.constellation_id,
                    star_id=event.task.star_id,
                    attempt=event.task.attempt,
                    device=session.device,
                    tool=event.tool,
                    summary=event.summary,
                )
                self._approvals[event.request] = asked
                log.info("device %s asks approval for %s", session.device, event.summary)
                if self._sink is not None:
                    self._sink.on_approval(asked)

    def _authenticated(
        self, session: ServerSession, driver: SessionDriver, event: DeviceAuthenticated
    ) -> _Device | None:
        hello = event.hello
        previous = self._devices.get(event.device)
        if previous is not None and self._still_live(previous, session):
            log.warning(
                "device %s: refused a second connection from %s; %s holds the name",
                event.device,
                driver.connection.remote,
                previous.driver.connection.remote,
            )
            silent = self.clock.now() - previous.session.last_seen
            refusal = _already_connected(previous, silent)
            session.refuse(ErrorCode.ALREADY_CONNECTED, refusal, fatal=True)
            return None
        if previous is not None:
            self._cancel_timers(previous)
            if previous.session is not session and not previous.session.closed:
                previous.session.close("replaced by a new connection from the same device")
                self._flush(previous)
        info = DeviceInfo(
            name=hello.device,
            platform=hello.platform,
            labels=frozenset(hello.labels),
            tools=frozenset(tool.name for tool in hello.tools),
            gpu=hello.resources.gpu,
            vram_free_mb=hello.resources.vram_free_mb,
            max_tasks=min(hello.max_tasks, self.config.max_in_flight),
        )
        schemas = {tool.name: tool.args_schema for tool in hello.tools}
        device = _Device(
            name=hello.device,
            session=session,
            driver=driver,
            info=info,
            tool_schemas=schemas,
            args=ToolArgsChecker(hello.device, schemas),
        )
        self._devices[hello.device] = device
        waiting = self._waiting.pop(hello.device, None)
        if waiting is not None:
            waiting.cancel()
        # Attempts the device says it still runs (or holds the result of) stay in flight;
        # the others it does not have (it restarted, or never got the assignment): they
        # fail over now, not after a grace.
        held = {ref.key for ref in (*hello.resume.running, *hello.resume.unacked)}
        assigned = self._assigned.get(hello.device, {})
        interrupted = [assigned.pop(key) for key in [k for k in assigned if k not in held]]
        for key, assignment in assigned.items():
            session.in_flight[key] = assignment
        session.welcome()
        self._schedule_liveness(device)
        log.info("device %s connected (%d tools)", hello.device, len(info.tools))
        if self._sink is not None:
            self._sink.on_devices_changed()
        self._update_state(hello.device, joined=True)
        if interrupted:
            log.warning(
                "device %s came back without %d attempt(s) it was running; they fail over",
                hello.device,
                len(interrupted),
            )
        for assignment in interrupted:
            self._report(
                TaskResult.failure(
                    assignment,
                    f"device {hello.device!r} came back without this attempt (it restarted, "
                    "or never received it): interrupted; it can run on another device",
                )
            )
        return device

    def _still_live(self, previous: _Device, session: ServerSession) -> bool:
        """Whether `previous`, another connection of the same device, is live: open, and
        heard from within two heartbeat intervals (a device that sends its heartbeats is
        never silent that long; a half-open connection is)."""
        if previous.session is session or not previous.connected or previous.session.closed:
            return False
        silent = self.clock.now() - previous.session.last_seen
        return silent < LIVE_WITHIN * self.config.heartbeat_interval

    def _result(self, session: ServerSession, event: ResultReceived) -> None:
        device_name = session.device
        assert device_name is not None
        result = event.result
        try:
            is_new = self.ledger.record(result, device_name)
        except StoreError as exc:
            # Not stored, so not acknowledged: the device keeps it in its outbox. Closing
            # the connection makes it reconnect and send it again, as after any drop.
            log.error(
                "device %s: result %s could not be stored (%s); closing the connection so "
                "the device sends it again after reconnecting",
                device_name,
                result.key,
                exc.message,
            )
            session.close(f"the orchestrator could not store a result: {exc.message}")
            return
        session.ack_result(result, event.message_id)
        self._assigned.get(device_name, {}).pop(result.key, None)
        self._forget_approvals(device_name, result.key)
        self._update_state(device_name)
        if is_new and self._sink is not None:
            self._sink.on_result(result)
        elif not is_new:
            log.info("device %s re-sent stored result %s; acked again", device_name, result.key)

    def _owns(self, device: str, key: tuple[str, str, int]) -> bool:
        """Assigned to `device` and not yet reported, or reported and stored from it (a
        device re-sends what it was never acked for; that must be acked, not refused)."""
        if key in self._assigned.get(device, {}):
            return True
        return self.ledger.reported_by(*key) == device

    # ---------------------------------------------------------------- liveness

    def _schedule_liveness(self, device: _Device) -> None:
        device.liveness = self.clock.call_later(
            self.config.heartbeat_interval, lambda: self._check_liveness(device)
        )

    def _check_liveness(self, device: _Device) -> None:
        if self._devices.get(device.name) is not device or not device.connected:
            return
        if device.session.check_liveness():
            self._schedule_liveness(device)
            return
        self._flush(device)  # delivers SessionClosed(lost=True) and closes the socket

    # ---------------------------------------------------------------- approvals

    def pending_approvals(self) -> list[ApprovalAsked]:
        """The tool calls devices wait on, oldest first."""
        return list(self._approvals.values())

    def decide(
        self, request: str, approved: bool, *, by: str = "", reason: str = ""
    ) -> ApprovalAsked:
        """Answer a pending approval (returned); `UnknownApproval` if none has that id."""
        pending = self._approvals.pop(request, None)
        if pending is None:
            raise UnknownApproval(request, list(self._approvals))
        device = self._devices.get(pending.device)
        if device is None or not device.connected:
            log.info("approval %s decided, but device %s is gone", request, pending.device)
            return pending
        device.session.decide(request, approved, by=by, reason=reason)
        self._flush(device)
        return pending

    def _forget_approvals(self, device: str, key: tuple[str, str, int] | None = None) -> None:
        """Drop what `device` waits on for attempt `key` (for every attempt without `key`):
        the attempt ended or was cancelled, or the connection is gone, so nobody waits."""
        stale = [
            request
            for request, pending in self._approvals.items()
            if pending.device == device
            and (key is None or (pending.constellation_id, pending.star_id, pending.attempt) == key)
        ]
        for request in stale:
            del self._approvals[request]
            log.info("approval %s of device %s no longer waits; dropped", request, device)

    # ---------------------------------------------------------------- artifacts

    def _may_upload(self, device: str | None) -> bool:
        """Whether `device` runs a star whose tool may upload an artifact."""
        running = self._assigned.get(device, {}) if device is not None else {}
        return any(a.tool in UPLOADING_TOOLS for a in running.values())

    def _upload(
        self, session: ServerSession, event: ArtifactOffered | ArtifactChunk | ArtifactFinished
    ) -> None:
        """A device's `artifact.put`: receive, verify, keep by hash, ack the done. An offer
        is accepted only from a device running a star that may upload (`UPLOADING_TOOLS`)
        and only when it fits its quotas (`ArtifactStore.room_for`)."""
        if self.artifacts is None:
            if isinstance(event, ArtifactOffered):
                session.refuse(
                    ErrorCode.ARTIFACT,
                    "this orchestrator keeps no artifacts (start it with a data dir)",
                    ref=event.offer.id,
                )
            return
        device = session.device or "?"
        if isinstance(event, ArtifactOffered):
            refusal: tuple[ErrorCode, str] | None = None
            if not self._may_upload(session.device):
                refusal = (
                    ErrorCode.ARTIFACT_UNEXPECTED,
                    f"device {device!r} runs no star that uploads artifacts "
                    f"({', '.join(sorted(UPLOADING_TOOLS))}); an upload comes from a running "
                    "star",
                )
            elif (room := self.artifacts.room_for(device, event.offer.body.size)) is not None:
                refusal = (ErrorCode.QUOTA_EXCEEDED, room)
            if refusal is not None:
                log.info("device %s: artifact %r refused: %s", device, event.offer.body.name,
                         refusal[1])  # fmt: skip
                session.refuse(*refusal, ref=event.offer.id)
                return
        receiver = self._receivers.get(session)
        if receiver is None:
            receiver = self._receivers[session] = self.artifacts.receiver()
        ref: str | None = None
        try:
            if isinstance(event, ArtifactOffered):
                ref = event.offer.id
                receiver.on_offer(event.offer)
            elif isinstance(event, ArtifactChunk):
                receiver.on_chunk(event.data)
            else:
                ref = event.done.id
                body = event.done.body
                offer = receiver.offer_of(body.transfer) if body.ok else None
                path = receiver.on_done(event.done)
                if offer is not None:
                    self.artifacts.keep(path, offer.sha256, offer.name, device)
                    session.ack(event.done.id)
        except ArtifactError as exc:
            log.info("device %s: artifact refused: %s", session.device, exc.message)
            session.refuse(ErrorCode.ARTIFACT, exc.message, ref=ref)
        except QuotaExceeded as exc:  # others filled the room while it was sent
            log.info("device %s: artifact refused: %s", session.device, exc)
            session.refuse(ErrorCode.QUOTA_EXCEEDED, str(exc), ref=ref)

    def _fetch(
        self, session: ServerSession, driver: SessionDriver, event: ArtifactRequested
    ) -> None:
        """A device's `artifact.get`: stream the stored file back, or say it is unknown."""
        found = self.artifacts.find(event.artifact) if self.artifacts is not None else None
        if found is None:
            session.refuse(
                ErrorCode.ARTIFACT,
                f"no artifact {event.artifact} is stored here; upload it with artifact.put",
                ref=event.message_id,
            )
            return
        path, name = found

        async def stream() -> None:
            try:
                await send_artifact(session, driver, path, name, transfer=event.transfer)
            except (ArtifactError, ProtocolViolation) as exc:
                log.info("sending artifact %s to %s failed: %s", name, session.device, exc)

        task = asyncio.get_running_loop().create_task(stream(), name=f"artifact {name}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _disconnected(self, device: _Device, event: SessionClosed) -> None:
        if self._devices.get(device.name) is not device:
            return
        device.connected = False
        if device.liveness is not None:
            device.liveness.cancel()
        if event.left:
            log.info("device %s left: %s", device.name, event.reason)
        else:
            log.info("device %s disconnected: %s", device.name, event.reason)
        self._forget_approvals(device.name)  # the device takes them as refused (protocol.md)
        if self._sink is not None:
            self._sink.on_devices_changed()
        self._report_state(device, "offline", event.reason, left=event.left)
        if event.lost:
            self._lost(device, event.reason)
            return
        if event.left:
            self._left(device, event.reason)
            return
        # A dropped socket: the device may come back and deliver what it ran.
        grace = self.config.heartbeat_interval * self.config.heartbeat_misses
        device.grace = self.clock.call_later(
            grace, lambda: self._lost(device, f"did not reconnect within {grace:g}s")
        )

    def _lost(self, device: _Device, why: str) -> None:
        if self._devices.get(device.name) is not device:
            return  # it reconnected meanwhile
        del self._devices[device.name]
        running = self._assigned.pop(device.name, {})
        log.warning("device %s lost (%s); %d attempts fail over", device.name, why, len(running))
        self._report_state(device, "lost", why, left=True)
        for assignment in running.values():
            self._report(TaskResult.failure(assignment, f"device {device.name!r} lost: {why}"))

    def _left(self, device: _Device, why: str) -> None:
        """The device said goodbye: it stays offline (not lost), and what it did not hand
        back before its `bye` fails over now; nothing waits for it to come back."""
        del self._devices[device.name]
        running = self._assigned.pop(device.name, {})
        if running:
            log.info("device %s left with %d attempts; they fail over", device.name, len(running))
        for assignment in running.values():
            self._report(
                TaskResult.failure(
                    assignment,
                    f"device {device.name!r} left ({why}) before the star finished; "
                    "it can run on another device",
                )
            )

    def _cancel_timers(self, device: _Device) -> None:
        for timer in (device.liveness, device.grace):
            if timer is not None:
                timer.cancel()

    def _update_state(self, name: str, *, joined: bool = False) -> None:
        """Report "busy" when a device's slots are all taken, "online" when one frees
        (and, with `joined`, that it connected)."""
        device = self._devices.get(name)
        if device is None or not device.connected:
            return
        taken = len(self._assigned.get(name, {}))
        state = "busy" if taken >= device.info.max_tasks else "online"
        if state != device.state or joined:
            device.state = state
            self._report_state(device, state, "connected" if joined else "", joined=joined)

    def _report_state(
        self, device: _Device, state: str, reason: str, *, joined: bool = False, left: bool = False
    ) -> None:
        if self._sink is None:
            return
        change = DeviceChange(
            device=device.name,
            state=state,
            info=device.info if joined else None,
            reason=reason,
            running=len(self._assigned.get(device.name, {})),
            joined=joined,
            left=left,
        )
        try:
            self._sink.on_device_change(change)
        except Exception:
            log.exception("reporting the state of device %s failed", device.name)

    def _report(self, result: TaskResult) -> None:
        if self._sink is not None:
            self._sink.on_result(result)


def _already_connected(previous: _Device, silent: float) -> str:
    return (
        f"device {previous.name!r} is already connected (from "
        f"{previous.driver.connection.remote}, heard from {max(0.0, silent):.1f}s ago); one name "
        "serves one process at a time: stop the other process, or enrol this one under a "
        "name of its own (`orrery devices enroll NAME`)"
    )
