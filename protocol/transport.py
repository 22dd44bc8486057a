"""The asyncio WebSocket transport for AIP: serve, connect, and move frames.

It owns sockets, TLS and the URL path, and nothing else: every protocol decision lives in
the sans-I/O sessions of `protocol.session`. `SessionDriver` pumps frames between one
session and one `Connection`, in order, with a single writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from ssl import Purpose, SSLContext, create_default_context
from types import TracebackType
from typing import Final, Protocol, Self
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, State

from protocol.messages import DEFAULT_MAX_FRAME
from protocol.session import SessionEvent

log = logging.getLogger("orrery.aip.transport")

AIP_PATH: Final = "/aip/v1"

OVERSIZE_FACTOR: Final = 4
"""websockets itself drops frames above `OVERSIZE_FACTOR * max_frame` (close code 1009).

Frames between `max_frame` and that bound reach the session, which answers them with an
`error` of code `too_large` and keeps the connection, as the protocol says.
"""

CLOSE_TIMEOUT: Final = 10.0  # seconds the closing handshake may take before the socket is cut

READ_SIZE: Final = 64 * 1024
"""Bytes asked of the socket (or of TLS) per read.

asyncio asks 256 KiB per read, and CPython allocates a 256 KiB buffer for each and then
shrinks it to what arrived. That is above glibc's default mmap threshold (128 KiB), so in
a process whose allocator has not raised the threshold, every received frame costs an
`mmap`, an `mremap` and a `munmap` with their page faults: about 20 us a frame, a third
of an AIP round trip (`bench/bench_protocol.py`). 64 KiB reads stay on the heap; a 1 MiB
frame takes 16 reads instead of 4.
"""
COMPRESSION: Final = None
"""AIP connections negotiate no permessage-deflate, on either side.

Compressing costs CPU on every frame (about 45 us of a 1 KiB task round trip on
127.0.0.1, `bench/bench_protocol.py`) and some 64 KiB of zlib state per connection and
direction, for frames that are mostly small or, for artifacts, often compressed already.
It would also put secrets and peer-influenced text through one compressor on `wss://`,
which is what compression side channels (CRIME, BREACH) exploit. A peer that offers the
extension is answered without it.
"""
_MAX_CLOSE_REASON = 123  # bytes (RFC 6455)
_FRAME_HEADER = 16  # bytes a frame may add to its payload (a WebSocket header is at most 14)


# ------------------------------------------------------------------ errors


class TransportError(Exception):
    """Base of the transport's errors: the socket could not be opened or is gone."""


class TransportClosed(TransportError):
    """The connection is closed; `code` and `reason` come from the close frame, if any."""

    def __init__(self, code: int | None, reason: str) -> None:
        detail = f"code {code}" if code is not None else "no close frame"
        super().__init__(f"connection closed ({detail}){': ' + reason if reason else ''}")
        self.code = code
        self.reason = reason

    @classmethod
    def from_websockets(cls, exc: ConnectionClosed) -> TransportClosed:
        frame = exc.rcvd if exc.rcvd is not None else exc.sent
        if frame is None:
            return cls(None, "")
        return cls(int(frame.code), frame.reason)


class ConnectFailed(TransportError):
    """`connect_aip` could not open a connection to `url`; the cause says why.

    Usually worth retrying later (the orchestrator is down or unreachable); check the URL,
    the port and the TLS settings if it persists.
    """

    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(f"cannot connect to {url}: {type(cause).__name__}: {cause}")
        self.url = url
        self.cause = cause


# ------------------------------------------------------------------ connection


FrameSink = Callable[[str | bytes, bool], None]
"""Takes one received frame (text as str, binary as bytes) and whether it is binary."""


class _SinkingConnection:
    """Mixed into websockets' connections: complete frames go straight to `frame_sink`.

    websockets hands every received frame to a queue that `recv()` reads from another
    task, so each frame costs a task switch and an extra turn of the event loop before
    anyone looks at it. With a sink set, a complete text or binary frame is handed to it
    synchronously, from the callback that read it off the socket, as long as no earlier
    frame waits in that queue; everything else (frames that arrived before the sink was
    set and those behind them, fragmented messages, invalid UTF-8) takes the queue, so
    `recv()` still returns them, in order, and websockets still closes with 1007 for bad
    text.
    """

    frame_sink: FrameSink | None = None

    def process_event(self, event: Event) -> None:
        sink = self.frame_sink
        if (
            sink is not None
            and isinstance(event, Frame)
            and event.fin
            and not len(self.recv_messages.frames)  # type: ignore[attr-defined]
        ):
            if event.opcode is Opcode.TEXT:
                try:
                    text = str(event.data, "utf-8")
                except UnicodeDecodeError:
                    pass  # the queue's reader fails the connection with 1007
                else:
                    sink(text, False)
                    return
            elif event.opcode is Opcode.BINARY:
                sink(bytes(event.data), True)
                return
        super().process_event(event)  # type: ignore[misc]


class _AipServerConnection(_SinkingConnection, ServerConnection):
    pass


class _AipClientConnection(_SinkingConnection, ClientConnection):
    pass


class Connection:
    """One open AIP WebSocket: frames in, frames out. Made by `serve_aip` or `connect_aip`."""

    def __init__(self, websocket: ServerConnection | ClientConnection) -> None:
        self._ws = websocket
        _read_in_smaller_chunks(websocket.transport)
        _, self._high_water = websocket.transport.get_write_buffer_limits()  # set by websockets
        address = websocket.remote_address
        if isinstance(address, tuple) and len(address) >= 2:
            host = f"[{address[0]}]" if ":" in str(address[0]) else str(address[0])
            self.remote = f"{host}:{address[1]}"
        else:
            self.remote = str(address)

    async def recv(self) -> tuple[str | bytes, bool]:
        """The next frame and whether it is binary; raises `TransportClosed` once closed."""
        try:
            frame = await self._ws.recv()
        except ConnectionClosed as exc:
            raise TransportClosed.from_websockets(exc) from None
        return frame, isinstance(frame, bytes)

    async def send_all(self, frames: list[str | bytes]) -> None:
        """Send `frames` in order (str as text, bytes as binary); raises `TransportClosed`."""
        try:
            for frame in frames:
                await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise TransportClosed.from_websockets(exc) from None

    def deliver_to(self, sink: FrameSink | None) -> None:
        """Hand received frames to `sink` as they arrive instead of queueing them for
        `recv()`; `None` goes back to queueing.

        `sink` runs inside the event loop's read callback and must not block. Frames that
        arrived before, and the odd frame the fast path cannot take (see
        `_SinkingConnection`), still wait for `recv()`, so whoever sets a sink keeps
        calling `recv()` as well, and handles what it returns before anything newer can
        reach the sink.
        """
        if not isinstance(self._ws, _SinkingConnection):
            raise TypeError(f"{self._ws!r} was not opened by serve_aip or connect_aip")
        if not hasattr(self._ws.recv_messages, "frames"):  # websockets changed its queue:
            return  # every frame keeps going through recv(), which is slower but right
        self._ws.frame_sink = sink

    def send_now(self, frame: str | bytes) -> bool:
        """Hand `frame` to the socket now if it takes it without waiting; whether it did.

        It does while the connection is open and the frame fits in its write buffer below
        the high-water mark, where `send_all([frame])` would not pause for the peer to
        read; it then has the same effect, without a coroutine and a turn of the event
        loop. Otherwise nothing is sent.
        """
        ws = self._ws
        protocol, transport = ws.protocol, ws.transport
        data = frame.encode() if isinstance(frame, str) else frame
        if (
            protocol.state is not State.OPEN
            or transport.is_closing()
            or transport.get_write_buffer_size() + len(data) + _FRAME_HEADER > self._high_water
        ):
            return False
        if isinstance(frame, str):
            protocol.send_text(data)
        else:
            protocol.send_binary(data)
        for chunk in protocol.data_to_send():
            transport.write(chunk)
        return True

    async def close(self, reason: str = "") -> None:
        """Close normally (code 1000) and wait for the socket to end; never raises."""
        encoded = reason.encode()[:_MAX_CLOSE_REASON]
        await self._ws.close(1000, encoded.decode(errors="ignore"))

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closed, else None."""
        return self._ws.close_code

    def __repr__(self) -> str:
        return f"<Connection {self.remote}>"


def _read_in_smaller_chunks(transport: object) -> None:
    """Have asyncio read `READ_SIZE` bytes at a time (see `READ_SIZE` for why).

    `max_size` is a private attribute of asyncio's selector socket transport (plain
    connections) and of its TLS protocol (`wss://`); where neither exists (another event
    loop), nothing changes.
    """
    for reader in (transport, getattr(transport, "_ssl_protocol", None)):
        if isinstance(getattr(reader, "max_size", None), int):
            setattr(reader, "max_size", READ_SIZE)  # noqa: B010 (not in typeshed)


# ------------------------------------------------------------------ server


Handler = Callable[[Connection], Awaitable[None]]


class AipServer:
    """A listening AIP endpoint (from `serve_aip`). Close it, or use `async with`."""

    def __init__(self, server: WsServer) -> None:
        self._server = server
        self.port: int = server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop listening and close every connection (code 1001, going away)."""
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


def _known_paths(paths: frozenset[str]) -> Callable[[ServerConnection, Request], Response | None]:
    """A `process_request` hook that answers HTTP 404 for every path but `paths`."""
    listing = ", ".join(sorted(paths))

    def check(connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path not in paths:
            log.info("refused a WebSocket request for %r (served: %s)", path, listing)
            return connection.respond(
                HTTPStatus.NOT_FOUND,
                f"no endpoint at {path}; devices connect to {AIP_PATH} (served: {listing})\n",
            )
        return None

    return check


async def serve_aip(
    handler: Handler,
    host: str,
    port: int,
    *,
    ssl: SSLContext | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    extra: Mapping[str, Handler] | None = None,
) -> AipServer:
    """Listen for devices at `ws(s)://host:port/aip/v1`; port 0 picks a free one (`.port`).

    `handler` runs once per AIP connection; the connection is closed when it returns.
    `extra` maps further paths (such as `/control/v1`) to their own handlers, served on the
    same port with the same frame limit; every other path gets HTTP 404. Pass the same
    `max_frame` as the sessions use.
    """
    if extra and AIP_PATH in extra:
        raise ValueError(f"{AIP_PATH} is AIP's own path; serve other endpoints elsewhere")
    handlers: dict[str, Handler] = {**(extra or {}), AIP_PATH: handler}

    async def run_handler(websocket: ServerConnection) -> None:
        path = urlsplit(websocket.request.path).path if websocket.request else AIP_PATH
        await handlers[path](Connection(websocket))

    server = await ws_serve(
        run_handler,
        host,
        port,
        ssl=ssl,
        process_request=_known_paths(frozenset(handlers)),
        max_size=OVERSIZE_FACTOR * max_frame,
        close_timeout=CLOSE_TIMEOUT,
        compression=COMPRESSION,
        create_connection=_AipServerConnection,
    )
    return AipServer(server)


# ------------------------------------------------------------------ client


def aip_url(url: str) -> str:
    """`url` as a full AIP endpoint: ws(s)://host[:port][/prefix]/aip/v1.

    http(s):// is taken as ws(s)://; a missing AIP path is appended. Raises `ValueError`
    naming the problem for anything that is not such a URL.
    """
    parts = urlsplit(url.strip())
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(
            f"{url!r} is not an orchestrator URL; use ws://HOST:PORT or wss://HOST:PORT"
        )
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host; use ws://HOST:PORT or wss://HOST:PORT")
    path = parts.path
    if not path.endswith(AIP_PATH):
        path = path.rstrip("/") + AIP_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


async def connect_aip(
    url: str,
    *,
    ssl: SSLContext | None = None,
    open_timeout: float = 10,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> Connection:
    """Open a connection to an orchestrator (`url` as `aip_url` accepts it).

    Raises `ValueError` for a malformed URL (retrying will not help) and `ConnectFailed`
    when the orchestrator cannot be reached, refuses the upgrade or fails TLS.
    """
    target = aip_url(url)
    if ssl is not None and target.startswith("ws://"):
        raise ValueError(f"a TLS context was given for {target}; use a wss:// URL")
    try:
        websocket = await ws_connect(
            target,
            ssl=ssl,
            open_timeout=open_timeout,
            max_size=OVERSIZE_FACTOR * max_frame,
            close_timeout=CLOSE_TIMEOUT,
            compression=COMPRESSION,
            create_connection=_AipClientConnection,
        )
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise ConnectFailed(target, exc) from exc
    return Connection(websocket)


# ------------------------------------------------------------------ TLS


def server_ssl_context(cert: Path, key: Path) -> SSLContext:
    """A TLS context for `serve_aip` from a PEM certificate (chain) and its private key."""
    context = create_default_context(Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile=cert, keyfile=key)
    return context


def client_ssl_context(ca: Path | None = None) -> SSLContext:
    """A TLS context for `connect_aip` that verifies the orchestrator's certificate.

    With `ca`, trust only that PEM bundle (a self-signed orchestrator's certificate);
    without, trust the system's certificate authorities.
    """
    return create_default_context(Purpose.SERVER_AUTH, cafile=ca)


# ------------------------------------------------------------------ driving a session


class FrameSession(Protocol):
    """What `SessionDriver` needs of a sans-I/O session (`ServerSession`, `DeviceSession`)."""

    @property
    def closed(self) -> bool: ...

    @property
    def close_reason(self) -> str | None: ...

    def receive_frame(self, frame: str | bytes, *, binary: bool = False) -> None: ...

    def data_to_send(self) -> list[str | bytes]: ...

    def events_received(self) -> list[SessionEvent]: ...

    def connection_lost(self, reason: str = ...) -> None: ...


EventHandler = Callable[[list[SessionEvent]], None]


class SessionDriver:
    """Moves frames between one session and one connection until either ends.

    `run()` feeds received frames into the session and hands its events to `on_events`.
    Frames are handled where they are read: the connection delivers each complete frame
    synchronously from its read callback (`Connection.deliver_to`), so a reply goes out
    before the event loop turns again. Frames go out in order, one sender at a time:
    `flush()` hands them to the socket at once while it takes them without waiting, and
    leaves the rest to a writer task, which keeps the order, lets reading go on while the
    socket is full, and closes the socket once the session has closed. Whoever calls a
    session method outside `on_events` (a tool's result, a heartbeat timer) must call
    `flush()` afterwards. `on_events` runs synchronously and must not block; it may call
    session methods, and what they queue is sent without another `flush()`.
    """

    def __init__(
        self, session: FrameSession, connection: Connection, on_events: EventHandler
    ) -> None:
        self.session = session
        self.connection = connection
        self._on_events = on_events
        self._pending: deque[str | bytes] = deque()  # frames not yet handed to the socket
        self._wake = asyncio.Event()  # the writer has something to do
        self._idle = asyncio.Event()  # nothing pending and nobody sending
        self._idle.set()
        self._sending = False  # the writer is handing frames to the socket: only it may
        self._handing = False  # flush() is handing frames to the socket
        self._flushing = False
        self._closing = False
        self._closed = asyncio.Event()  # the writer stopped: nothing more goes out
        self._reader: asyncio.Task[None] | None = None  # the task in run()
        self._failure: BaseException | None = None  # raised by on_events in the callback

    def flush(self) -> None:
        """Hand the session's events to `on_events` and send the frames it queued."""
        if self._flushing:  # called from within on_events: the outer loop picks it up
            return
        self._flushing = True
        try:
            while events := self.session.events_received():
                self._on_events(events)
            # Taken after the events were handled, so that what the handlers queued travels
            # in one batch frame with what the session queued itself (an accept and a result).
            self._pending.extend(self.session.data_to_send())
        finally:
            self._flushing = False
        if self.session.closed:
            self._closing = True
        self._send_ready()

    async def run(self) -> None:
        """Drive until the session has closed and the socket is gone; then return.

        A lost socket is reported to the session (`connection_lost`), whose `SessionClosed`
        event reaches `on_events`. Exceptions from `on_events` propagate.
        """
        self._reader = asyncio.current_task()
        writer = asyncio.create_task(self._write(), name=f"aip-writer {self.connection.remote}")
        try:
            self.flush()
            self.connection.deliver_to(self._receive_delivered)
            while True:  # frames the connection could not deliver, and its closure
                try:
                    frame, binary = await self.connection.recv()
                except TransportClosed as closed:
                    self.session.connection_lost(str(closed))
                    self.flush()
                    return
                except asyncio.CancelledError:
                    self._raise_failure()
                    raise
                self._receive(frame, binary)
        finally:
            self.connection.deliver_to(None)
            self._reader = None
            self._hand_over()
            if not writer.done():
                if self._closing:  # let the last frames (an error, a bye) go out first
                    await asyncio.wait({writer}, timeout=CLOSE_TIMEOUT)
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self.connection.close(self.session.close_reason or "")

    async def drained(self) -> None:
        """Wait until every frame queued so far was handed to the socket (or it closed)."""
        if self._closing or self._closed.is_set() or self._idle.is_set():
            return
        idle = asyncio.ensure_future(self._idle.wait())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({idle, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            closed.cancel()

    def _receive(self, frame: str | bytes, binary: bool) -> None:
        self.session.receive_frame(frame, binary=binary)
        self.flush()

    def _receive_delivered(self, frame: str | bytes, binary: bool) -> None:
        """The connection's sink: runs in its read callback, where nothing may escape, so
        an exception from `on_events` stops delivery and is raised by `run()` instead."""
        try:
            self._receive(frame, binary)
        except BaseException as exc:
            self._failure = exc
            self.connection.deliver_to(None)
            if self._reader is not None:
                self._reader.cancel()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            assert self._reader is not None
            self._reader.uncancel()
            raise failure

    def _send_ready(self) -> None:
        """Hand pending frames to the socket now, while it takes them without waiting and
        the writer is not busy; leave the rest to the writer."""
        if self._handing:  # a flush from within send_now: the loop below picks it up
            return
        if self._pending:
            self._idle.clear()
            if not self._sending and not self._closed.is_set():
                self._handing = True
                try:  # send_now refuses a closed connection; recv() reports the closure
                    while self._pending and self.connection.send_now(self._pending[0]):
                        self._pending.popleft()
                finally:
                    self._handing = False
        self._hand_over()

    def _hand_over(self) -> None:
        """Wake the writer for what is left, or note that nothing is."""
        if self._pending or self._closing:
            self._wake.set()
        elif not self._sending:
            self._idle.set()

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._sending = True
                try:
                    while self._pending:
                        await self.connection.send_all([self._pending.popleft()])
                except TransportClosed:
                    return  # the reader sees the same closure and ends the run
                finally:
                    self._sending = False
                if self._closing and not self._pending:
                    await self.connection.close(self.session.close_reason or "")
                    return
                self._hand_over()
        finally:
            self._pending.clear()
            self._closed.set()
            self._idle.set()


async def drive(session: FrameSession, connection: Connection, on_events: EventHandler) -> None:
    """`SessionDriver(session, connection, on_events).run()`, for callers with no flush."""
    await SessionDriver(session, connection, on_events).run()


__all__ = [
    "AIP_PATH",
    "CLOSE_TIMEOUT",
    "COMPRESSION",
    "OVERSIZE_FACTOR",
    "READ_SIZE",
    "AipServer",
    "ConnectFailed",
    "Connection",
    "EventHandler",
    "FrameSession",
    "FrameSink",
    "Handler",
    "SessionDriver",
    "TransportClosed",
    "TransportError",
    "aip_url",
    "client_ssl_context",
    "connect_aip",
    "drive",
    "server_ssl_context",
]
