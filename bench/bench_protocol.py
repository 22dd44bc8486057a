"""What AIP costs on top of a bare WebSocket, measured side by side in one run on 127.0.0.1.

Server and clients share one asyncio event loop in this process (`websockets.asyncio`,
default settings as `protocol/transport.py` uses them, so permessage-deflate is on).

(a) raw baseline: a websockets echo server; the client sends a 1 KiB JSON text frame and
    waits for the echo. One round trip = client `send` to client `recv` returned.
(a3) raw, AIP's frame pattern: the same three frames as (b) (1 KiB out; one frame back
    carrying a small and a 1 KiB part, as AIP batches `task.accept` with `task.result`; a
    small frame out), as opaque text answered by plain websockets code and timed like (b).
    (b) minus (a3) is what the sessions add; (a3) minus (a) is what three frames cost
    instead of two.
(b) AIP task round trip: a minimal orchestrator loop drives one `ServerSession` per
    connection, a device loop drives a `DeviceSession` (authenticated once, with a key
    from `enroll()`). One round trip, measured on the orchestrator side, runs from just
    before `ServerSession.assign` (1 KiB of `args`: encoding and sending `task.assign`
    included) until the `ack` frame has been handed to the socket, after the device's
    `task.accept` and `task.result` (1 KiB of `output`) were received and parsed:
        assign → [device: parse, accept, result] → accept, result parsed → ack sent.
    That is one network round trip with three frames instead of two (the device's
    `task.accept` and `task.result` travel as one batch frame), four messages, and two
    pydantic parses and two encodes on each side.
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
                     [--devices 100] [--tasks 20000] [--seconds 30] [--no-compression]
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
from websockets.exceptions import ConnectionClosed

from protocol.auth import DeviceKey, enroll
from protocol.messages import HelloBody, Load, ToolDescription
from protocol.session import (
    AssignmentReceived,
    DeviceAuthenticated,
    DeviceSession,
    PeerError,
    ResultReceived,
    ServerConfig,
    ServerSession,
    Welcomed,
)
from protocol.tasks import TaskAssignment, TaskResult

HOST = "127.0.0.1"
PAYLOAD_BYTES = 1024
CONFIG = ServerConfig(rate=1e9, burst=1e9)  # see the module docstring
TOOL = ToolDescription(name="bench.echo", description="answers at once")
COMPRESSION: list[str | None] = ["deflate"]  # websockets' default, as protocol/transport.py


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


@asynccontextmanager
async def raw_echo() -> AsyncIterator[Block]:
    """(a): client sends 1 KiB, the server echoes it; timed on the client."""

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, HOST, 0, compression=COMPRESSION[0]) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://{HOST}:{port}/", compression=COMPRESSION[0]) as ws:

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

    async with serve(orchestrator, HOST, 0, compression=COMPRESSION[0]) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://{HOST}:{port}/", compression=COMPRESSION[0]) as ws:
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
    """The orchestrator's end of one device connection."""

    ws: ServerConnection
    session: ServerSession

    async def flush(self) -> None:
        for frame in self.session.data_to_send():
            await self.ws.send(frame)


Hook = Callable[[Link], Awaitable[None]]
ResultHook = Callable[[Link, TaskResult], Awaitable[None]]


@dataclass
class Orchestrator:
    """A minimal orchestrator: authenticates devices, acks results, calls the hooks."""

    keys: dict[str, DeviceKey]
    on_ready: Hook
    on_result: ResultHook
    errors: list[str] = field(default_factory=list)

    async def handle(self, ws: ServerConnection) -> None:
        session = ServerSession(keys=self.keys.get, now=time.monotonic, config=CONFIG)
        link = Link(ws, session)
        try:
            async for frame in ws:
                session.receive_frame(frame, binary=isinstance(frame, bytes))
                ready = False
                results: list[TaskResult] = []
                for event in session.events_received():
                    if isinstance(event, DeviceAuthenticated):
                        session.welcome()
                        ready = True
                    elif isinstance(event, ResultReceived):  # "stored" at once in this bench
                        session.ack_result(event.result, event.message_id)
                        results.append(event.result)
                    elif isinstance(event, PeerError):
                        self.errors.append(f"device: {event.code}: {event.message}")
                outgoing = session.data_to_send()
                self.errors += [
                    item
                    for item in outgoing
                    if isinstance(item, str) and item.find('"type":"error"', 0, 160) != -1
                ]
                for item in outgoing:
                    await ws.send(item)
                if ready:
                    await self.on_ready(link)
                for result in results:
                    await self.on_result(link, result)
                if session.closed:
                    return
        except ConnectionClosed:
            session.connection_lost()


async def run_device(port: int, name: str, token: str, max_tasks: int, up: asyncio.Event) -> None:
    """A device that accepts (automatically) and answers every assignment at once."""
    hello = HelloBody(device=name, versions=[1], tools=[TOOL], max_tasks=max_tasks)
    session = DeviceSession(hello=hello, token=token, now=time.monotonic)
    ws: ClientConnection
    async with connect(f"ws://{HOST}:{port}/aip/v1", compression=COMPRESSION[0]) as ws:
        session.start()
        for item in session.data_to_send():
            await ws.send(item)
        async for frame in ws:
            session.receive_frame(frame, binary=isinstance(frame, bytes))
            for event in session.events_received():
                if isinstance(event, AssignmentReceived):
                    session.send_result(TaskResult.success(event.assignment, OUTPUT))
                elif isinstance(event, Welcomed):
                    up.set()
                elif isinstance(event, PeerError):
                    raise RuntimeError(f"orchestrator refused a frame: {event.message}")
            if session.heartbeat_due():
                session.send_heartbeat(Load(running=0))
            for item in session.data_to_send():
                await ws.send(item)
            if session.closed:
                return


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

    async def assign_next(link: Link) -> None:
        nonlocal started, number
        number += 1
        started = time.perf_counter()
        link.session.assign(assignment(number, name))
        await link.flush()

    async def on_ready(link: Link) -> None:
        ready.set_result(link)

    async def on_result(link: Link, result: TaskResult) -> None:
        nonlocal remaining
        samples.append(time.perf_counter() - started)  # the ack went out before this hook
        remaining -= 1
        if remaining > 0:
            await assign_next(link)
        elif finished is not None:
            finished.set_result(list(samples))

    orchestrator = Orchestrator(keys, on_ready, on_result)
    async with serve(orchestrator.handle, HOST, 0, compression=COMPRESSION[0]) as server:
        port = server.sockets[0].getsockname()[1]
        device = asyncio.create_task(run_device(port, name, tokens[name], 1, asyncio.Event()))
        link = await asyncio.wait_for(ready, timeout=60)

        async def block(k: int) -> list[float]:
            nonlocal remaining, finished
            samples.clear()
            remaining = k
            finished = asyncio.get_running_loop().create_future()
            await assign_next(link)
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
            started = time.perf_counter()
            server.assign(assignment(number, name))
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

    async def dispatch() -> None:
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
            await link.flush()
        if acked == issued and (issued >= total or time.perf_counter() >= deadline):
            finished.set()

    async def on_ready(link: Link) -> None:
        ready.append(link)
        if len(ready) == devices:
            for _ in range(max_tasks):  # slots round-robin over the devices
                free.extend(ready)
            all_up.set()
            gc.collect()
            await dispatch()

    async def on_result(link: Link, result: TaskResult) -> None:
        nonlocal acked, last
        acked += 1
        last = time.perf_counter()
        free.append(link)
        await dispatch()

    orchestrator = Orchestrator(keys, on_ready, on_result)
    async with serve(orchestrator.handle, HOST, 0, compression=COMPRESSION[0]) as server:
        port = server.sockets[0].getsockname()[1]
        ups = [asyncio.Event() for _ in tokens]
        clients = [
            asyncio.create_task(run_device(port, name, token, max_tasks, up))
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
    if options.no_compression:
        COMPRESSION[0] = None
    async with raw_echo() as a, raw_pattern() as a3, aip_roundtrip() as b, sans_io() as b0:
        cases = {"a": a, "a3": a3, "b": b, "b0": b0}
        stats = await measure_latencies(cases, options.n, options.warmup, options.rounds)
    throughput = await bench_dispatch(options.devices, 4, options.tasks, options.seconds)

    raw = stats["a"]
    compression = COMPRESSION[0] or "off"
    print(
        f"127.0.0.1, one event loop, websockets compression: {compression}; latency cases "
        f"alternate in {options.rounds} rounds"
    )
    print(f"{'case':<52} {'n':>6} {'median us':>10} {'p99 us':>9} {'vs (a)':>7}")
    labels = {
        "a": "(a) raw websockets echo, 1 KiB text frame",
        "a3": "(a3) raw websockets, AIP's 3-frame pattern",
        "b": "(b) AIP assign→accept→result→ack, 1 KiB each way",
        "b0": "(b0) the same, sessions only (no sockets)",
    }
    for key, label in labels.items():
        row = stats[key]
        print(
            f"{label:<52} {len(row.samples):>6} {row.median_us:>10.1f} {row.p99_us:>9.1f} "
            f"{row.median_us / raw.median_us:>7.2f}"
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
    parser.add_argument(
        "--no-compression", action="store_true", help="turn permessage-deflate off everywhere"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
