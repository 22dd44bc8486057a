"""What AIP costs on top of a bare WebSocket, measured side by side in one run on 127.0.0.1.

Server and clients share one asyncio event loop in this process, all on `websockets.asyncio`.
The raw cases use websockets' default settings, permessage-deflate included, as a plain
websockets echo does. AIP's side runs on its own transport, `protocol/transport.py`
(`serve_aip`, `connect_aip`, `SessionDriver`), as `orrery serve` and `orrery device` do,
with its own settings: no compression (`protocol.transport.COMPRESSION`) and frames handled
in the read callback. Every socket reads 64 KiB per `recv`, as AIP's transport does
(`protocol.transport.READ_SIZE`), except in (a256).

(a) raw baseline: a websockets echo server; the client sends a 1 KiB JSON text frame and
    waits for the echo. One round trip = client `send` to client `recv` returned.
(a256) the same echo with asyncio's own 256 KiB reads, for reference only. CPython
    allocates the whole 256 KiB for every read; when the process's heap cannot serve
    that, glibc maps and unmaps memory for each read, which costs ~40 µs per round trip.
    Whether it can depends on what the process allocated and freed before, so this case
    measures either about (a) or about (a) + 40 µs, and its value moves with unrelated
    code changes. It is why the transport reads 64 KiB.
(a0) the same echo without compression, as AIP's connections run: for reference, to show
    what AIP's choice not to compress is worth; (b) / (a0) is in the table too.
(a3) raw, AIP's frame pattern: the same three frames as (b) (1 KiB out; one frame back
    carrying a small and a 1 KiB part, as AIP batches `task.accept` with `task.result`; a
    small frame out), as opaque text answered by plain websockets code and timed like (b).
    It compresses, as (a) does: (a3) minus (a) is what three frames cost instead of two.
    (b) minus (a3) is what the sessions and their driver add, less what (b) saves by not
    compressing.
(b) AIP task round trip: a minimal orchestrator serves `ServerSession`s through
    `serve_aip` and `SessionDriver`; a device drives a `DeviceSession` the same way
    through `connect_aip` (authenticated once, with a key from `enroll()`). One round
    trip, measured on the orchestrator side, runs from just before `ServerSession.assign`
    (1 KiB of `args`; the orchestrator has built the `TaskAssignment` before; encoding
    and sending `task.assign` are included) until the `ack` frame
    has been handed to the socket, after the device's `task.accept` and `task.result`
    (1 KiB of `output`) were received and parsed:
        assign → [device: parse, accept, result] → accept, result parsed → ack sent.
    That is one network round trip with three frames instead of two (the device's
    `task.accept` and `task.result` travel as one batch frame), four messages, and two
    pydantic parses and two encodes on each side. The next assign starts only after the
    ack went out, so round trips never overlap.
(b0) the same round trip with the two sessions wired back to back in memory (no
    sockets): the part of (b) that is AIP's own work.
(c) dispatch throughput: 100 authenticated device connections, each announcing
    `max_tasks` 4; the orchestrator hands out tasks round-robin over free slots, keeping
    every device at its limit, and each device answers at once (accept, then result).
    Bounded to 20,000 tasks or 30 s, whichever comes first; tasks/s = results acked /
    time from the first assign to the last ack. Same 1 KiB args and outputs as (b).

The orchestrator's rate limit is raised for (b) and (c): the default (500 frames/s per
device) would cap one device at 250 tasks/s, which is the point of a rate limit, not a
cost of the protocol. Each latency case gets 200 untimed round trips of warm-up, then
N = 2,000 timed ones, in 10 rounds that alternate blocks of 200 between the cases, so a
slow spell of the machine hits every case alike. Medians and p99s are over all N.

The table ends with the line
`roundtrip_ratio=<(b) median / (a) median> tasks_per_s=<(c)>`.

Usage: python bench/bench_protocol.py [--n 2000] [--warmup 200] [--rounds 10]
                     [--devices 100] [--tasks 20000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from protocol.auth import DeviceKey, enroll
from protocol.messages import HelloBody, ToolDescription
from protocol.session import (
    AssignmentReceived,
    DeviceAuthenticated,
    DeviceSession,
    PeerError,
    ResultReceived,
    ServerConfig,
    ServerSession,
    SessionEvent,
    Welcomed,
)
from protocol.tasks import TaskAssignment, TaskResult
from protocol.transport import (
    READ_SIZE,
    Connection,
    SessionDriver,
    connect_aip,
    serve_aip,
)

HOST = "127.0.0.1"
PAYLOAD_BYTES = 1024
CONFIG = ServerConfig(rate=1e9, burst=1e9)  # see the module docstring
TOOL = ToolDescription(name="bench.echo", description="answers at once")


def filler(target: int, wrap: Callable[[str], Any]) -> Any:
    """`wrap(text)` with `text` padded so that its compact JSON is `target` bytes long."""
    base = len(json.dumps(wrap(""), separators=(",", ":")))
    return wrap("x" * (target - base))


RAW_PAYLOAD = json.dumps(
    filler(PAYLOAD_BYTES, lambda s: {"v": 1, "type": "echo", "id": "0" * 32, "body": {"d": s}}),
    separators=(",", ":"),
)
ARGS: dict[str, Any] = filler(PAYLOAD_BYTES, lambda s: {"data": s})
OUTPUT: dict[str, Any] = filler(PAYLOAD_BYTES, lambda s: {"stdout": s})


def assignment(number: int, device: str) -> TaskAssignment:
    return TaskAssignment(
        constellation_id="bench",
        star_id=f"s{number}",
        attempt=1,
        device=device,
        tool=TOOL.name,
        args=ARGS,
        timeout=60.0,
    )


@dataclass(frozen=True)
class Stats:
    samples: list[float]  # seconds

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples) * 1e6

    @property
    def p99_us(self) -> float:
        ordered = sorted(self.samples)
        return ordered[math.ceil(0.99 * len(ordered)) - 1] * 1e6


# ------------------------------------------------------------------ latency cases

Block = Callable[[int], Awaitable[list[float]]]
"""Run `k` timed round trips of one case back to back; returns their durations (s)."""


def read_size(ws: ServerConnection | ClientConnection, size: int) -> None:
    """Have asyncio read `size` bytes per `recv` on `ws`, as `protocol.transport` does."""
    ws.transport.max_size = size  # type: ignore[attr-defined]


ASYNCIO_READ_SIZE = 256 * 1024  # what asyncio's selector transport asks per recv


@asynccontextmanager
async def raw_echo(size: int = READ_SIZE, *, compress: bool = True) -> AsyncIterator[Block]:
    """(a), (a256), (a0): client sends 1 KiB, the server echoes it; timed on the client."""
    compression = "deflate" if compress else None

    async def echo(ws: ServerConnection) -> None:
        read_size(ws, size)
        async for message in ws:
            await ws.send(message)

    async with serve(echo, HOST, 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://{HOST}:{port}/", compression=compression) as ws:
            assert bool(ws.protocol.extensions) == compress
            read_size(ws, size)

            async def block(k: int) -> list[float]:
                samples = []
                for _ in range(k):
                    started = time.perf_counter()
                    await ws.send(RAW_PAYLOAD)
                    reply = await ws.recv()
                    samples.append(time.perf_counter() - started)
                    assert len(reply) == PAYLOAD_BYTES
                return samples

            yield block


SMALL_OUT = json.dumps(filler(200, lambda s: {"ack": s}), separators=(",", ":"))
SMALL_BACK = json.dumps(filler(130, lambda s: {"accept": s}), separators=(",", ":"))
BATCH_BACK = f"[{SMALL_BACK},{RAW_PAYLOAD}]"  # accept and result in one frame


@asynccontextmanager
async def raw_pattern() -> AsyncIterator[Block]:
    """(a3): AIP's three frames per round trip, with no AIP code; timed on the server."""
    requests: asyncio.Queue[tuple[int, asyncio.Future[list[float]]] | None] = asyncio.Queue()

    async def orchestrator(ws: ServerConnection) -> None:
        read_size(ws, READ_SIZE)
        while (request := await requests.get()) is not None:
            k, result = request
            samples = []
            for _ in range(k):
                started = time.perf_counter()
                await ws.send(RAW_PAYLOAD)  # "task.assign"
                await ws.recv()  # "task.accept" and "task.result"
                await ws.send(SMALL_OUT)  # "ack"
                samples.append(time.perf_counter() - started)
            result.set_result(samples)

    async def device(ws: ClientConnection) -> None:
        async for message in ws:
            if len(message) == PAYLOAD_BYTES:
                await ws.send(BATCH_BACK)

    async with serve(orchestrator, HOST, 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://{HOST}:{port}/") as ws:
            read_size(ws, READ_SIZE)
            answering = asyncio.create_task(device(ws))

            async def block(k: int) -> list[float]:
                result: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
                requests.put_nowait((k, result))
                return await result

            try:
                yield block
            finally:
                requests.put_nowait(None)  # ends the server's handler
                answering.cancel()
                await asyncio.gather(answering, return_exceptions=True)


# ------------------------------------------------------------------ AIP over sockets


@dataclass(eq=False)
class Link:
    """The orchestrator's end of one device connection, driven by AIP's own transport."""

    session: ServerSession
    driver: SessionDriver
    acked: list[TaskResult] = field(default_factory=list)  # acks queued, not yet sent


Hook = Callable[[Link], None]
ResultHook = Callable[[Link, TaskResult], None]


@dataclass
class Orchestrator:
    """A minimal orchestrator on `serve_aip` and `SessionDriver`, as the real dispatcher
    uses them: authenticates devices, acks each result at once ("stored"), and calls
    `on_result` once that ack has been handed to the socket."""

    keys: dict[str, DeviceKey]
    on_ready: Hook
    on_result: ResultHook
    errors: list[str] = field(default_factory=list)

    async def handle(self, connection: Connection) -> None:
        session = ServerSession(keys=self.keys.get, now=time.monotonic, config=CONFIG)

        def on_events(events: list[SessionEvent]) -> None:
            for event in events:
                if isinstance(event, DeviceAuthenticated):
                    session.welcome()
                    self.on_ready(link)
                elif isinstance(event, ResultReceived):
                    session.ack_result(event.result, event.message_id)
                    link.acked.append(event.result)
                elif isinstance(event, PeerError):
                    self.errors.append(f"device: {event.code}: {event.message}")

        send_now, send_all = connection.send_now, connection.send_all

        def handed_over(frames: list[str | bytes]) -> None:
            self.errors += [
                item
                for item in frames
                if isinstance(item, str) and item.find('"type":"error"', 0, 160) != -1
            ]
            while link.acked:  # their acks are now with the socket
                self.on_result(link, link.acked.pop(0))

        def send_now_and_report(frame: str | bytes) -> bool:
            if not send_now(frame):
                return False
            handed_over([frame])
            return True

        async def send_and_report(frames: list[str | bytes]) -> None:
            await send_all(frames)
            handed_over(frames)

        connection.send_now = send_now_and_report  # type: ignore[method-assign]
        connection.send_all = send_and_report  # type: ignore[method-assign]
        link = Link(session, SessionDriver(session, connection, on_events))
        await link.driver.run()


async def run_device(port: int, name: str, token: str, max_tasks: int, up: asyncio.Event) -> None:
    """A device on `connect_aip` and `SessionDriver` that answers every assignment at once
    (`task.accept` and `task.result` leave in one batch frame)."""
    hello = HelloBody(device=name, versions=[1], tools=[TOOL], max_tasks=max_tasks)
    session = DeviceSession(hello=hello, token=token, now=time.monotonic)

    def on_events(events: list[SessionEvent]) -> None:
        for event in events:
            if isinstance(event, AssignmentReceived):
                session.send_result(TaskResult.success(event.assignment, OUTPUT))
            elif isinstance(event, Welcomed):
                up.set()
            elif isinstance(event, PeerError):
                raise RuntimeError(f"orchestrator refused a frame: {event.message}")

    connection = await connect_aip(f"ws://{HOST}:{port}")
    session.start()
    await SessionDriver(session, connection, on_events).run()


def enrolled(count: int) -> tuple[dict[str, DeviceKey], dict[str, str]]:
    """Enrol `count` devices (PBKDF2 once each, before anything is timed)."""
    keys: dict[str, DeviceKey] = {}
    tokens: dict[str, str] = {}
    for index in range(count):
        name = f"bench-{index:03d}"
        tokens[name], keys[name] = enroll(name)
    return keys, tokens


@asynccontextmanager
async def aip_roundtrip() -> AsyncIterator[Block]:
    """(b): assign → accept → result → ack over a real connection; timed by the orchestrator."""
    keys, tokens = enrolled(1)
    (name,) = tokens
    ready: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
    samples: list[float] = []
    remaining = 0
    started = 0.0
    number = 0
    finished: asyncio.Future[list[float]] | None = None

    def assign_next(link: Link) -> None:
        nonlocal started, number
        number += 1
        task = assignment(number, name)  # the orchestrator's, before the protocol's part
        started = time.perf_counter()
        link.session.assign(task)
        link.driver.flush()

    def on_ready(link: Link) -> None:
        ready.set_result(link)

    def on_result(link: Link, result: TaskResult) -> None:
        nonlocal remaining
        samples.append(time.perf_counter() - started)  # its ack was just handed to the socket
        remaining -= 1
        if remaining > 0:
            assign_next(link)
        elif finished is not None:
            finished.set_result(list(samples))

    orchestrator = Orchestrator(keys, on_ready, on_result)
    async with await serve_aip(orchestrator.handle, HOST, 0) as server:
        device = asyncio.create_task(
            run_device(server.port, name, tokens[name], 1, asyncio.Event())
        )
        link = await asyncio.wait_for(ready, timeout=60)

        async def block(k: int) -> list[float]:
            nonlocal remaining, finished
            samples.clear()
            remaining = k
            finished = asyncio.get_running_loop().create_future()
            assign_next(link)
            return await finished

        try:
            yield block
        finally:
            device.cancel()
            await asyncio.gather(device, return_exceptions=True)
    if orchestrator.errors:
        raise RuntimeError(f"errors during the round trips: {orchestrator.errors[:3]}")


# ------------------------------------------------------------------ (b0) sessions only


@asynccontextmanager
async def sans_io() -> AsyncIterator[Block]:
    """(b0): (b) without sockets: the same frames, handed from session to session in memory."""
    keys, tokens = enrolled(1)
    (name,) = tokens
    server = ServerSession(keys=keys.get, now=time.monotonic, config=CONFIG)
    hello = HelloBody(device=name, versions=[1], tools=[TOOL], max_tasks=1)
    device = DeviceSession(hello=hello, token=tokens[name], now=time.monotonic)

    def pump() -> list[Any]:
        events: list[Any] = []
        moved = True
        while moved:
            moved = False
            for item in device.data_to_send():
                moved = True
                server.receive_frame(item)
            events += server.events_received()
            for item in server.data_to_send():
                moved = True
                device.receive_frame(item)
            for event in device.events_received():
                if isinstance(event, AssignmentReceived):
                    device.send_result(TaskResult.success(event.assignment, OUTPUT))
        return events

    device.start()
    pump()
    server.welcome()
    pump()
    number = 0

    async def block(k: int) -> list[float]:
        nonlocal number
        samples = []
        for _ in range(k):
            number += 1
            task = assignment(number, name)
            started = time.perf_counter()
            server.assign(task)
            (received,) = [e for e in pump() if isinstance(e, ResultReceived)]
            server.ack_result(received.result, received.message_id)
            pump()
            samples.append(time.perf_counter() - started)
        return samples

    yield block


async def measure_latencies(
    cases: dict[str, Block], n: int, warmup: int, rounds: int
) -> dict[str, Stats]:
    """Warm every case up, then alternate blocks of n / rounds round trips between cases,
    so that a slow spell of the machine hits every case alike."""
    for block in cases.values():
        await block(warmup)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        for name, block in cases.items():
            gc.collect()
            samples[name] += await block(per_round)
    return {name: Stats(values) for name, values in samples.items()}


# ------------------------------------------------------------------ (c) throughput


@dataclass
class Throughput:
    devices: int
    tasks: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0


async def bench_dispatch(devices: int, max_tasks: int, total: int, limit: float) -> Throughput:
    keys, tokens = enrolled(devices)
    free: deque[Link] = deque()  # one entry per free slot, in round-robin order
    ready: list[Link] = []
    all_up = asyncio.Event()
    finished = asyncio.Event()
    issued = acked = 0
    first = last = 0.0
    deadline = math.inf

    def dispatch() -> None:
        nonlocal issued, first, deadline
        touched: dict[int, Link] = {}
        while free and issued < total and time.perf_counter() < deadline:
            link = free.popleft()
            if issued == 0:
                first = time.perf_counter()
                deadline = first + limit
            link.session.assign(assignment(issued, link.session.device or "?"))
            issued += 1
            touched[id(link)] = link
        for link in touched.values():
            link.driver.flush()
        if acked == issued and (issued >= total or time.perf_counter() >= deadline):
            finished.set()

    def on_ready(link: Link) -> None:
        ready.append(link)
        if len(ready) == devices:
            for _ in range(max_tasks):  # slots round-robin over the devices
                free.extend(ready)
            all_up.set()
            gc.collect()
            dispatch()

    def on_result(link: Link, result: TaskResult) -> None:
        nonlocal acked, last
        acked += 1
        last = time.perf_counter()
        free.append(link)
        dispatch()

    orchestrator = Orchestrator(keys, on_ready, on_result)
    async with await serve_aip(orchestrator.handle, HOST, 0) as server:
        ups = [asyncio.Event() for _ in tokens]
        clients = [
            asyncio.create_task(run_device(server.port, name, token, max_tasks, up))
            for (name, token), up in zip(tokens.items(), ups, strict=True)
        ]
        await asyncio.wait_for(all_up.wait(), timeout=120)
        await asyncio.wait_for(finished.wait(), timeout=limit + 60)
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    if orchestrator.errors:
        raise RuntimeError(f"errors during dispatch: {orchestrator.errors[:3]}")
    return Throughput(devices=devices, tasks=acked, seconds=last - first)


# ------------------------------------------------------------------ main


async def run(options: argparse.Namespace) -> None:
    async with (
        raw_echo() as a,
        raw_echo(ASYNCIO_READ_SIZE) as a256,
        raw_echo(compress=False) as a0,
        raw_pattern() as a3,
        aip_roundtrip() as b,
        sans_io() as b0,
    ):
        cases = {"a": a, "a256": a256, "a0": a0, "a3": a3, "b": b, "b0": b0}
        stats = await measure_latencies(cases, options.n, options.warmup, options.rounds)
    throughput = await bench_dispatch(options.devices, 4, options.tasks, options.seconds)

    raw = stats["a"]
    print(
        "127.0.0.1, one event loop; raw cases on websockets defaults (permessage-deflate "
        "on) but (a0), AIP without compression; 64 KiB reads but in (a256); latency cases "
        f"alternate in {options.rounds} rounds"
    )
    print(f"{'case':<54} {'n':>6} {'median us':>10} {'p99 us':>9} {'vs (a)':>7}")
    labels = {
        "a": "(a) raw websockets echo, 1 KiB text frame",
        "a256": "(a256) the same, asyncio's 256 KiB reads (reference)",
        "a0": "(a0) the same, no compression (as AIP runs)",
        "a3": "(a3) raw websockets, AIP's 3-frame pattern",
        "b": "(b) AIP assign→accept→result→ack, 1 KiB each way",
        "b0": "(b0) the same, sessions only (no sockets)",
    }
    for key, label in labels.items():
        row = stats[key]
        print(
            f"{label:<54} {len(row.samples):>6} {row.median_us:>10.1f} {row.p99_us:>9.1f} "
            f"{row.median_us / raw.median_us:>7.2f}"
        )
    print(
        f"(b) against (a0), an echo without compression as AIP runs: "
        f"{stats['b'].median_us / stats['a0'].median_us:.2f}"
    )
    print(
        f"(c) dispatch: {throughput.devices} devices x 4 slots, {throughput.tasks} tasks in "
        f"{throughput.seconds:.2f} s = {throughput.per_second:,.0f} tasks/s"
    )
    print(
        f"roundtrip_ratio={stats['b'].median_us / raw.median_us:.2f} "
        f"tasks_per_s={throughput.per_second:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="timed round trips for (a), (b)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed round trips first")
    parser.add_argument("--rounds", type=int, default=10, help="blocks per latency case")
    parser.add_argument("--devices", type=int, default=100, help="device connections in (c)")
    parser.add_argument("--tasks", type=int, default=20_000, help="task budget for (c)")
    parser.add_argument("--seconds", type=float, default=30.0, help="time budget for (c)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
