"""A Python client of the control API (`orrery serve`, docs/control-api.md).

    async with Orrery("ws://127.0.0.1:8765") as o:
        run = await o.submit(Path("plan.yaml"))   # or plan_text=..., or a request in words
        async for event in run.events():          # agents.events types, replayed from the start
            print(event.type)
        result = await run.wait()                 # RunResult: status, reason, failed star
        proposal = await o.propose("write hello into hello.txt")   # planned, not run yet:
        run = await o.start_proposal(proposal.proposal)            # or discard_proposal(...)
        async for event in o.events(types={"device.state"}):   # the fleet, live
            ...

`Orrery` satisfies `app.interface.OrreryApi`, as the in-process runtime does, so code
written against that interface drives either. `SyncOrrery` does the same for scripts
without asyncio. The token comes from `token=`, else `$ORRERY_CONTROL_TOKEN`, else
DATA_DIR/control.token (the server's data dir when both run on one machine); when the
server refuses it, `AuthRefused` names where it was read. For a `wss://` server with a
self-signed certificate pass `ssl=client_ssl_context(Path("ca.pem"))`.

If the connection drops (the server restarted), the client reconnects for up to
`reconnect_within` seconds and subscribes again after the last event each stream
received, so a caller sees every event once, in order (a fleet stream of a restarted
server starts again from that server's first event). A request in flight when the
connection dropped fails with `ConnectionLost` (it may or may not have been carried out).

Errors (`app.errors`): `OrreryError` is the base; `ServerUnreachable` (and its
`ConnectionLost`) when the server cannot be reached, `AuthRefused` for a missing or wrong
token, `RequestRejected` (with `code`, `field`, `reason`) for a refused request, and its
`RunInterrupted` when the orchestrator running a constellation stopped before it finished.

Imports only websockets, pydantic and the light parts of Orrery (no Qt, no models).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException

from agents.events import ConstellationFinished, Event, event_from_dict
from app.control.messages import (
    CONTROL_PATH,
    MAX_FRAME,
    ApprovalList,
    ApprovalsRequest,
    ApproveRequest,
    Authenticated,
    AuthRequest,
    Cancelled,
    CancelRequest,
    CancelStarRequest,
    ConstellationRequest,
    Decided,
    DeviceEntry,
    DeviceList,
    DevicesRequest,
    Discarded,
    DiscardRequest,
    Enrolled,
    EnrollRequest,
    ErrorCode,
    ErrorReply,
    EventMessage,
    HistoryEntry,
    HistoryList,
    HistoryRequest,
    MemoryForgetRequest,
    MemoryForgotten,
    MemoryHit,
    MemoryHits,
    MemorySearchRequest,
    MemoryShowRequest,
    MemoryTree,
    PendingApprovalInfo,
    Pinned,
    PinRequest,
    Proposal,
    ProposeRequest,
    RetryRequest,
    ServerMessage,
    Snapshot,
    StarCancelled,
    StartRequest,
    SubmitRequest,
    Submitted,
    Subscribed,
    SubscribeRequest,
    UnsubscribeRequest,
    dump,
    parse_server_message,
    plan_text_problem,
)
from app.control.token import ENV_TOKEN, TokenError, read_token, token_path
from app.errors import (
    AuthRefused,
    BadServerUrl,
    ConnectionLost,
    OrreryError,
    RequestRejected,
    RunInterrupted,
    ServerUnreachable,
)
from app.interface import Run, RunResult, read_submission

log = logging.getLogger("orrery.client")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_AIP_PATH = "/aip/v1"


# --------------------------------------------------------------------------- helpers


def control_url(url: str) -> str:
    """`url` as the control endpoint: ws(s)://host:port/control/v1.

    http(s):// counts as ws(s)://; an AIP URL (…/aip/v1) or a bare host:port gets the
    control path. Raises `ValueError` naming the problem for anything else.
    """
    parts = urlsplit(url.strip())
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise BadServerUrl(f"{url!r} is not a server URL; use ws://HOST:PORT or wss://HOST:PORT")
    path = parts.path.rstrip("/").removesuffix(_AIP_PATH)
    if not path.endswith(CONTROL_PATH):
        path += CONTROL_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


@dataclass(frozen=True, slots=True)
class FoundToken:
    """A control token and where it came from (said when the server refuses it)."""

    token: str
    source: str


def find_token(
    token: str | None, data_dir: str | Path | None, source: str | None = None
) -> FoundToken:
    """`token` (read from `source`, when the caller read it from a file), else
    $ORRERY_CONTROL_TOKEN, else the data dir's control.token."""
    if token:
        return FoundToken(token, source or "the token given")
    if os.environ.get(ENV_TOKEN):
        return FoundToken(os.environ[ENV_TOKEN], f"${ENV_TOKEN}")
    from app.config import data_dir as default_data_dir

    folder = default_data_dir(data_dir)
    try:
        return FoundToken(read_token(folder), str(token_path(folder)))
    except TokenError as exc:
        raise AuthRefused(str(exc)) from None


def _rejected_here(exc: ValidationError) -> RequestRejected:
    """A request this client would send malformed, as the server's `malformed` refusal."""
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"]) or None
    message = error["msg"].removeprefix("Value error, ")
    return RequestRejected.of(
        ErrorCode.MALFORMED, f"{field}: {message}" if field else message, field
    )


_END = object()


@dataclass(slots=True, eq=False)
class _Stream:
    """One subscription as the caller sees it: events once each, in order, across
    reconnects. `constellation_id` None is the fleet-wide stream."""

    constellation_id: str | None
    types: list[str] | None
    last_seq: int = 0
    epoch: str = ""
    done: bool = False
    items: asyncio.Queue[Event | OrreryError | object] = field(default_factory=asyncio.Queue)

    def offer(self, message: EventMessage) -> None:
        if self.done or message.seq <= self.last_seq:
            return  # already delivered (a replay after reconnecting)
        self.last_seq = message.seq
        try:
            event = event_from_dict(message.event)
        except ValidationError as exc:
            log.warning("skipped an unreadable event #%d: %s", message.seq,
                        exc.errors(include_url=False)[0]["msg"])  # fmt: skip
            return
        self.items.put_nowait(event)
        if self.constellation_id is not None and isinstance(event, ConstellationFinished):
            self.finish()

    def opened(self, reply: Subscribed) -> None:
        if self.constellation_id is None and self.epoch and reply.epoch != self.epoch:
            self.last_seq = 0  # a new server process numbers its events anew
        self.epoch = reply.epoch

    def fail(self, error: OrreryError) -> None:
        if not self.done:
            self.done = True
            self.items.put_nowait(error)

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.items.put_nowait(_END)


# --------------------------------------------------------------------------- client


class Orrery:
    """An async control-API client; use `async with Orrery(url) as o:`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        data_dir: str | Path | None = None,
        *,
        client_name: str = "orrery-client",
        connect_timeout: float = 10.0,
        reconnect_within: float = 30.0,
        ssl: SSLContext | None = None,
        token_source: str | None = None,
    ) -> None:
        """`ssl` verifies a wss:// server (e.g. `protocol.transport.client_ssl_context`);
        wss:// without it trusts the system's certificate authorities. `token_source` says
        where `token` was read (a file), for the message when the server refuses it."""
        self.url = control_url(url)
        self._ssl = ssl
        self._token = token
        self._token_source = token_source
        self._data_dir = data_dir
        self._found: FoundToken | None = None
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self.reconnect_within = reconnect_within
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[ServerMessage]] = {}
        self._streams: dict[str, _Stream] = {}  # by the id of the subscribe that feeds it
        self._closed = False
        self._lost: OrreryError | None = None

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and authenticate; `ServerUnreachable` or `AuthRefused` otherwise."""
        self._closed = False
        self._found = find_token(self._token, self._data_dir, self._token_source)
        await self._open(self._found)

    async def close(self) -> None:
        self._closed = True
        for task in (self._reconnecting, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        closed = ConnectionLost(self.url, "the client was closed")
        self._fail_pending(closed)
        for stream in self._streams.values():
            stream.fail(closed)
        self._streams.clear()

    async def _open(self, found: FoundToken) -> None:
        try:
            tls: dict[str, Any] = {"ssl": self._ssl} if self._ssl is not None else {}
            ws = await ws_connect(
                self.url,
                open_timeout=self.connect_timeout,
                max_size=MAX_FRAME,
                close_timeout=5,
                **tls,  # wss:// without a context: websockets makes a default one
            )
        except InvalidURI as exc:
            raise BadServerUrl(f"{self.url!r} is not a server URL: {exc}") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ServerUnreachable(self.url, _why_unreachable(exc)) from None
        try:
            request_id = self._next_id()
            auth = AuthRequest(id=request_id, token=found.token, client=self.client_name)
            await ws.send(dump(auth))
            async with asyncio.timeout(self.connect_timeout):
                reply = parse_server_message(await ws.recv())
        except (ConnectionClosed, TimeoutError, ValidationError, ValueError) as exc:
            await ws.close()
            raise ServerUnreachable(self.url, f"no answer to `auth`: {exc}") from None
        if isinstance(reply, ErrorReply):
            await ws.close()
            raise AuthRefused(
                f"the server at {self.url} refused the token from {found.source}: {reply.message}"
            )
        if not isinstance(reply, Authenticated):
            await ws.close()
            raise ServerUnreachable(self.url, f"unexpected answer to `auth`: {reply.type}")
        self._ws = ws
        self._lost = None
        self._reader = asyncio.create_task(self._read(ws), name="orrery-client-reader")
        log.info("connected to %s", self.url)

    def _next_id(self) -> str:
        return f"r{next(self._ids)}"

    # ---------------------------------------------------------------- reading

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                try:
                    message = parse_server_message(frame)
                except (ValidationError, ValueError) as exc:
                    log.warning("ignored an unreadable frame from %s: %s", self.url, exc)
                    continue
                self._route(message)
        except ConnectionClosed:
            pass
        if self._ws is ws:
            self._ws = None
            self._dropped()

    def _route(self, message: ServerMessage) -> None:
        if isinstance(message, EventMessage):
            stream = self._streams.get(message.id)
            if stream is not None:
                stream.offer(message)
                if stream.done:
                    self._streams.pop(message.id, None)
            return
        future = self._pending.pop(message.id or "", None)
        if future is not None:
            if not future.done():
                future.set_result(message)
            return
        stream = self._streams.pop(message.id or "", None)
        if stream is not None and isinstance(message, ErrorReply):
            stream.fail(RequestRejected.from_reply(message))
        elif isinstance(message, ErrorReply):
            log.warning("server error: %s", message.message)

    def _dropped(self) -> None:
        lost = ConnectionLost(self.url, "the connection dropped")
        self._fail_pending(lost)
        if self._closed:
            return
        log.info("connection to %s dropped; reconnecting", self.url)
        self._reconnecting = asyncio.create_task(self._reconnect(), name="orrery-reconnect")

    def _fail_pending(self, error: OrreryError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_within
        delay = 0.05
        last: OrreryError = ConnectionLost(self.url, "the connection dropped")
        assert self._found is not None
        while not self._closed:
            try:
                await self._open(self._found)
                break
            except AuthRefused as exc:
                last = exc
                break
            except ServerUnreachable as exc:
                last = ConnectionLost(self.url, f"gave up reconnecting: {exc.cause}")
            if loop.time() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        if self._ws is None:
            self._lost = last
            log.warning("%s", last)
            for stream in self._streams.values():
                stream.fail(last)
            self._streams.clear()
            return
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:  # after the last event each received: no duplicates
            with contextlib.suppress(OrreryError):
                await self._subscribe(stream)

    # ---------------------------------------------------------------- requests

    async def _call(self, make: Callable[[str], BaseModel], expect: type[M]) -> M:
        try:  # refused here as the server would refuse it: one line, a `RequestRejected`
            request = make(self._next_id())
        except ValidationError as exc:
            raise _rejected_here(exc) from None
        ws = await self._live()
        request_id = str(getattr(request, "id"))  # noqa: B009  (every request has one)
        future: asyncio.Future[ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await ws.send(dump(request))
        except ConnectionClosed:
            self._pending.pop(request_id, None)
            raise ConnectionLost(self.url, "the connection dropped while sending") from None
        reply = await future
        if isinstance(reply, ErrorReply):
            raise RequestRejected.from_reply(reply)
        if not isinstance(reply, expect):
            raise OrreryError(f"expected {expect.__name__} from the server, got {reply.type}")
        return reply

    async def _live(self) -> ClientConnection:
        """The open connection, waiting for a reconnect in progress."""
        if self._closed:
            raise OrreryError("the client is closed; use `async with Orrery(...)`")
        if self._ws is None and (self._reconnecting is None or self._reconnecting.done()):
            await self.connect()  # one more try: the server may be back
        if self._ws is None and self._reconnecting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._reconnecting)
        if self._ws is None:
            raise self._lost or ConnectionLost(self.url, "not connected")
        return self._ws

    async def _subscribe(self, stream: _Stream) -> str:
        """(Re)open `stream` after its last event; the subscribe id (also the stream's key)."""
        ws = await self._live()
        request_id = self._next_id()
        after = stream.last_seq
        request = SubscribeRequest(
            id=request_id,
            constellation=stream.constellation_id,
            after_seq=after,
            types=stream.types,
        )
        future: asyncio.Future[ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._streams[request_id] = stream  # events may follow the reply at once
        try:
            await ws.send(dump(request))
            reply = await future
        except (ConnectionClosed, ConnectionLost):
            self._pending.pop(request_id, None)
            return request_id  # the reconnect subscribes the stream again (or fails it)
        if isinstance(reply, ErrorReply):
            self._streams.pop(request_id, None)
            error = RequestRejected.from_reply(reply)
            stream.fail(error)
            raise error
        if not isinstance(reply, Subscribed):
            raise OrreryError(f"expected `subscribed` from the server, got {reply.type}")
        stream.opened(reply)
        if reply.truncated:
            log.warning("the server no longer keeps every event after #%d", stream.last_seq)
        what = f"c={stream.constellation_id}" if stream.constellation_id else "the fleet"
        log.debug("subscribed to %s after %d", what, after)
        return request_id

    async def _unsubscribe(self, stream: _Stream) -> None:
        keys = [key for key, s in self._streams.items() if s is stream]
        for key in keys:
            del self._streams[key]
        stream.finish()
        if self._ws is None or self._closed:
            return
        with contextlib.suppress(OrreryError, ConnectionClosed):
            await self._ws.send(
                dump(UnsubscribeRequest(id=self._next_id(), constellation=stream.constellation_id))
            )

    # ---------------------------------------------------------------- OrreryApi

    async def submit(
        self,
        plan_or_request: str | Path | None = None,
        request: str | None = None,
        *,
        plan_text: str | None = None,
        source: str = "<submitted plan>",
    ) -> Run:
        """Run a plan or a request in words; `RequestRejected` (code `invalid_plan`,
        `plan_rejected`, `no_planner`, `no_capable_device`) if the server will not.

        `plan_or_request` is a plan file (a `Path`), a plan's YAML text (a mapping with
        `stars`), or else a request in words; `plan_text=` and `request=` say which
        explicitly."""
        given = await read_submission(plan_or_request, request, plan_text, source)
        if given.plan_text is not None:
            problem = plan_text_problem(given.plan_text, given.source)
            if problem is not None:  # as a local run says it, without a trip to the server
                raise RequestRejected.of(ErrorCode.INVALID_PLAN, problem, "plan")
        reply = await self._call(
            lambda i: SubmitRequest(
                id=i, plan=given.plan_text, request=given.request, source=given.source
            ),
            Submitted,
        )
        return self._run_of(reply)

    async def propose(self, request: str) -> Proposal:
        """As `OrreryApi.propose`: the server plans `request` and holds the plan."""
        return await self._call(lambda i: ProposeRequest(id=i, request=request), Proposal)

    async def start_proposal(self, proposal_id: str) -> Run:
        """As `OrreryApi.start_proposal`. After a `ConnectionLost` the start may or may
        not have happened: `constellation(proposal.constellation)` tells."""
        reply = await self._call(lambda i: StartRequest(id=i, proposal=proposal_id), Submitted)
        return self._run_of(reply)

    async def discard_proposal(self, proposal_id: str) -> Discarded:
        return await self._call(lambda i: DiscardRequest(id=i, proposal=proposal_id), Discarded)

    def run(self, constellation_id: str) -> Run:
        """A constellation already on the server (to follow, wait for or cancel)."""
        return Run(self, constellation_id)

    async def retry(self, constellation_id: str, star_id: str | None = None) -> Run:
        reply = await self._call(
            lambda i: RetryRequest(id=i, constellation=constellation_id, star=star_id),
            Submitted,
        )
        return self._run_of(reply)

    async def cancel(self, constellation_id: str, reason: str = "cancelled by a client") -> str:
        """Cancel a constellation; its status afterwards."""
        reply = await self._call(
            lambda i: CancelRequest(id=i, constellation=constellation_id, reason=reason),
            Cancelled,
        )
        return reply.status

    async def cancel_star(
        self, constellation_id: str, star_id: str, reason: str = "cancelled by a client"
    ) -> str:
        reply = await self._call(
            lambda i: CancelStarRequest(
                id=i, constellation=constellation_id, star=star_id, reason=reason
            ),
            StarCancelled,
        )
        return reply.status

    async def pin_star(self, constellation_id: str, star_id: str, device: str) -> int:
        reply = await self._call(
            lambda i: PinRequest(id=i, constellation=constellation_id, star=star_id, device=device),
            Pinned,
        )
        return reply.version

    async def enroll(self, name: str) -> str:
        return (await self._call(lambda i: EnrollRequest(id=i, name=name), Enrolled)).token

    async def approve(self, request: str, approved: bool = True, reason: str = "") -> None:
        """Allow (or refuse) a tool call a device waits on (`approval.needed`'s request)."""
        await self._call(
            lambda i: ApproveRequest(id=i, request=request, approved=approved, reason=reason),
            Decided,
        )

    async def approvals(self) -> list[PendingApprovalInfo]:
        return (await self._call(lambda i: ApprovalsRequest(id=i), ApprovalList)).approvals

    async def devices(self) -> list[DeviceEntry]:
        return (await self._call(lambda i: DevicesRequest(id=i), DeviceList)).devices

    async def history(self, limit: int = 20, status: str | None = None) -> list[HistoryEntry]:
        reply = await self._call(
            lambda i: HistoryRequest(id=i, limit=limit, status=status), HistoryList
        )
        return reply.constellations

    async def constellation(self, constellation_id: str) -> Snapshot:
        return await self._call(
            lambda i: ConstellationRequest(id=i, constellation=constellation_id), Snapshot
        )

    async def memory_search(self, text: str, limit: int = 5) -> list[MemoryHit]:
        """As `OrreryApi.memory_search`: the server's memory."""
        reply = await self._call(
            lambda i: MemorySearchRequest(id=i, text=text, limit=limit), MemoryHits
        )
        return reply.hits

    async def memory_show(self, request_id: str) -> MemoryTree:
        return await self._call(lambda i: MemoryShowRequest(id=i, request=request_id), MemoryTree)

    async def memory_forget(self, request_id: str) -> MemoryForgotten:
        return await self._call(
            lambda i: MemoryForgetRequest(id=i, request=request_id), MemoryForgotten
        )

    async def events(
        self,
        constellation_id: str | None = None,
        *,
        after_seq: int = 0,
        types: Collection[str] | None = None,
    ) -> AsyncGenerator[Event, None]:
        """As `OrreryApi.events`; survives reconnects (see the module docstring)."""
        stream = _Stream(constellation_id, sorted(types) if types is not None else None)
        stream.last_seq = after_seq
        await self._subscribe(stream)
        try:
            while True:
                item = await stream.items.get()
                if item is _END:
                    return
                if isinstance(item, OrreryError):
                    raise item
                assert isinstance(item, Event)
                yield item
        finally:
            await self._unsubscribe(stream)

    async def send_raw(self, text: str, reply_id: str | None = None) -> ServerMessage:
        """Send one frame as it is and return the reply with `reply_id` (None: the reply
        to a request whose id could not be read). For probing the server."""
        ws = await self._live()
        future: asyncio.Future[ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[reply_id or ""] = future
        await ws.send(text)
        return await future

    def _run_of(self, reply: Submitted) -> Run:
        return Run(self, reply.constellation, reply.name, reply.stars, rationale=reply.rationale)


def _why_unreachable(exc: BaseException) -> str:
    """The reason a connection failed, with what to do where the fix is known."""
    text = f"{type(exc).__name__}: {exc}"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"{text}; the server's certificate is not trusted: pass its CA certificate "
            "with --tls-ca PEM (or `ssl=client_ssl_context(Path(PEM))` from Python)"
        )
    return text


# --------------------------------------------------------------------------- sync wrapper


class SyncOrrery:
    """`Orrery` for scripts without asyncio: the client runs on its own thread's loop.

    with SyncOrrery("ws://127.0.0.1:8765") as o:
        run = o.submit(plan_text=text)
        for event in run.events():
            ...
        print(run.wait().status)
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        data_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="orrery-sync-client", daemon=True
        )
        self._thread.start()
        self._client = self._do(self._make(url, token, data_dir, options))
        try:
            self._do(self._client.connect())
        except BaseException:
            self._stop()
            raise

    @staticmethod
    async def _make(
        url: str, token: str | None, data_dir: str | Path | None, options: dict[str, Any]
    ) -> Orrery:
        return Orrery(url, token, data_dir, **options)

    def _do(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._do(self._client.close(), timeout=15)
        self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)
        self._loop.close()

    def submit(
        self,
        plan_or_request: str | Path | None = None,
        request: str | None = None,
        **options: Any,
    ) -> SyncRun:
        """As `Orrery.submit`."""
        return SyncRun(self, self._do(self._client.submit(plan_or_request, request, **options)))

    def propose(self, request: str) -> Proposal:
        return self._do(self._client.propose(request))

    def start_proposal(self, proposal_id: str) -> SyncRun:
        return SyncRun(self, self._do(self._client.start_proposal(proposal_id)))

    def discard_proposal(self, proposal_id: str) -> Discarded:
        return self._do(self._client.discard_proposal(proposal_id))

    def run(self, constellation_id: str) -> SyncRun:
        return SyncRun(self, self._client.run(constellation_id))

    def retry(self, constellation_id: str, star_id: str | None = None) -> SyncRun:
        return SyncRun(self, self._do(self._client.retry(constellation_id, star_id)))

    def cancel(self, constellation_id: str, reason: str = "cancelled by a client") -> str:
        return self._do(self._client.cancel(constellation_id, reason))

    def cancel_star(
        self, constellation_id: str, star_id: str, reason: str = "cancelled by a client"
    ) -> str:
        return self._do(self._client.cancel_star(constellation_id, star_id, reason))

    def pin_star(self, constellation_id: str, star_id: str, device: str) -> int:
        return self._do(self._client.pin_star(constellation_id, star_id, device))

    def enroll(self, name: str) -> str:
        return self._do(self._client.enroll(name))

    def approve(self, request: str, approved: bool = True, reason: str = "") -> None:
        self._do(self._client.approve(request, approved, reason))

    def approvals(self) -> list[PendingApprovalInfo]:
        return self._do(self._client.approvals())

    def devices(self) -> list[DeviceEntry]:
        return self._do(self._client.devices())

    def history(self, limit: int = 20, status: str | None = None) -> list[HistoryEntry]:
        return self._do(self._client.history(limit, status))

    def constellation(self, constellation_id: str) -> Snapshot:
        return self._do(self._client.constellation(constellation_id))

    def memory_search(self, text: str, limit: int = 5) -> list[MemoryHit]:
        return self._do(self._client.memory_search(text, limit))

    def memory_show(self, request_id: str) -> MemoryTree:
        return self._do(self._client.memory_show(request_id))

    def memory_forget(self, request_id: str) -> MemoryForgotten:
        return self._do(self._client.memory_forget(request_id))


class SyncRun:
    """`Run` for `SyncOrrery`: iterate `events()`, call `wait()`."""

    def __init__(self, owner: SyncOrrery, run: Run) -> None:
        self._owner = owner
        self._run = run
        self.id = run.id
        self.name = run.name
        self.stars = run.stars

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Like `Run.events`; `timeout` bounds the wait for each event (TimeoutError)."""
        iterator = self._run.events()
        try:
            while True:
                try:
                    yield self._owner._do(_next(iterator), timeout)
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                self._owner._do(iterator.aclose(), timeout=5)

    def wait(self, timeout: float | None = None) -> RunResult:
        return self._owner._do(self._run.wait(), timeout)

    def cancel(self, reason: str = "cancelled by a client") -> str:
        return self._owner._do(self._run.cancel(reason))


async def _next(iterator: AsyncIterator[Event]) -> Event:
    return await iterator.__anext__()


__all__ = [
    "AuthRefused",
    "BadServerUrl",
    "ConnectionLost",
    "FoundToken",
    "Orrery",
    "OrreryError",
    "RequestRejected",
    "Run",
    "RunInterrupted",
    "RunResult",
    "ServerUnreachable",
    "SyncOrrery",
    "SyncRun",
    "control_url",
    "find_token",
]
