"""End to end: an orchestrator with real `orrery device` processes on 127.0.0.1.

The orchestrator (a served runtime, `tests.served.Served`: AIP server, WebSocket
dispatcher, artifact store, SQLite store) runs in the test's event loop so the test can
watch its events; every device is a separate `python -m app.cli device` process with its
own data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agents.constellation import Constellation, ConstellationStatus, PlanSpec, build_constellation
from agents.constellation.plan_file import load_plan
from agents.events import Event, StarFinished, StarStarted
from app.device_processes import DeviceProcesses
from app.resources import resources_dir
from app.runtime.assembly import fleet_tools
from devices.outbox import Outbox
from memory import Store
from protocol.session import ServerConfig
from tests.e2e.processes import device_processes
from tests.served import Served

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open_path(tmp_path / "orrery.db") as opened:
        yield opened


@pytest.fixture
async def orchestra(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Served]:
    # Short heartbeats make a lost device count as lost within seconds (3 missed); a test
    # that restarts a device on purpose asks for more time (`@pytest.mark.heartbeat(s)`).
    marker = request.node.get_closest_marker("heartbeat")
    interval = float(marker.args[0]) if marker else 1.0
    config = ServerConfig(heartbeat_interval=interval, heartbeat_misses=3)
    async with Served(store, tmp_path, config=config) as running:
        yield running


@pytest.fixture
def fleet(store: Store, tmp_path: Path) -> Iterator[DeviceProcesses]:
    with device_processes(store, tmp_path / "devices") as processes:
        yield processes


def plan(text: dict[str, object]) -> Constellation:
    return build_constellation(PlanSpec.model_validate(text), known_tools=fleet_tools())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def wait_for(predicate: object, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {predicate}")
        await asyncio.sleep(0.05)


async def test_three_labelled_devices_run_parallel_branches_and_move_an_artifact(
    orchestra: Served, fleet: DeviceProcesses, tmp_path: Path
) -> None:
    for name, labels in [("atlas", ["reports"]), ("borealis", ["build"]), ("cygnus", ["storage"])]:
        fleet.add(name, labels)
        fleet.start(name, orchestra.url)
    await orchestra.wait_for_devices(3, within=60)
    events: list[Event] = []
    orchestra.stream.listen(events.append)
    (relay,) = [
        load_plan(p, known_tools=fleet_tools())
        for p in sorted((resources_dir() / "plans" / "fleet").glob("*.yaml"))
    ]

    final = await asyncio.wait_for(orchestra.run(relay), 120)

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    ran_on = {e.star_id: e.device for e in events if isinstance(e, StarStarted)}
    assert ran_on["build_facts"] == ran_on["build_put"] == "borealis"
    assert ran_on["storage_facts"] == ran_on["storage_put"] == "cygnus"
    assert ran_on["get_build"] == ran_on["get_storage"] == ran_on["combine"] == "atlas"
    # The two branches overlapped: each started before the other finished.
    order = [
        (type(e).__name__, e.star_id) for e in events if isinstance(e, StarStarted | StarFinished)
    ]
    assert order.index(("StarStarted", "storage_facts")) < order.index(
        ("StarFinished", "build_put")
    )
    # The artifact arrived intact: the same bytes as on the producing device.
    source = fleet.devices["borealis"].data_dir / "workspace" / "build-facts.txt"
    copy = fleet.devices["atlas"].data_dir / "workspace" / "incoming" / "build-facts.txt"
    uploaded = final.stars["build_put"].output
    assert isinstance(uploaded, dict)
    assert uploaded["artifact"] == sha256(source) == sha256(copy)
    report = (fleet.devices["atlas"].data_dir / "workspace" / "fleet-report.txt").read_text()
    assert report.startswith("build: ")
    assert "storage: " in report


async def test_a_device_killed_mid_star_has_its_star_reassigned(
    orchestra: Served, fleet: DeviceProcesses
) -> None:
    for name in ("worker-a", "worker-b"):
        fleet.add(name, ["worker"])
        fleet.start(name, orchestra.url)
    await orchestra.wait_for_devices(2, within=60)
    events: list[Event] = []
    orchestra.stream.listen(events.append)
    slow = plan(
        {
            "name": "survives-a-kill",
            "stars": [
                {
                    "id": "slow",
                    "tool": "shell.run",
                    "on": {"labels": ["worker"]},
                    "retries": 1,
                    "args": {"cmd": "sleep 3 && echo finished", "timeout": 30},
                }
            ],
        }
    )
    running = asyncio.create_task(orchestra.run(slow))
    await wait_for(lambda: any(isinstance(e, StarStarted) for e in events))
    (first,) = [e for e in events if isinstance(e, StarStarted)]
    fleet.kill(first.device)  # SIGKILL: no goodbye, no result

    final = await asyncio.wait_for(running, 60)

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    starts = [e for e in events if isinstance(e, StarStarted)]
    assert (starts[0].attempt, starts[0].device) == (1, first.device)
    assert starts[-1].attempt == 2
    assert starts[-1].device != first.device
    assert final.stars["slow"].output["stdout"].strip() == "finished"  # type: ignore[index]


class FreezableProxy:
    """A TCP relay on 127.0.0.1 that can hold everything it receives, and cut every link."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self._writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    await self.flowing.wait()  # frozen: hold it (and lose it if cut)
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.mark.heartbeat(4.0)  # the restart must come within the 12 s grace, even when slow
async def test_a_result_unacked_at_a_restart_is_delivered_once(
    orchestra: Served, fleet: DeviceProcesses, store: Store
) -> None:
    proxy = FreezableProxy(orchestra.endpoint.port)
    port = await proxy.start()
    fleet.add("solo", ["worker"])
    fleet.start("solo", f"ws://127.0.0.1:{port}/aip/v1")
    await orchestra.wait_for_devices(1, within=60)
    events: list[Event] = []
    orchestra.stream.listen(events.append)
    job = plan(
        {
            "name": "delivered-once",
            "stars": [{"id": "job", "tool": "shell.run", "args": {"cmd": "sleep 1 && echo done"}}],
        }
    )
    running = asyncio.create_task(orchestra.run(job))
    await wait_for(lambda: any(isinstance(e, StarStarted) for e in events))
    proxy.flowing.clear()  # from now on nothing reaches the orchestrator: no ack comes back
    outbox_path = fleet.devices["solo"].data_dir / "outbox.db"

    def result_waits_in_the_outbox() -> bool:
        with contextlib.closing(Outbox.open(outbox_path)) as outbox:
            return len(outbox.pending()) == 1

    await wait_for(result_waits_in_the_outbox, within=20)
    fleet.kill("solo")  # the result is on disk, unacknowledged
    proxy.cut()
    proxy.flowing.set()
    assert not running.done()
    fleet.start("solo", f"ws://127.0.0.1:{port}/aip/v1")  # same data dir, same outbox

    final = await asyncio.wait_for(running, 60)

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    assert final.stars["job"].output["stdout"].strip() == "done"  # type: ignore[index]
    assert [e.attempt for e in events if isinstance(e, StarStarted)] == [1]
    assert len([e for e in events if isinstance(e, StarFinished)]) == 1
    (stored,) = store.results(final.id)
    assert (stored.star_id, stored.attempt) == ("job", 1)
    with contextlib.closing(Outbox.open(outbox_path)) as outbox:
        await wait_for(lambda: outbox.pending() == [], within=10)  # acked after the restart
    await proxy.close()


def test_orrery_demo_headless_runs_the_fleet_plans_on_three_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    from app.commands.serve import DEMO_REQUESTS

    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "--data-dir", str(tmp_path), "demo", "--headless"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "constellation 'relay-report' succeeded" in result.stderr
    for name in ("atlas", "borealis", "cygnus"):
        assert name in result.stdout  # the summary names where each star ran
    report = tmp_path / "fleet-devices" / "atlas" / "workspace" / "fleet-report.txt"
    assert report.read_text().startswith("build: ")
    # Then the demo's request in words, planned by the embedded model for these devices.
    assert "planning with the local model" in result.stderr
    with Store.open_path(tmp_path / "orrery.db") as store:
        planned, relay = store.constellations(limit=5)  # newest first
        assert (relay.name, relay.status) == ("relay-report", "succeeded")
        assert planned.name == DEMO_REQUESTS[0]
        assert planned.status == "succeeded"  # the exit code above says so too
        assert planned.snapshot["rationale"]
        assert {device.name: device.state for device in store.devices()} == {
            "atlas": "offline",
            "borealis": "offline",
            "cygnus": "offline",
        }


async def test_a_device_stopped_with_sigterm_hands_its_star_back(
    orchestra: Served, fleet: DeviceProcesses, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    import signal

    caplog.set_level(logging.INFO, logger="orrery.aip.dispatcher")
    fleet.add("leaving", ["worker"])
    fleet.add("staying", ["worker"])
    fleet.start("leaving", orchestra.url, extra=["--shutdown-grace", "1", "--max-tasks", "1"])
    await orchestra.wait_for_devices(1, within=60)
    events: list[Event] = []
    orchestra.stream.listen(events.append)
    long = plan(
        {
            "name": "handed-back",
            "stars": [
                {
                    "id": "long",
                    "tool": "shell.run",
                    "on": {"labels": ["worker"]},
                    "retries": 1,
                    # long on the leaving device (its workspace path names it), quick elsewhere
                    "args": {
                        "cmd": 'case "$PWD" in *leaving*) sleep 60;; esac; echo finished',
                        "timeout": 90,
                    },
                }
            ],
        }
    )
    running = asyncio.create_task(orchestra.run(long))
    await wait_for(lambda: any(isinstance(e, StarStarted) for e in events))
    await wait_for(lambda: {d.name: d.state for d in store.devices()}["leaving"] == "busy")
    fleet.start("staying", orchestra.url)
    await orchestra.wait_for_devices(2, within=60)
    leaving = fleet.devices["leaving"].process
    assert leaving is not None
    leaving.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(leaving.wait, 30) == 0  # a clean exit

    final = await asyncio.wait_for(running, 60)

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    first, second = final.stars["long"].attempts
    assert "shut down before the star finished" in (first.error or "")
    assert (first.device, second.device) == ("leaving", "staying")
    # It said goodbye: offline at once, and the orchestrator knows it left on purpose (so it
    # neither waits for it nor reports it lost; tests/agents proves that on a virtual clock).
    assert {d.name: d.state for d in store.devices()}["leaving"] == "offline"
    said = [r.getMessage() for r in caplog.records if r.name == "orrery.aip.dispatcher"]
    assert "device leaving left: device stopping" in said
    assert not any("leaving" in line and "lost" in line for line in said)
