"""The control API's server side: one `ControlSession` per WebSocket at /control/v1.

A connection authenticates with the local token first; then every request is answered
(by `id`) and subscriptions stream a constellation's events: what already happened,
replayed from the start (or after `after_seq`), then live ones, without gaps or
duplicates. A malformed request gets an `error` naming the field; the connection stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from agents.constellation import Constellation
from agents.events import (
    ConstellationFinished,
    EditApplied,
    Event,
    Subscription,
    event_to_dict,
)
from app.control.messages import (
    MAX_FRAME,
    ApprovalList,
    ApprovalsRequest,
    ApproveRequest,
    Authenticated,
    AuthRequest,
    BadRequest,
    Cancelled,
    CancelRequest,
    ConstellationRequest,
    Decided,
    DeviceEntry,
    DeviceList,
    DevicesRequest,
    EditEntry,
    ErrorCode,
    ErrorReply,
    EventMessage,
    HistoryEntry,
    HistoryList,
    HistoryRequest,
    PendingApprovalInfo,
    Request,
    Snapshot,
    SubmitRequest,
    Submitted,
    Subscribed,
    SubscribeRequest,
    Unsubscribed,
    UnsubscribeRequest,
    dump,
    parse_request,
)
from app.control.token import tokens_match
from protocol.transport import Connection, TransportClosed

if TYPE_CHECKING:
    from pydantic import BaseModel

    from app.fleet import Orchestra

log = logging.getLogger("orrery.control")

AUTH_TIMEOUT: Final = 10.0  # seconds a new connection has to send its `auth`
KEEP_FINISHED: Final = 64  # finished constellations whose events stay in memory


class Refused(Exception):
    """A request that cannot be carried out; becomes an `error` reply."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class EventLog:
    """Every event of the constellations in memory, by constellation, for replays.

    Logs of live constellations are kept whole; of finished ones, the last
    `KEEP_FINISHED` (older ones are replayed from the store, which has them all).
    """

    def __init__(self, keep_finished: int = KEEP_FINISHED) -> None:
        self._logs: dict[str, list[Event]] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._keep = keep_finished

    def __call__(self, event: Event) -> None:
        cid = event.constellation_id
        self._logs.setdefault(cid, []).append(event)
        if isinstance(event, ConstellationFinished):
            self._finished[cid] = None
            while len(self._finished) > self._keep:
                old, _ = self._finished.popitem(last=False)
                self._logs.pop(old, None)

    def has(self, constellation_id: str) -> bool:
        return constellation_id in self._logs

    def after(self, constellation_id: str, after_seq: int) -> list[Event]:
        return [e for e in self._logs.get(constellation_id, ()) if e.seq > after_seq]


class ControlServer:
    """The /control/v1 endpoint of an `Orchestra`; `handle` serves one connection."""

    def __init__(self, orchestra: Orchestra) -> None:
        self.orchestra = orchestra
        self.token: str | None = None
        """Set when the orchestra starts (DATA_DIR/control.token); None refuses everyone."""
        self.log = EventLog()
        orchestra.events.listen(self.log)
        self._sessions: set[ControlSession] = set()

    async def handle(self, connection: Connection) -> None:
        session = ControlSession(self, connection)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)

    # ---------------------------------------------------------------- streams

    def open_stream(
        self, constellation_id: str, after_seq: int
    ) -> tuple[str, list[tuple[int, dict[str, Any]]], Subscription | None, bool]:
        """(status, events to replay, live subscription or None, interrupted).

        Synchronous on purpose: the replay and the live subscription are taken in one step
        of the event loop, so no event falls between them and none is in both.
        """
        orchestrator = self.orchestra.orchestrator
        try:
            constellation: Constellation | None = orchestrator.constellation(constellation_id)
        except LookupError:
            constellation = None
        if constellation is not None and self.log.has(constellation_id):
            events = self.log.after(constellation_id, after_seq)
            replay = [(e.seq, event_to_dict(e)) for e in events]
            live = None
            if not constellation.status.terminal:
                live = self.orchestra.events.subscribe(constellation_id)
            return constellation.status.value, replay, live, False
        row = self.orchestra.store.constellation(constellation_id)
        if row is None:
            raise _unknown(constellation_id)
        stored = self.orchestra.store.events(constellation_id, after_seq=after_seq)
        replay = [(e.seq, e.payload) for e in stored]
        if constellation is not None:  # in memory, its log evicted: finished, all stored
            return constellation.status.value, replay, None, False
        interrupted = row.status not in ("succeeded", "failed", "cancelled")
        return row.status, replay, None, interrupted

    def snapshot(self, request_id: str, constellation_id: str) -> Snapshot:
        try:
            live: Constellation | None = self.orchestra.orchestrator.constellation(constellation_id)
        except LookupError:
            live = None
        if live is not None and self.log.has(constellation_id):
            edits = [
                _edit_entry(event_to_dict(e))
                for e in self.log.after(constellation_id, 0)
                if isinstance(e, EditApplied)
            ]
        else:
            edits = [
                _edit_entry(e.payload)
                for e in self.orchestra.store.events(constellation_id)
                if e.type == "edit.applied"
            ]
        if live is not None:
            reason = None
            row = self.orchestra.store.constellation(constellation_id)
            if row is not None:
                reason = row.reason
            return Snapshot(
                id=request_id,
                name=live.name,
                status=live.status.value,
                version=live.version,
                rationale=live.rationale,
                reason=reason,
                live=True,
                constellation=live.model_dump(mode="json", by_alias=True),
                edits=edits,
            )
        row = self.orchestra.store.constellation(constellation_id)
        if row is None:
            raise _unknown(constellation_id)
        return Snapshot(
            id=request_id,
            name=row.name,
            status=row.status,
            version=row.version,
            rationale=str(row.snapshot.get("rationale", "")),
            reason=row.reason,
            live=False,
            constellation=row.snapshot,
            edits=edits,
        )


def _unknown(constellation_id: str) -> Refused:
    return Refused(
        ErrorCode.UNKNOWN_CONSTELLATION,
        f"no constellation {constellation_id!r} on this server (see the `history` command)",
        "constellation",
    )


def _edit_entry(payload: dict[str, Any]) -> EditEntry:
    return EditEntry(
        version=int(payload.get("version", 0)),
        rationale=str(payload.get("rationale", "")),
        undo=bool(payload.get("undo", False)),
        edits=len(payload.get("edits") or []),
    )


class ControlSession:
    """One authenticated control connection: requests in, replies and events out."""

    def __init__(self, server: ControlServer, connection: Connection) -> None:
        self.server = server
        self.orchestra = server.orchestra
        self.connection = connection
        self.peer = connection.remote
        self.client = ""
        self._outgoing: asyncio.Queue[str] = asyncio.Queue()
        self._streams: dict[str, tuple[asyncio.Task[None] | None, Subscription | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        if not await self._authenticate():
            return
        writer = asyncio.create_task(self._write(), name=f"control-writer {self.peer}")
        try:
            while True:
                try:
                    frame, _binary = await self.connection.recv()
                except TransportClosed:
                    return
                if len(frame) > MAX_FRAME:
                    self._send(
                        ErrorReply(
                            id=None,
                            code=ErrorCode.MALFORMED,
                            message=f"frame of {len(frame)} bytes; the limit is {MAX_FRAME}",
                        )
                    )
                    continue
                try:
                    request = parse_request(frame)
                except BadRequest as bad:
                    log.info("control %s: refused a request: %s", self.peer, bad.reply.message)
                    self._send(bad.reply)
                    continue
                self._start(request)
        finally:
            for task, subscription in self._streams.values():
                if subscription is not None:
                    subscription.close()
                if task is not None:
                    task.cancel()
            for task in list(self._tasks):
                task.cancel()
            writer.cancel()
            await asyncio.gather(writer, *self._tasks, return_exceptions=True)
            log.info("control %s (%s): disconnected", self.peer, self.client or "?")

    # ---------------------------------------------------------------- auth

    async def _authenticate(self) -> bool:
        """Read the `auth` frame; on a bad one send an error naming the problem and close."""
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                frame, _ = await self.connection.recv()
        except TransportClosed:
            return False
        except TimeoutError:
            await self._refuse(None, f"no `auth` request within {AUTH_TIMEOUT:g}s")
            return False
        try:
            request = parse_request(frame)
        except BadRequest as bad:
            await self._refuse(bad.reply.id, f"authenticate first: {bad.reply.message}")
            return False
        if not isinstance(request, AuthRequest):
            await self._refuse(
                request.id,
                f"authenticate first: the first request must be `auth` with the token, "
                f"not {request.type!r}",
            )
            return False
        expected = self.server.token
        if expected is None or not tokens_match(request.token, expected):
            await self._refuse(
                request.id,
                "token: wrong control token; use the one in the server's DATA_DIR/control.token",
                field="token",
            )
            return False
        self.client = request.client or self.peer
        log.info("control %s: authenticated (%s)", self.peer, self.client)
        await self._send_now(Authenticated(id=request.id))
        return True

    async def _refuse(self, request_id: str | None, message: str, field: str | None = None) -> None:
        log.warning("control %s: refused: %s", self.peer, message)
        reply = ErrorReply(id=request_id, code=ErrorCode.UNAUTHORIZED, message=message, field=field)
        with contextlib.suppress(TransportClosed):
            await self._send_now(reply)
        await self.connection.close("unauthorized")

    # ---------------------------------------------------------------- sending

    async def _send_now(self, message: BaseModel) -> None:
        await self.connection.send_all([dump(message)])

    def _send(self, message: BaseModel) -> None:
        self._outgoing.put_nowait(dump(message))

    async def _write(self) -> None:
        while True:
            frame = await self._outgoing.get()
            try:
                await self.connection.send_all([frame])
            except TransportClosed:
                return

    # ---------------------------------------------------------------- requests

    def _start(self, request: Request) -> None:
        if isinstance(request, SubscribeRequest | UnsubscribeRequest):
            self._answer_now(request)  # synchronous: keeps replay and stream in order
            return
        task = asyncio.create_task(self._answer(request), name=f"control {request.type}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer_now(self, request: SubscribeRequest | UnsubscribeRequest) -> None:
        try:
            if isinstance(request, SubscribeRequest):
                self._subscribe(request)
            else:
                self._unsubscribe(request.constellation)
                self._send(Unsubscribed(id=request.id, constellation=request.constellation))
        except Refused as refused:
            self._send(_error(request.id, refused))

    async def _answer(self, request: Request) -> None:
        log.info("control %s: %s %s", self.peer, request.type, request.id)
        try:
            reply = await self._reply_to(request)
        except Refused as refused:
            log.info("control %s: %s %s refused: %s", self.peer, request.type, request.id,
                     refused.message)  # fmt: skip
            reply = _error(request.id, refused)
        except Exception as exc:
            log.exception("control %s: %s %s failed", self.peer, request.type, request.id)
            reply = ErrorReply(
                id=request.id,
                code=ErrorCode.INTERNAL,
                message=f"the server failed on {request.type!r}: {type(exc).__name__}: {exc}",
            )
        self._send(reply)

    async def _reply_to(self, request: Request) -> BaseModel:
        if isinstance(request, SubmitRequest):
            return await self._submit(request)
        if isinstance(request, CancelRequest):
            return self._cancel(request)
        if isinstance(request, ApproveRequest):
            return self._approve(request)
        if isinstance(request, ApprovalsRequest):
            return self._approvals(request)
        if isinstance(request, DevicesRequest):
            return self._devices(request)
        if isinstance(request, HistoryRequest):
            return self._history(request)
        if isinstance(request, ConstellationRequest):
            return self.server.snapshot(request.id, request.constellation)
        assert isinstance(request, AuthRequest)
        return ErrorReply(id=request.id, code=ErrorCode.MALFORMED, message="already authenticated")

    async def _submit(self, request: SubmitRequest) -> Submitted:
        if request.plan is not None:
            constellation = self._parse_plan(request.plan, request.source)
        else:
            assert request.request is not None
            constellation = await self._plan(request.request)
        self.orchestra.start(constellation)
        log.info(
            "control %s: submitted c=%s (%s, %d stars)",
            self.peer,
            constellation.id,
            constellation.name,
            len(constellation.stars),
        )
        return Submitted(
            id=request.id,
            constellation=constellation.id,
            name=constellation.name,
            stars=len(constellation.stars),
            version=constellation.version,
            rationale=constellation.rationale,
        )

    def _parse_plan(self, text: str, source: str) -> Constellation:
        from agents.constellation.plan_file import PlanFileError, parse_plan

        try:
            return parse_plan(text, source=source, known_tools=self.orchestra.known_tools())
        except PlanFileError as exc:
            raise Refused(ErrorCode.INVALID_PLAN, str(exc), "plan") from None

    async def _plan(self, text: str) -> Constellation:
        planner = self.orchestra.plan_request
        if planner is None:
            raise Refused(
                ErrorCode.NO_PLANNER,
                "this server has no planner; submit a plan (YAML) instead of a request",
                "request",
            )
        from agents.models.errors import ModelError
        from agents.planner.errors import NoCapableDevice, PlanningError

        devices: Sequence[Any] = list(self.orchestra.dispatcher.devices())
        try:
            return await planner(text, devices)
        except NoCapableDevice as exc:
            raise Refused(ErrorCode.NO_CAPABLE_DEVICE, str(exc), "request") from None
        except PlanningError as exc:
            raise Refused(ErrorCode.PLAN_REJECTED, str(exc), "request") from None
        except ModelError as exc:  # a planner model that is missing, corrupt or failing
            message = f"the planner's model failed: {exc}"
            raise Refused(ErrorCode.PLAN_REJECTED, message, "request") from None
        # Anything else is a bug: `_answer` logs it and replies `internal`.

    def _subscribe(self, request: SubscribeRequest) -> None:
        cid = request.constellation
        self._unsubscribe(cid)  # a second subscribe replaces the first
        status, replay, live, interrupted = self.server.open_stream(cid, request.after_seq)
        self._send(Subscribed(id=request.id, constellation=cid, status=status))
        for seq, payload in replay:
            self._send(EventMessage(id=request.id, constellation=cid, seq=seq, event=payload))
        log.info(
            "control %s: subscribed to c=%s after %d (%d replayed%s)",
            self.peer,
            cid,
            request.after_seq,
            len(replay),
            ", live" if live else "",
        )
        if interrupted:
            self._send(
                ErrorReply(
                    id=request.id,
                    code=ErrorCode.INTERRUPTED,
                    message=f"constellation {cid!r} was {status} in an orchestrator that "
                    "stopped before it finished; its record ends here",
                    field="constellation",
                )
            )
        task = None
        if live is not None:
            task = asyncio.create_task(self._forward(request.id, cid, live))
        self._streams[cid] = (task, live)

    async def _forward(self, request_id: str, cid: str, live: Subscription) -> None:
        async for event in live:
            self._send(
                EventMessage(
                    id=request_id, constellation=cid, seq=event.seq, event=event_to_dict(event)
                )
            )
        self._streams.pop(cid, None)

    def _unsubscribe(self, cid: str) -> None:
        task, live = self._streams.pop(cid, (None, None))
        if live is not None:
            live.close()
        if task is not None:
            task.cancel()

    def _cancel(self, request: CancelRequest) -> Cancelled:
        cid = request.constellation
        orchestrator = self.orchestra.orchestrator
        try:
            orchestrator.cancel(cid, request.reason)
            status = orchestrator.constellation(cid).status.value
        except LookupError:
            row = self.orchestra.store.constellation(cid)
            if row is None:
                raise _unknown(cid) from None
            status = row.status
        log.info("control %s: cancel c=%s: %s", self.peer, cid, status)
        return Cancelled(id=request.id, constellation=cid, status=status)

    def _approve(self, request: ApproveRequest) -> Decided:
        from agents.aip_dispatcher import UnknownApproval

        try:
            self.orchestra.approve(
                request.request,
                request.approved,
                by=f"control: {self.client}",
                reason=request.reason,
            )
        except UnknownApproval as exc:
            raise Refused(ErrorCode.UNKNOWN_APPROVAL, str(exc), "request") from None
        return Decided(id=request.id, request=request.request, approved=request.approved)

    def _approvals(self, request: ApprovalsRequest) -> ApprovalList:
        pending = [
            PendingApprovalInfo(
                request=p.request.request,
                constellation=p.request.task.constellation_id,
                star=p.request.task.star_id,
                attempt=p.request.task.attempt,
                device=p.device,
                tool=p.request.tool,
                summary=p.request.summary,
            )
            for p in self.orchestra.pending_approvals()
        ]
        return ApprovalList(id=request.id, approvals=pending)

    def _devices(self, request: DevicesRequest) -> DeviceList:
        connected = {d.name: d for d in self.orchestra.dispatcher.devices()}
        entries = []
        for row in self.orchestra.store.devices():
            info = connected.pop(row.name, None)
            entries.append(
                DeviceEntry(
                    name=row.name,
                    state=row.state,
                    connected=info is not None,
                    labels=sorted(info.labels) if info else list(row.labels or []),
                    last_seen=row.last_seen,
                    platform=info.platform if info else None,
                    tools=sorted(info.tools) if info else [],
                    gpu=info.gpu if info else False,
                    max_tasks=info.max_tasks if info else None,
                )
            )
        for info in connected.values():  # connected but not in the store (not expected)
            entries.append(
                DeviceEntry(
                    name=info.name,
                    state="online",
                    connected=True,
                    labels=sorted(info.labels),
                    platform=info.platform,
                    tools=sorted(info.tools),
                    gpu=info.gpu,
                    max_tasks=info.max_tasks,
                )
            )
        return DeviceList(id=request.id, devices=entries)

    def _history(self, request: HistoryRequest) -> HistoryList:
        rows = self.orchestra.store.constellations(limit=request.limit, status=request.status)
        return HistoryList(
            id=request.id,
            constellations=[
                HistoryEntry(
                    id=row.id,
                    name=row.name,
                    status=row.status,
                    version=row.version,
                    stars=len(row.snapshot.get("stars") or {}),
                    created_at=row.created_at,
                    finished_at=row.finished_at,
                    reason=row.reason,
                )
                for row in rows
            ],
        )


def _error(request_id: str, refused: Refused) -> ErrorReply:
    return ErrorReply(
        id=request_id, code=refused.code, message=refused.message, field=refused.field
    )
