"""The asyncio WebSocket transport for AIP: serve, connect, and move frames.

It owns sockets, TLS and the URL path, and nothing else: every protocol decision lives in
the sans-I/O sessions of `protocol.session`. `SessionDriver` pumps frames between one
session and one `Connection`, in order, with a single writer.
"""

from __future__ import annotations

import asyncio
import logging
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
from websockets.http11 import Request, Response

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
_MAX_CLOSE_REASON = 123  # bytes (RFC 6455)


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


class Connection:
    """One open AIP WebSocket: frames in, frames out. Made by `serve_aip` or `connect_aip`."""

    def __init__(self, websocket: ServerConnection | ClientConnection) -> None:
        self._ws = websocket
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


class _CloseMarker:
    pass


_CLOSE = _CloseMarker()


class SessionDriver:
    """Moves frames between one session and one connection until either ends.

    `run()` reads frames into the session and hands its events to `on_events`; one writer
    task sends the session's frames in order and closes the socket once the session has
    closed. Whoever calls a session method outside `on_events` (a tool's result, a
    heartbeat timer) must call `flush()` afterwards. `on_events` runs synchronously; it
    may call session methods, and what they queue is sent without another `flush()`.
    """

    def __init__(
        self, session: FrameSession, connection: Connection, on_events: EventHandler
    ) -> None:
        self.session = session
        self.connection = connection
        self._on_events = on_events
        self._outgoing: asyncio.Queue[str | bytes | _CloseMarker] = asyncio.Queue()
        self._flushing = False
        self._closing = False
        self._closed = asyncio.Event()  # the writer stopped: nothing more goes out

    def flush(self) -> None:
        """Queue the session's frames for sending and hand its events to `on_events`."""
        if self._flushing:  # called from within on_events: the outer loop picks it up
            return
        self._flushing = True
        try:
            while True:
                for frame in self.session.data_to_send():
                    self._outgoing.put_nowait(frame)
                events = self.session.events_received()
                if not events:
                    break
                self._on_events(events)
        finally:
            self._flushing = False
        if self.session.closed and not self._closing:
            self._closing = True
            self._outgoing.put_nowait(_CLOSE)

    async def run(self) -> None:
        """Drive until the session has closed and the socket is gone; then return.

        A lost socket is reported to the session (`connection_lost`), whose `SessionClosed`
        event reaches `on_events`. Exceptions from `on_events` propagate.
        """
        writer = asyncio.create_task(self._write(), name=f"aip-writer {self.connection.remote}")
        try:
            self.flush()
            while True:
                try:
                    frame, binary = await self.connection.recv()
                except TransportClosed as closed:
                    self.session.connection_lost(str(closed))
                    self.flush()
                    return
                self.session.receive_frame(frame, binary=binary)
                self.flush()
        finally:
            if not writer.done():
                if self._closing:  # let the last frames (an error, a bye) go out first
                    await asyncio.wait({writer}, timeout=CLOSE_TIMEOUT)
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await self.connection.close(self.session.close_reason or "")

    async def drained(self) -> None:
        """Wait until every frame queued so far was handed to the socket (or it closed)."""
        if self._closing or self._closed.is_set() or self._outgoing.empty():
            return
        waiter = asyncio.ensure_future(self._outgoing.join())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closed.cancel()

    async def _write(self) -> None:
        try:
            while True:
                item = await self._outgoing.get()
                try:
                    if isinstance(item, _CloseMarker):
                        await self.connection.close(self.session.close_reason or "")
                        return
                    try:
                        await self.connection.send_all([item])
                    except TransportClosed:
                        return  # the reader sees the same closure and ends the run
                finally:
                    self._outgoing.task_done()
        finally:
            self._closed.set()


async def drive(session: FrameSession, connection: Connection, on_events: EventHandler) -> None:
    """`SessionDriver(session, connection, on_events).run()`, for callers with no flush."""
    await SessionDriver(session, connection, on_events).run()


__all__ = [
    "AIP_PATH",
    "CLOSE_TIMEOUT",
    "OVERSIZE_FACTOR",
    "AipServer",
    "ConnectFailed",
    "Connection",
    "EventHandler",
    "FrameSession",
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
