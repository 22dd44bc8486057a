"""The WebSocket transport on real loopback sockets: frames, paths, size limits, TLS, driving."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, cast

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol.messages import Error, ErrorCode, parse_frame, parse_message
from protocol.session import (
    AssignmentReceived,
    DeviceAuthenticated,
    DeviceSession,
    ResultReceived,
    ServerConfig,
    ServerSession,
    SessionClosed,
    SessionEvent,
    Welcomed,
)
from protocol.tasks import TaskResult
from protocol.transport import (
    AIP_PATH,
    OVERSIZE_FACTOR,
    READ_SIZE,
    AipServer,
    ConnectFailed,
    Connection,
    FrameSink,
    SessionDriver,
    TransportClosed,
    aip_url,
    client_ssl_context,
    connect_aip,
    drive,
    serve_aip,
    server_ssl_context,
)

if TYPE_CHECKING:
    from tests.protocol.conftest import Kit

WAIT = 15.0  # bound for anything awaited; nothing here waits on the clock for correctness
SMALL_FRAME = 2048  # a max_frame small enough to cross cheaply in tests


class Handled:
    """Runs a test's per-connection handler and keeps its outcome for the test to await."""

    def __init__(self, handler: Callable[[Connection], Awaitable[Any]]) -> None:
        self._handler = handler
        self.outcomes: asyncio.Queue[asyncio.Future[Any]] = asyncio.Queue()

    async def __call__(self, connection: Connection) -> None:
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.outcomes.put_nowait(outcome)
        try:
            outcome.set_result(await self._handler(connection))
        except BaseException as exc:
            outcome.set_exception(exc)
            raise

    async def next(self) -> Any:
        """What the next connection's handler returned (or raised)."""
        async with asyncio.timeout(WAIT):
            outcome = await self.outcomes.get()
            return await outcome


@asynccontextmanager
async def serving(
    handler: Callable[[Connection], Awaitable[Any]],
    *,
    ssl: SSLContext | None = None,
    max_frame: int = SMALL_FRAME,
) -> AsyncIterator[tuple[AipServer, Handled]]:
    handled = Handled(handler)
    server = await serve_aip(handled, "127.0.0.1", 0, ssl=ssl, max_frame=max_frame)
    async with server:
        yield server, handled


async def echo(connection: Connection) -> list[tuple[str | bytes, bool]]:
    """Send every frame back as it came (text as text, binary as binary) until closed."""
    seen: list[tuple[str | bytes, bool]] = []
    while True:
        try:
            frame, binary = await connection.recv()
        except TransportClosed:
            return seen
        seen.append((frame, binary))
        await connection.send_all([frame])


async def bounded(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, WAIT)


# ------------------------------------------------------------------ frames


async def test_text_and_binary_frames_cross_both_ways_in_order() -> None:
    async with serving(echo) as (server, handled):
        assert server.port > 0
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        frames: list[str | bytes] = ["hello", b"\x00\x01\xff", "é ünïcode", b""]
        await connection.send_all(frames)
        received = [await bounded(connection.recv()) for _ in frames]
        await connection.close("done")
        assert received == [
            ("hello", False),
            (b"\x00\x01\xff", True),
            ("é ünïcode", False),
            (b"", True),
        ]
        assert await handled.next() == received


async def test_connection_names_its_peer_and_reports_the_close() -> None:
    async def report(connection: Connection) -> tuple[str, TransportClosed]:
        with pytest.raises(TransportClosed) as closed:
            await connection.recv()
        return connection.remote, closed.value

    async with serving(report) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}{AIP_PATH}")
        await connection.close("finished here")
        remote, closed = await handled.next()
        assert remote.startswith("127.0.0.1:")
        assert (closed.code, closed.reason) == (1000, "finished here")
        assert connection.close_code == 1000
        with pytest.raises(TransportClosed):
            await connection.send_all(["too late"])


async def test_sending_after_the_peer_closed_raises_transport_closed() -> None:
    async def close_at_once(connection: Connection) -> None:
        await connection.close("go away")

    async with serving(close_at_once) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        await handled.next()
        with pytest.raises(TransportClosed) as closed:
            await bounded(connection.recv())
        assert closed.value.reason == "go away"
        with pytest.raises(TransportClosed):
            await connection.send_all(["anyone?"])


# ------------------------------------------------------------------ paths and URLs


async def test_other_paths_are_refused_with_404() -> None:
    async with serving(echo) as (server, _):
        with pytest.raises(ConnectFailed) as failed:
            await connect_aip(f"ws://127.0.0.1:{server.port}/something/else/v2/")
        assert failed.value.url == f"ws://127.0.0.1:{server.port}/something/else/v2/aip/v1"
        assert isinstance(failed.value.cause, InvalidStatus)
        assert failed.value.cause.response.status_code == 404
        assert AIP_PATH in failed.value.cause.response.body.decode()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://host:8765", "ws://host:8765/aip/v1"),
        ("ws://host:8765/", "ws://host:8765/aip/v1"),
        ("ws://host:8765/aip/v1", "ws://host:8765/aip/v1"),
        ("wss://host/orrery/", "wss://host/orrery/aip/v1"),
        ("http://host:80", "ws://host:80/aip/v1"),
        ("https://host", "wss://host/aip/v1"),
        ("  ws://[::1]:9/  ", "ws://[::1]:9/aip/v1"),
    ],
)
def test_aip_url_completes_the_endpoint(given: str, expected: str) -> None:
    assert aip_url(given) == expected


@pytest.mark.parametrize("bad", ["host:8765", "ftp://host", "ws://", "ws:///aip/v1", ""])
def test_aip_url_rejects_what_is_not_an_orchestrator_url(bad: str) -> None:
    with pytest.raises(ValueError, match="ws://HOST:PORT"):
        aip_url(bad)


async def test_nothing_listening_is_a_connect_failure() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectFailed) as failed:
        await connect_aip(f"ws://127.0.0.1:{port}", open_timeout=WAIT)
    assert isinstance(failed.value.cause, OSError)


async def test_a_tls_context_with_a_plain_url_is_refused() -> None:
    with pytest.raises(ValueError, match="wss://"):
        await connect_aip("ws://127.0.0.1:1", ssl=client_ssl_context())


# ------------------------------------------------------------------ frame sizes


async def test_a_frame_over_max_frame_still_reaches_the_handler() -> None:
    async with serving(echo) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        big = "x" * (SMALL_FRAME * 2)
        await connection.send_all([big])
        assert await bounded(connection.recv()) == (big, False)
        await connection.close()
        assert await handled.next() == [(big, False)]


async def test_the_session_answers_an_oversized_frame_with_too_large_and_stays_open() -> None:
    async def serve_session(connection: Connection) -> None:
        session = ServerSession(keys=lambda device: None, now=lambda: 0.0, config=config)
        await drive(session, connection, lambda events: None)

    config = ServerConfig(max_frame=SMALL_FRAME)
    async with serving(serve_session, max_frame=SMALL_FRAME) as (server, _):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        await connection.send_all(["x" * (SMALL_FRAME + 1)])
        reply, binary = await bounded(connection.recv())
        message = parse_message(reply)
        assert not binary
        assert isinstance(message, Error)
        assert message.body.code is ErrorCode.TOO_LARGE
        assert str(SMALL_FRAME) in message.body.message
        await connection.send_all(["not json"])  # the connection is still there to refuse this
        reply, _ = await bounded(connection.recv())
        message = parse_message(reply)
        assert isinstance(message, Error)
        assert message.body.code is ErrorCode.MALFORMED
        await connection.close()


async def test_a_frame_far_over_max_frame_closes_the_socket() -> None:
    async with serving(echo) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        await connection.send_all([b"\x00" * (OVERSIZE_FACTOR * SMALL_FRAME + 1)])
        with pytest.raises(TransportClosed) as closed:
            await bounded(connection.recv())
        assert closed.value.code == 1009  # message too big
        assert await handled.next() == []


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key (PEM files)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        from cryptography import x509  # noqa: F401  (only probing for the package)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("needs the `cryptography` package or the `openssl` CLI to make a cert")
        command = shlex.split(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
            "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
        )
        command += ["-keyout", str(key), "-out", str(cert)]
        subprocess.run(command, check=True, capture_output=True, timeout=WAIT)
        return cert, key
    _write_certificate_with_cryptography(cert, key)
    return cert, key


def _write_certificate_with_cryptography(cert: Path, key: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


async def test_wss_round_trip_with_a_self_signed_certificate(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    async with serving(echo, ssl=server_ssl_context(cert, key)) as (server, handled):
        connection = await connect_aip(
            f"wss://127.0.0.1:{server.port}", ssl=client_ssl_context(cert)
        )
        await connection.send_all(["secret", b"\x07"])
        assert await bounded(connection.recv()) == ("secret", False)
        assert await bounded(connection.recv()) == (b"\x07", True)
        await connection.close()
        assert await handled.next() == [("secret", False), (b"\x07", True)]


async def test_wss_refuses_a_certificate_it_does_not_trust(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    async with serving(echo, ssl=server_ssl_context(cert, key)) as (server, _):
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await connect_aip(f"wss://127.0.0.1:{server.port}", ssl=client_ssl_context())


# ------------------------------------------------------------------ driving sessions


async def test_drive_runs_a_handshake_over_sockets_and_reports_the_loss(aip: Kit) -> None:
    server_events: list[SessionEvent] = []
    device_events: list[SessionEvent] = []
    device = aip.enrolled("dev-a")

    async def serve_session(connection: Connection) -> None:
        session = ServerSession(keys=aip.key_lookup("dev-a"), now=lambda: 0.0)

        def on_events(events: list[SessionEvent]) -> None:
            server_events.extend(events)
            if any(isinstance(event, DeviceAuthenticated) for event in events):
                session.welcome()

        await drive(session, connection, on_events)

    async with serving(serve_session) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        session = DeviceSession(hello=aip.hello_body("dev-a"), token=device.token, now=lambda: 0.0)
        welcomed = asyncio.Event()

        def on_device_events(events: list[SessionEvent]) -> None:
            device_events.extend(events)
            if any(isinstance(event, Welcomed) for event in events):
                welcomed.set()

        driver = SessionDriver(session, connection, on_device_events)
        session.start()
        running = asyncio.create_task(driver.run())
        await bounded(welcomed.wait())
        session.close("device going away")  # a call from outside the driver: flush after it
        driver.flush()
        await bounded(running)
        await handled.next()

    assert [type(event) for event in server_events] == [DeviceAuthenticated, SessionClosed]
    assert server_events[-1] == SessionClosed(reason="device going away", left=True)
    assert [type(event) for event in device_events] == [Welcomed, SessionClosed]


async def test_a_fatal_error_is_sent_before_the_socket_closes() -> None:
    async def serve_session(connection: Connection) -> None:
        session = ServerSession(keys=lambda device: None, now=lambda: 0.0)
        await drive(session, connection, lambda events: None)

    async with serving(serve_session) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        await connection.send_all(["[1, 2, 3]"])  # not an envelope, before hello: fatal
        reply, _ = await bounded(connection.recv())
        message = parse_message(reply)
        assert isinstance(message, Error)
        assert message.body.code is ErrorCode.MALFORMED
        with pytest.raises(TransportClosed) as closed:
            await bounded(connection.recv())
        assert closed.value.code == 1000
        await handled.next()


async def test_a_dropped_socket_closes_the_session_as_dropped() -> None:
    events: list[SessionEvent] = []

    async def serve_session(connection: Connection) -> None:
        session = ServerSession(keys=lambda device: None, now=lambda: 0.0)
        await drive(session, connection, events.extend)

    async with serving(serve_session) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        await connection.close("pulled the plug")
        await handled.next()
    assert len(events) == 1
    assert isinstance(events[0], SessionClosed)
    assert events[0].dropped
    assert not events[0].lost  # "lost" means missed heartbeats, which is not what happened
    assert "pulled the plug" in events[0].reason


async def test_a_reply_and_what_on_events_adds_to_it_leave_in_one_frame(aip: Kit) -> None:
    """The device's automatic `task.accept` and the `task.result` its handler sends at once
    cross as one batch frame, not two."""
    frames_after_assign: list[str | bytes] = []

    async def orchestrate(connection: Connection) -> None:
        session = ServerSession(keys=aip.key_lookup("dev-a"), now=lambda: 0.0)
        assigned = False
        while True:
            frame, binary = await connection.recv()
            if assigned:
                frames_after_assign.append(frame)
            session.receive_frame(frame, binary=binary)
            for event in session.events_received():
                if isinstance(event, DeviceAuthenticated):
                    session.welcome()
                    session.assign(aip.assignment("s1"))
                    assigned = True
                elif isinstance(event, ResultReceived):
                    return
            await connection.send_all(session.data_to_send())

    async with serving(orchestrate, max_frame=65536) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        device = aip.enrolled("dev-a")
        session = DeviceSession(hello=aip.hello_body("dev-a"), token=device.token, now=lambda: 0.0)

        def on_events(events: list[SessionEvent]) -> None:
            for event in events:
                if isinstance(event, AssignmentReceived):
                    session.send_result(TaskResult.success(event.assignment, {"ok": True}))

        session.start()
        running = asyncio.create_task(SessionDriver(session, connection, on_events).run())
        await handled.next()
        await bounded(running)

    assert len(frames_after_assign) == 1
    (batch,) = frames_after_assign
    assert [message.type for message in parse_batch(batch)] == ["task.accept", "task.result"]


def parse_batch(frame: str | bytes) -> list[Any]:
    outcomes = parse_frame(frame)
    assert all(not isinstance(outcome, Exception) for outcome in outcomes), outcomes
    return outcomes


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_connections_read_in_read_size_chunks(
    tls: bool, certificate: tuple[Path, Path]
) -> None:
    """asyncio's 256 KiB reads would map and unmap memory per frame (see `READ_SIZE`).

    This looks at asyncio's private `max_size` attributes, which is what the transport sets;
    it fails if a Python release renames them, which is when the transport needs a look."""
    cert, key = certificate
    server_ssl = server_ssl_context(cert, key) if tls else None
    seen: list[Connection] = []

    async def keep(connection: Connection) -> None:
        seen.append(connection)
        with contextlib.suppress(TransportClosed):
            await connection.recv()

    async with serving(keep, ssl=server_ssl) as (server, handled):
        scheme = "wss" if tls else "ws"
        client = await connect_aip(
            f"{scheme}://127.0.0.1:{server.port}", ssl=client_ssl_context(cert) if tls else None
        )
        await client.send_all(["x" * (3 * READ_SIZE // 2)])  # a frame wider than one read
        await client.close()
        await handled.next()
    for connection in (client, *seen):
        transport = connection._ws.transport
        reader = transport._ssl_protocol if tls else transport  # type: ignore[attr-defined]
        assert reader.max_size == READ_SIZE


# ------------------------------------------------------------------ frames in the read callback


async def answer_with_driver(connection: Connection) -> list[str | bytes]:
    """Drive a `ScriptedSession` ("re:<frame>" for each frame) until the socket closes."""
    session = ScriptedSession()
    await SessionDriver(session, connection, lambda events: None).run()
    return session.received


async def test_a_sink_gets_complete_frames_from_the_read_callback() -> None:
    """Fails if a websockets release renames the queue the fast path checks (then every
    frame silently takes the slower `recv()` path, and the transport needs a look)."""
    delivered: list[tuple[str | bytes, bool, asyncio.Task[Any] | None]] = []
    got_two, sink_removed = asyncio.Event(), asyncio.Event()

    async def sink_only(connection: Connection) -> None:
        def sink(frame: str | bytes, binary: bool) -> None:
            delivered.append((frame, binary, asyncio.current_task()))
            if len(delivered) == 2:
                got_two.set()

        connection.deliver_to(sink)
        await bounded(got_two.wait())
        connection.deliver_to(None)
        sink_removed.set()
        assert await bounded(connection.recv()) == ("queued again", False)

    async with serving(sink_only) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        await connection.send_all(["text", b"\x01binary"])
        await bounded(sink_removed.wait())
        await connection.send_all(["queued again"])
        await handled.next()
        await connection.close()
    assert delivered == [("text", False, None), (b"\x01binary", True, None)]  # no task


async def test_a_fragmented_message_and_the_frames_around_it_are_answered_in_order() -> None:
    """A fragmented message cannot be handed over in the read callback; it takes `recv()`,
    and the complete frames behind it wait their turn instead of overtaking it."""
    async with serving(answer_with_driver) as (server, handled):
        async with ws_connect(f"ws://127.0.0.1:{server.port}{AIP_PATH}") as ws:
            await ws.send("before")
            await ws.send(["frag", "mented"])  # two frames: text, then continuation
            await ws.send("after")
            replies = [await bounded(ws.recv()) for _ in range(3)]
        assert await handled.next() == ["before", "fragmented", "after"]
    assert replies == ["re:before", "re:fragmented", "re:after"]


async def test_frames_that_arrived_before_the_driver_started_are_answered_first() -> None:
    started = asyncio.Event()

    async def late_driver(connection: Connection) -> list[str | bytes]:
        queued = connection._ws.recv_messages.frames  # websockets' queue for recv()
        async with asyncio.timeout(WAIT):
            while len(queued) < 3:
                await asyncio.sleep(0.001)
        started.set()
        return await answer_with_driver(connection)

    async with serving(late_driver) as (server, handled):
        async with ws_connect(f"ws://127.0.0.1:{server.port}{AIP_PATH}") as ws:
            for frame in ("one", "two", "three"):
                await ws.send(frame)
            await bounded(started.wait())
            await ws.send("four")  # arrives once the driver's callback is set
            replies = [await bounded(ws.recv()) for _ in range(4)]
        assert await handled.next() == ["one", "two", "three", "four"]
    assert replies == ["re:one", "re:two", "re:three", "re:four"]


async def test_invalid_utf8_in_a_text_frame_still_closes_with_1007() -> None:
    async with serving(answer_with_driver) as (server, handled):
        async with ws_connect(f"ws://127.0.0.1:{server.port}{AIP_PATH}") as ws:
            await ws.send("fine")
            assert await bounded(ws.recv()) == "re:fine"
            await ws.send(b"\xff\xfe not utf-8", text=True)
            with pytest.raises(ConnectionClosed):
                await bounded(ws.recv())
            assert ws.close_code == 1007
        assert await handled.next() == ["fine"]


async def test_no_compression_is_negotiated_whatever_the_peer_offers() -> None:
    """See `protocol.transport.COMPRESSION` for why AIP does not compress."""
    async with serving(echo) as (server, handled):
        async with ws_connect(f"ws://127.0.0.1:{server.port}{AIP_PATH}") as ws:  # offers it
            assert ws.request is not None
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert ws.protocol.extensions == []
        await handled.next()

    async def accept_anything(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with ws_serve(accept_anything, "127.0.0.1", 0) as plain:  # would accept it
        port = plain.sockets[0].getsockname()[1]
        connection = await connect_aip(f"ws://127.0.0.1:{port}")
        assert connection._ws.request is not None
        assert "Sec-WebSocket-Extensions" not in connection._ws.request.headers
        assert connection._ws.protocol.extensions == []
        await connection.close()


# ------------------------------------------------------------------ driver internals


async def spin(turns: int = 20) -> None:
    """Let every ready task run a few steps (nothing here waits on a clock)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class ScriptedSession:
    """A `FrameSession` that answers every frame it receives with "re:<frame>"."""

    def __init__(self) -> None:
        self.closed = False
        self.close_reason: str | None = None
        self.outgoing: list[str | bytes] = []
        self.received: list[str | bytes] = []

    def receive_frame(self, frame: str | bytes, *, binary: bool = False) -> None:
        self.received.append(frame)
        self.outgoing.append(f"re:{frame!s}")

    def data_to_send(self) -> list[str | bytes]:
        frames, self.outgoing = self.outgoing, []
        return frames

    def events_received(self) -> list[SessionEvent]:
        return []

    def connection_lost(self, reason: str = "connection lost") -> None:
        self.closed, self.close_reason = True, reason


class GatedConnection(Connection):
    """A `Connection` without a socket. Frames come in through the sink the driver sets
    (`deliver`) or from a queue (`recv`, the slow path); `send_now` succeeds while `room`
    is true, and `send_all` (the writer's path) waits for `gate`. `sent` records each frame
    with who sent it: "now" (synchronously, by `flush`) or "writer".

    Setting `room` while a send waits for `gate` stands for a socket whose buffer has just
    drained, with the writer still inside its send."""

    def __init__(self) -> None:  # no websocket behind it
        self.remote = "gated"
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.gate = asyncio.Event()
        self.room = True
        self.sent: list[tuple[str | bytes, str]] = []
        self.sink: FrameSink | None = None

    def deliver(self, frame: str) -> None:
        assert self.sink is not None, "the driver has not set its sink"
        self.sink(frame, False)

    def deliver_to(self, sink: FrameSink | None) -> None:
        self.sink = sink

    async def recv(self) -> tuple[str | bytes, bool]:
        frame = await self.incoming.get()
        if frame is None:
            raise TransportClosed(1000, "test over")
        return frame, False

    def send_now(self, frame: str | bytes) -> bool:
        if self.room:
            self.sent.append((frame, "now"))
        return self.room

    async def send_all(self, frames: list[str | bytes]) -> None:
        await self.gate.wait()
        self.sent += [(frame, "writer") for frame in frames]

    async def close(self, reason: str = "") -> None:
        pass


async def end(connection: GatedConnection, running: asyncio.Task[None]) -> None:
    connection.incoming.put_nowait(None)
    await bounded(running)


async def test_a_reply_is_sent_before_the_frame_callback_returns_when_the_socket_has_room() -> None:
    connection = GatedConnection()
    driver = SessionDriver(ScriptedSession(), connection, lambda events: None)
    running = asyncio.create_task(driver.run())
    await spin()
    connection.deliver("a")
    assert connection.sent == [("re:a", "now")]  # no turn of the event loop in between
    await end(connection, running)


async def test_frames_that_take_the_slow_path_are_answered_in_order_too() -> None:
    session = ScriptedSession()
    connection = GatedConnection()
    driver = SessionDriver(session, connection, lambda events: None)
    running = asyncio.create_task(driver.run())
    connection.incoming.put_nowait("queued")  # as if it arrived before the sink was set
    await spin()
    connection.deliver("delivered")
    await end(connection, running)
    assert session.received == ["queued", "delivered"]
    assert connection.sent == [("re:queued", "now"), ("re:delivered", "now")]


@pytest.mark.parametrize("room", [False, True], ids=["buffer-full", "buffer-drained"])
async def test_frames_keep_coming_in_while_the_writer_waits_and_order_holds(room: bool) -> None:
    """Frames the socket cannot take at once go to the writer; while its send waits,
    replies to what comes in queue behind them instead of jumping ahead or blocking."""
    session = ScriptedSession()
    connection = GatedConnection()  # gate closed: a send started now does not finish
    connection.room = False
    driver = SessionDriver(session, connection, lambda events: None)
    running = asyncio.create_task(driver.run())
    await spin()
    session.outgoing += ["first", "second"]
    driver.flush()  # from outside the driver, with the socket full: the writer sends these
    drained = asyncio.create_task(driver.drained())
    await spin()  # the writer is inside its send of "first"
    connection.room = room
    connection.deliver("question")
    connection.deliver("again")
    assert session.received == ["question", "again"]
    assert connection.sent == []
    assert not drained.done()
    connection.gate.set()
    await bounded(drained)
    await end(connection, running)
    assert connection.sent == [
        ("first", "writer"),
        ("second", "writer"),
        ("re:question", "writer"),
        ("re:again", "writer"),
    ]


async def test_a_flush_from_outside_sends_at_once_when_the_socket_has_room() -> None:
    session = ScriptedSession()
    connection = GatedConnection()
    driver = SessionDriver(session, connection, lambda events: None)
    running = asyncio.create_task(driver.run())
    await spin()
    session.outgoing.append("assign")
    driver.flush()
    assert connection.sent == [("assign", "now")]
    await bounded(driver.drained())
    await end(connection, running)


class TellingSession(ScriptedSession):
    """A `ScriptedSession` with an event for each frame it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[SessionEvent] = []

    def receive_frame(self, frame: str | bytes, *, binary: bool = False) -> None:
        super().receive_frame(frame, binary=binary)
        self.events.append(cast(SessionEvent, frame))

    def events_received(self) -> list[SessionEvent]:
        events, self.events = self.events, []
        return events


async def test_an_exception_from_on_events_in_the_frame_callback_ends_run_with_it() -> None:
    """The frame callback runs in the event loop's read callback, where an exception would
    only be logged; the driver stops delivery and raises it from `run()`, as a handler's
    exception always did."""

    class HandlerFailed(Exception):
        pass

    handled: list[object] = []

    def on_events(events: list[SessionEvent]) -> None:
        handled.extend(events)
        raise HandlerFailed("while a frame was delivered")

    connection = GatedConnection()
    running = asyncio.create_task(SessionDriver(TellingSession(), connection, on_events).run())
    await spin()
    connection.deliver("question")  # does not raise into the callback
    assert connection.sink is None  # nothing more is delivered
    with pytest.raises(HandlerFailed, match="while a frame was delivered"):
        await bounded(running)
    assert handled == ["question"]


async def test_send_now_sends_only_what_the_socket_takes_without_waiting() -> None:
    async with serving(echo) as (server, handled):
        connection = await connect_aip(f"ws://127.0.0.1:{server.port}")
        assert connection.send_now("x" * 100)
        assert await bounded(connection.recv()) == ("x" * 100, False)
        assert not connection.send_now(b"x" * 65536)  # over websockets' 32 KiB mark
        assert connection.send_now(b"\x07")
        assert await bounded(connection.recv()) == (b"\x07", True)  # the big one never went
        await connection.close()
        assert not connection.send_now("x")
        assert await handled.next() == [("x" * 100, False), (b"\x07", True)]
