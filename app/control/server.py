"""The control API's server side: one `ControlSession` per WebSocket at /control/v1.

A connection authenticates with the local token first; then every request is answered
(by `id`) through the runtime (`app.runtime.Runtime`, the same interface the desktop app
and the local CLI use), and subscriptions stream events: a constellation's, or the whole
fleet's, what already happened replayed first (after `after_seq`), then live ones,
without gaps or duplicates. A malformed request gets an `error` naming the field; the
connection stays. No frame can do more: every one is read through a size and nesting check
(`protocol.json_limits`), the first (`auth`) with a small size limit, and an address with
too many failed logins is answered `rate_limited` at once (`app.control.login_limit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final

from agents.events import Event, Subscription, event_to_dict
from app.control.login_limit import LoginLimiter, address_of
from app.control.messages import (
    MAX_AUTH_FRAME,
    MAX_FRAME,
    ApprovalList,
    ApprovalsRequest,
    ApproveRequest,
    Authenticated,
    AuthRequest,
    BadRequest,
    Cancelled,
    CancelRequest,
    CancelStarRequest,
    ConstellationRequest,
    Decided,
    DeviceList,
    DevicesRequest,
    DiscardRequest,
    Enrolled,
    EnrollRequest,
    ErrorCode,
    ErrorReply,
    EventMessage,
    HistoryList,
    HistoryRequest,
    MemoryForgetRequest,
    MemoryHits,
    MemorySearchRequest,
    MemoryShowRequest,
    Pinned,
    PinRequest,
    ProposeRequest,
    Request,
    RetryRequest,
    StarCancelled,
    StartRequest,
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
from app.errors import RequestRejected
from protocol.transport import Connection, TransportClosed

if TYPE_CHECKING:
    from pydantic import BaseModel

    from app.interface import Run
    from app.runtime.core import Runtime

log = logging.getLogger("orrery.control")

AUTH_TIMEOUT: Final = 10.0  # seconds a new connection has to send its `auth`


class ControlServer:
    """The /control/v1 endpoint of a runtime; `handle` serves one connection.

    `token` is the control token (DATA_DIR/control.token); None refuses everyone.
    `logins` counts failed logins per address (a fresh `LoginLimiter` by default)."""

    def __init__(
        self, runtime: Runtime, token: str | None, *, logins: LoginLimiter | None = None
    ) -> None:
        self.runtime = runtime
        self.token = token
        self.logins = logins if logins is not None else LoginLimiter()
        self._sessions: set[ControlSession] = set()

    async def handle(self, connection: Connection) -> None:
        session = ControlSession(self, connection)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)


class ControlSession:
    """One authenticated control connection: requests in, replies and events out."""

    def __init__(self, server: ControlServer, connection: Connection) -> None:
        self.server = server
        self.runtime = server.runtime
        self.connection = connection
        self.peer = connection.remote
        self.client = ""
        self._outgoing: asyncio.Queue[str] = asyncio.Queue()
        # by constellation id (None: the fleet-wide stream)
        self._streams: dict[str | None, tuple[asyncio.Task[None] | None, Subscription | None]]
        self._streams = {}
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
        """Read the `auth` frame; on a bad one send an error naming the problem and close.
        An address with too many failed logins is refused before its frame is read."""
        address = address_of(self.peer)
        logins = self.server.logins
        wait = logins.wait(address)
        if wait > 0:
            await self._refuse(
                None,
                f"too many failed logins from {address}; try again in {wait:.0f}s",
                code=ErrorCode.RATE_LIMITED,
            )
            return False
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                frame, _ = await self.connection.recv()
        except TransportClosed:
            return False
        except TimeoutError:
            await self._refuse(None, f"no `auth` request within {AUTH_TIMEOUT:g}s")
            return False
        try:
            request = parse_request(frame, max_bytes=MAX_AUTH_FRAME)
        except BadRequest as bad:
            logins.failed(address)
            await self._refuse(
                bad.reply.id, f"authenticate first: {bad.reply.message}", code=bad.reply.code
            )
            return False
        if not isinstance(request, AuthRequest):
            logins.failed(address)
            await self._refuse(
                request.id,
                f"authenticate first: the first request must be `auth` with the token, "
                f"not {request.type!r}",
            )
            return False
        expected = self.server.token
        if expected is None or not tokens_match(request.token, expected):
            logins.failed(address)
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

    async def _refuse(
        self,
        request_id: str | None,
        message: str,
        field: str | None = None,
        *,
        code: ErrorCode = ErrorCode.UNAUTHORIZED,
    ) -> None:
        level = logging.DEBUG if code is ErrorCode.RATE_LIMITED else logging.WARNING
        log.log(level, "control %s: refused (%s): %s", self.peer, code, message)
        reply = ErrorReply(id=request_id, code=code, message=message, field=field)
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
        except RequestRejected as refused:
            self._send(refused.reply(request.id))

    async def _answer(self, request: Request) -> None:
        log.info("control %s: %s %s", self.peer, request.type, request.id)
        try:
            reply = await self._reply_to(request)
        except RequestRejected as refused:
            log.info("control %s: %s %s refused: %s", self.peer, request.type, request.id,
                     refused.reason)  # fmt: skip
            reply = refused.reply(request.id)
        except Exception as exc:
            log.exception("control %s: %s %s failed", self.peer, request.type, request.id)
            reply = ErrorReply(
                id=request.id,
                code=ErrorCode.INTERNAL,
                message=f"the server failed on {request.type!r}: {type(exc).__name__}: {exc}",
            )
        self._send(reply)

    async def _reply_to(self, request: Request) -> BaseModel:
        runtime = self.runtime
        rid = request.id
        if isinstance(request, SubmitRequest):
            if request.plan is not None:
                run = await runtime.submit(plan_text=request.plan, source=request.source)
            else:
                run = await runtime.submit(request=request.request)
            return self._submitted(rid, run)
        if isinstance(request, ProposeRequest):
            proposal = await runtime.propose(request.request)
            log.info("control %s: proposed p=%s (%d stars)", self.peer, proposal.proposal,
                     len(proposal.stars))  # fmt: skip
            return proposal.model_copy(update={"id": rid})
        if isinstance(request, StartRequest):
            return self._submitted(rid, await runtime.start_proposal(request.proposal))
        if isinstance(request, DiscardRequest):
            discarded = await runtime.discard_proposal(request.proposal)
            return discarded.model_copy(update={"id": rid})
        if isinstance(request, RetryRequest):
            return self._submitted(rid, await runtime.retry(request.constellation, request.star))
        if isinstance(request, CancelRequest):
            status = await runtime.cancel(request.constellation, request.reason)
            return Cancelled(id=rid, constellation=request.constellation, status=status)
        if isinstance(request, CancelStarRequest):
            status = await runtime.cancel_star(request.constellation, request.star, request.reason)
            return StarCancelled(
                id=rid, constellation=request.constellation, star=request.star, status=status
            )
        if isinstance(request, PinRequest):
            version = await runtime.pin_star(request.constellation, request.star, request.device)
            return Pinned(
                id=rid,
                constellation=request.constellation,
                star=request.star,
                device=request.device,
                version=version,
            )
        if isinstance(request, EnrollRequest):
            token = await runtime.enroll(request.name)
            log.info("control %s: enrolled device %s", self.peer, request.name)
            return Enrolled(id=rid, name=request.name, token=token)
        if isinstance(request, ApproveRequest):
            await runtime.approve(
                request.request,
                request.approved,
                request.reason,
                by=f"control: {self.client}",
            )
            return Decided(id=rid, request=request.request, approved=request.approved)
        if isinstance(request, ApprovalsRequest):
            return ApprovalList(id=rid, approvals=await runtime.approvals())
        if isinstance(request, DevicesRequest):
            return DeviceList(id=rid, devices=await runtime.devices())
        if isinstance(request, HistoryRequest):
            history = await runtime.history(request.limit, request.status)
            return HistoryList(id=rid, constellations=history)
        if isinstance(request, ConstellationRequest):
            snapshot = await runtime.constellation(request.constellation)
            return snapshot.model_copy(update={"id": rid})
        if isinstance(request, MemorySearchRequest):
            return MemoryHits(id=rid, hits=await runtime.memory_search(request.text, request.limit))
        if isinstance(request, MemoryShowRequest):
            tree = await runtime.memory_show(request.request)
            return tree.model_copy(update={"id": rid})
        if isinstance(request, MemoryForgetRequest):
            forgotten = await runtime.memory_forget(request.request)
            return forgotten.model_copy(update={"id": rid})
        assert isinstance(request, AuthRequest)
        return ErrorReply(id=rid, code=ErrorCode.MALFORMED, message="already authenticated")

    def _submitted(self, request_id: str, run: Run) -> Submitted:
        log.info("control %s: submitted c=%s (%s, %d stars)", self.peer, run.id, run.name,
                 run.stars)  # fmt: skip
        return Submitted(
            id=request_id,
            constellation=run.id,
            name=run.name,
            stars=run.stars,
            version=1,
            rationale=run.rationale,
        )

    def _subscribe(self, request: SubscribeRequest) -> None:
        cid = request.constellation
        self._unsubscribe(cid)  # a second subscribe replaces the first
        start = self.runtime.open_stream(cid, request.after_seq, request.types)
        self._send(
            Subscribed(
                id=request.id,
                constellation=cid,
                status=start.status,
                epoch=self.runtime.epoch,
                last_seq=self.runtime.stream.last_seq,
                truncated=start.truncated,
            )
        )
        for item in start.replay:
            self._send_event(request.id, item)
        log.info(
            "control %s: subscribed to %s after %d (%d replayed%s)",
            self.peer,
            f"c={cid}" if cid else "the fleet",
            request.after_seq,
            len(start.replay),
            ", live" if start.live else "",
        )
        if start.interrupted:
            self._send(
                ErrorReply(
                    id=request.id,
                    code=ErrorCode.INTERRUPTED,
                    message=f"constellation {cid!r} was {start.status} in an orchestrator that "
                    "stopped before it finished; its record ends here",
                    field="constellation",
                )
            )
        task = None
        if start.live is not None:
            task = asyncio.create_task(self._forward(request.id, cid, start.live))
        self._streams[cid] = (task, start.live)

    def _send_event(self, request_id: str, item: Event | dict[str, Any]) -> None:
        if isinstance(item, Event):
            payload, seq, cid = event_to_dict(item), item.seq, item.constellation_id
        else:
            payload = item
            seq = int(item.get("seq", 0))
            cid = str(item.get("constellation_id", ""))
        self._send(EventMessage(id=request_id, constellation=cid, seq=seq, event=payload))

    async def _forward(self, request_id: str, cid: str | None, live: Subscription) -> None:
        async for event in live:
            self._send_event(request_id, event)
        self._streams.pop(cid, None)

    def _unsubscribe(self, cid: str | None) -> None:
        task, live = self._streams.pop(cid, (None, None))
        if live is not None:
            live.close()
        if task is not None:
            task.cancel()
