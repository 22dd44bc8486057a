"""One orchestrator under load: many device sessions, many short stars, nothing lost.

An `orrery serve --no-planner` process (a fresh data dir) is the orchestrator. The devices
are real AIP sessions over real WebSocket connections on 127.0.0.1 (`connect_aip`,
`DeviceSession`, `SessionDriver`, the transport `orrery device` uses), spread over
`--workers` processes. Each announces `shell.run` and answers every `task.assign` at
once with a successful result (no process is started: this measures the orchestrator,
not fork), and sends its heartbeats. The stars arrive as `--constellations` plans of
`--stars` independent stars each, submitted through the control API (`app.client`)
all at once; every device takes `--max-tasks` at a time.

The bench enrols every device with one token (so PBKDF2 runs once here instead of once
per device on these two cores; a real fleet derives its keys on its own machines); each
device still proves itself in its own handshake.

Reported: the time for every device to connect (from the first dial to the last
`device.joined`); dispatch throughput (stars that succeeded / time from the first submit
to the last `constellation.finished`); the round trip of a star, `star.started` to
`star.finished` on the orchestrator's clock, p50 and p99; the orchestrator's RSS (VmRSS)
once the devices are connected, when half the constellations have finished and at the
end, and its peak (VmHWM); and lost results
(stars that the store does not record as succeeded at the end). Bounded: `--seconds`
for the stars (what has not finished by then counts as lost), and the connect phase gets
as long.

Last line: `devices=<n> stars_per_s=<x> p99_ms=<y> rss_mb=<z> lost=<n>` (rss_mb: at the end).

Usage: python bench/bench_scale.py [--devices 500] [--constellations 1000] [--stars 20]
                     [--max-tasks 4] [--workers 2] [--seconds 600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"cmd": {"type": "string"}},
    "required": ["cmd"],
}
OUTPUT = {"returncode": 0, "stdout": "ok\n", "stderr": "", "truncated": False, "duration": 0.0}
CONNECTING_AT_ONCE = 50


# ----------------------------------------------------------------- the device workers


async def run_devices(url: str, names: list[str], token: str, salt: str, max_tasks: int) -> None:
    """Connect one AIP session per name and answer assignments until stdin closes."""
    from protocol.auth import derive_key
    from protocol.messages import HelloBody, Load, ToolDescription
    from protocol.session import AssignmentReceived, DeviceSession, SessionEvent, Welcomed
    from protocol.tasks import TaskResult
    from protocol.transport import SessionDriver, connect_aip

    key = derive_key(token, salt)  # the same for every device here (see the module doc)
    tool = ToolDescription(name="shell.run", description="bench", args_schema=TOOL_SCHEMA)
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    sessions: list[tuple[DeviceSession, SessionDriver]] = []
    drivers: list[asyncio.Task[None]] = []

    async def one(name: str) -> None:
        hello = HelloBody(device=name, versions=[1], tools=[tool], max_tasks=max_tasks)
        session = DeviceSession(hello=hello, token=token, now=time.time)
        session._keys[salt] = key  # PBKDF2 once per worker, not per device
        welcomed = asyncio.Event()

        def on_events(events: list[SessionEvent]) -> None:
            for event in events:
                if isinstance(event, AssignmentReceived):
                    session.send_result(TaskResult.success(event.assignment, OUTPUT))
                elif isinstance(event, Welcomed):
                    welcomed.set()

        async with gate:
            connection = await connect_aip(url, open_timeout=60)
            driver = SessionDriver(session, connection, on_events)
            session.start()
            drivers.append(asyncio.create_task(driver.run()))
            await asyncio.wait_for(welcomed.wait(), 60)
        sessions.append((session, driver))

    await asyncio.gather(*(one(name) for name in names))
    print("up", flush=True)

    async def beat() -> None:
        interval = sessions[0][0].heartbeat_interval if sessions else 5.0
        while True:
            await asyncio.sleep(interval / 2)
            for session, driver in sessions:
                if not session.closed:
                    session.send_heartbeat(Load(running=0, cpu_percent=0.0, memory_percent=0.0))
                    driver.flush()

    beating = asyncio.create_task(beat())
    await asyncio.to_thread(sys.stdin.read)  # the bench closes stdin: stop
    beating.cancel()
    for session, driver in sessions:
        session.close("bench over")
        driver.flush()
    await asyncio.gather(*drivers, return_exceptions=True)


# ----------------------------------------------------------------- the bench


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process `pid`, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def enrol(home: Path, count: int) -> tuple[str, str]:
    """Enrol bench-000... in the store of `home` with one token; (token, salt)."""
    from memory import Store
    from protocol.auth import enroll

    token, first = enroll("bench-000")
    with Store.open_path(home / "orrery.db") as store:
        for index in range(count):
            store.enroll_device(f"bench-{index:03d}", salt=first.salt, key=first.key)
    return token, first.salt


def plan_text(index: int, stars: int) -> str:
    return json.dumps(
        {
            "name": f"load-{index}",
            "stars": [
                {"id": f"s{star}", "tool": "shell.run", "args": {"cmd": "true"}}
                for star in range(stars)
            ],
        }
    )


def start_serve(home: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "app.cli", "--data-dir", str(home), "serve"]
    return subprocess.Popen(
        [*command, "--no-planner", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def listening(serve: subprocess.Popen[str]) -> tuple[str, str]:
    """(AIP URL, control URL) as `orrery serve` says them."""
    assert serve.stdout is not None
    aip = serve.stdout.readline()
    control = serve.stdout.readline()
    if " at " not in aip or " at " not in control:
        raise SystemExit(f"orrery serve did not start: {aip!r} {control!r}")
    return aip.split(" at ")[1].strip(), control.split(" at ")[1].split()[0]


def start_worker(
    url: str, token: str, salt: str, max_tasks: int, names: list[str]
) -> subprocess.Popen[str]:
    """A process running the devices `names` (this script with --worker)."""
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", url, token, salt, str(max_tasks), *names],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def stored_successes(home: Path, ids: list[str]) -> int:
    """How many stars of constellations `ids` the store records as succeeded."""
    from memory import Store

    count = 0
    with Store.open_path(home / "orrery.db") as store:
        for cid in ids:
            row = store.constellation(cid)
            stars = row.snapshot.get("stars", {}) if row is not None else {}
            count += sum(1 for star in stars.values() if star.get("status") == "succeeded")
    return count


async def bench(options: argparse.Namespace) -> int:
    from agents.events import ConstellationFinished, StarFinished, StarStarted
    from app.client import Orrery

    total = options.constellations * options.stars
    with tempfile.TemporaryDirectory(prefix="orrery-scale-") as tmp:
        home = Path(tmp)
        token, salt = enrol(home, options.devices)
        serve = start_serve(home)
        workers: list[subprocess.Popen[str]] = []
        submitted: list[Any] = []
        try:
            aip, control = listening(serve)
            names = [f"bench-{index:03d}" for index in range(options.devices)]
            shares = [names[i :: options.workers] for i in range(options.workers)]
            async with Orrery(control, data_dir=home) as client:
                joined = client.events(types={"device.joined"})
                dialled = time.perf_counter()
                for share in shares:
                    workers.append(start_worker(aip, token, salt, options.max_tasks, share))
                seen: set[str] = set()
                last_seq = 0
                async with asyncio.timeout(options.seconds):
                    async for event in joined:
                        seen.add(getattr(event, "device", ""))
                        last_seq = event.seq
                        if len(seen) >= options.devices:
                            break
                await joined.aclose()
                connect_s = time.perf_counter() - dialled
                rss_before, _ = rss_mb(serve.pid)
                print(
                    f"connect: {options.devices} devices in {connect_s:.1f}s "
                    f"({options.workers} worker processes); orchestrator RSS {rss_before:.0f} MiB"
                )
                started_at: dict[tuple[str, str], float] = {}
                trips: list[float] = []
                done = asyncio.Event()
                ended = 0
                halfway: list[float] = []  # the RSS once half the constellations finished

                async def follow() -> None:  # subscribed before the first submit
                    nonlocal ended
                    stream = client.events(
                        after_seq=last_seq,
                        types={"star.started", "star.finished", "constellation.finished"},
                    )
                    async for event in stream:
                        key = (event.constellation_id, getattr(event, "star_id", ""))
                        if isinstance(event, StarStarted):
                            started_at[key] = event.ts
                        elif isinstance(event, StarFinished):
                            if key in started_at:
                                trips.append(event.ts - started_at.pop(key))
                        elif isinstance(event, ConstellationFinished):
                            ended += 1
                            if ended == max(1, options.constellations // 2):
                                halfway.append(rss_mb(serve.pid)[0])
                            if ended >= options.constellations:
                                done.set()
                                break
                    await stream.aclose()

                following = asyncio.create_task(follow())
                first_submit = time.perf_counter()
                submitted = await asyncio.gather(
                    *(
                        client.submit(plan_text=plan_text(i, options.stars), source=f"load-{i}")
                        for i in range(options.constellations)
                    )
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(options.seconds):
                        await done.wait()
                elapsed = time.perf_counter() - first_submit
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            rss_after, rss_peak = rss_mb(serve.pid)
        finally:
            for worker in workers:
                if worker.stdin is not None:
                    with contextlib.suppress(OSError):
                        worker.stdin.close()
            for worker in workers:
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
            serve.terminate()
            serve.wait(60)
        succeeded = stored_successes(home, [run.id for run in submitted])
    lost = total - succeeded
    trips_ms = sorted(t * 1000 for t in trips) or [0.0]
    p50 = statistics.median(trips_ms)
    p99 = trips_ms[min(len(trips_ms) - 1, int(len(trips_ms) * 0.99))]
    rate = succeeded / elapsed if elapsed > 0 else 0.0
    print(
        f"stars: {succeeded}/{total} succeeded in {elapsed:.1f}s "
        f"({options.constellations} constellations of {options.stars}, max {options.max_tasks} "
        f"per device): {rate:.0f} stars/s"
    )
    print(f"round trip (star.started -> star.finished): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(
        f"orchestrator RSS: {rss_before:.0f} MiB with the devices connected, "
        f"{halfway[0] if halfway else 0:.0f} MiB at half the stars, "
        f"{rss_after:.0f} MiB after {succeeded} stars (peak {rss_peak:.0f} MiB)"
    )
    print(
        f"devices={options.devices} stars_per_s={rate:.0f} p99_ms={p99:.0f} "
        f"rss_mb={rss_after:.0f} lost={lost}"
    )
    return 0 if lost == 0 else 1


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, token, salt, max_tasks, *names = sys.argv[2:]
        asyncio.run(run_devices(url, names, token, salt, int(max_tasks)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--constellations", type=int, default=1000)
    parser.add_argument("--stars", type=int, default=20, help="stars per constellation")
    parser.add_argument("--max-tasks", type=int, default=4, help="slots per device")
    parser.add_argument("--workers", type=int, default=2, help="device processes")
    parser.add_argument("--seconds", type=float, default=600.0, help="time budget per phase")
    options = parser.parse_args()
    if not 1 <= options.devices <= 1000:
        parser.error("--devices must be between 1 and 1000 (bench-000 ... bench-999)")
    options.workers = max(1, min(options.workers, options.devices))
    return asyncio.run(bench(options))


if __name__ == "__main__":
    sys.exit(main())
