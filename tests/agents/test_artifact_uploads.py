"""Who may upload artifacts, and how much (issue 16, finding 10): an orchestrator takes an
upload only from a device running a star that may produce one, within a quota per device
and a total one, and keeps its files private. Real AIP connections on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.artifact_store import ArtifactStore, QuotaExceeded
from agents.constellation import Constellation, ConstellationStatus
from agents.constellation.plan_file import parse_plan
from agents.events import StarStarted
from app.device_processes import DeviceProcesses
from app.runtime.assembly import fleet_tools
from devices.agent import DeviceAgent
from devices.artifact_channel import ArtifactTransferFailed
from memory import Store
from tests.served import Served

PUT = """
name: put
stars:
  - id: put
    tool: artifact.put
    args: {path: blob.bin}
"""

BUSY = """
name: busy
stars:
  - id: nap
    tool: shell.run
    args: {cmd: sleep 30}
"""


def plan(text: str) -> Constellation:
    return parse_plan(text, known_tools=fleet_tools())


def stored(store: ArtifactStore) -> list[str]:
    return sorted(p.name for p in (store.root / "objects").iterdir())


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Served, DeviceAgent]]:
    with Store.open_path(tmp_path / "orrery.db") as store:
        async with Served(store, tmp_path) as orchestra:
            processes = DeviceProcesses(store, tmp_path / "devices")
            processes.add("dev", [])
            device = DeviceAgent(
                orchestra.url, "dev", processes.token("dev"), data_dir=tmp_path / "dev"
            )
            stop = asyncio.Event()
            running = asyncio.create_task(device.run(stop))
            try:
                await orchestra.wait_for_devices(1, within=20)
                yield orchestra, device
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(running, 20)


async def test_a_device_with_no_star_cannot_upload(
    fleet: tuple[Served, DeviceAgent], tmp_path: Path
) -> None:
    orchestra, agent = fleet
    assert orchestra.aip.artifacts is not None
    source = tmp_path / "unasked.bin"
    source.write_bytes(b"fill the disk" * 1000)
    for attempt in range(3):  # the review's three offers
        with pytest.raises(ArtifactTransferFailed, match="runs no star that uploads artifacts"):
            await agent.artifacts.upload(source, f"unasked-{attempt}.bin")
    assert stored(orchestra.aip.artifacts) == []


async def test_a_device_running_a_star_that_makes_no_artifact_cannot_upload(
    fleet: tuple[Served, DeviceAgent], tmp_path: Path
) -> None:
    orchestra, agent = fleet
    assert orchestra.aip.artifacts is not None
    started = asyncio.get_running_loop().create_future()

    def on_event(event: object) -> None:
        if isinstance(event, StarStarted) and not started.done():
            started.set_result(event)

    stop_listening = orchestra.stream.listen(on_event)
    busy = plan(BUSY)
    orchestra.runtime.start_constellation(busy)
    try:
        await asyncio.wait_for(started, 20)
        source = tmp_path / "sneaky.bin"
        source.write_bytes(b"x" * 100)
        with pytest.raises(ArtifactTransferFailed, match="runs no star that uploads"):
            await agent.artifacts.upload(source, "sneaky.bin")
    finally:
        stop_listening()
        orchestra.runtime.orchestrator.cancel(busy.id, "test over")
    assert stored(orchestra.aip.artifacts) == []


async def test_a_star_that_uploads_is_held_to_the_device_quota(
    fleet: tuple[Served, DeviceAgent],
) -> None:
    orchestra, agent = fleet
    artifacts = orchestra.aip.artifacts
    assert artifacts is not None
    artifacts.max_per_device = 1000
    (agent.workspace / "blob.bin").write_bytes(b"a" * 600)
    first = await asyncio.wait_for(orchestra.run(plan(PUT)), 60)
    assert first.status is ConstellationStatus.SUCCEEDED, first.stars["put"].error
    assert artifacts.used_by("dev") == 600
    (agent.workspace / "blob.bin").write_bytes(b"b" * 600)  # 1200 in all: over the quota
    second = await asyncio.wait_for(orchestra.run(plan(PUT)), 60)
    assert second.status is ConstellationStatus.FAILED
    error = second.stars["put"].error or ""
    assert "device 'dev' has used its artifact quota" in error
    assert "600 bytes of 1000 bytes" in error
    assert artifacts.used_by("dev") == 600


def test_the_total_quota_and_the_count_survive_a_restart(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, max_total=1500, max_per_device=10_000)
    for device, byte in (("a", b"1"), ("b", b"2")):
        received = tmp_path / "incoming" / f"{device}.bin"
        received.write_bytes(byte * 700)
        store.keep(received, hashlib.sha256(byte * 700).hexdigest(), "x.bin", device)
    assert (store.total, store.used_by("a"), store.used_by("b")) == (1400, 700, 700)
    again = ArtifactStore(tmp_path, max_total=1500)  # an orchestrator restarted
    assert (again.total, again.used_by("a")) == (1400, 700)
    assert "artifact store is full" in (again.room_for("c", 200) or "")
    assert again.room_for("c", 100) is None
    late = tmp_path / "incoming" / "late.bin"
    late.write_bytes(b"3" * 200)
    with pytest.raises(QuotaExceeded, match="full"):
        again.keep(late, hashlib.sha256(b"3" * 200).hexdigest(), "late.bin", "c")
    assert not late.exists()  # not kept, and not left behind


def test_the_same_content_again_costs_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, max_per_device=1000)
    digest = hashlib.sha256(b"z" * 800).hexdigest()
    for _ in range(3):
        received = tmp_path / "incoming" / "z.bin"
        received.write_bytes(b"z" * 800)
        store.keep(received, digest, "z.bin", "a")
    assert store.used_by("a") == 800


def test_the_store_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = ArtifactStore(tmp_path / "artifacts")
        received = store.root / "incoming" / "r.bin"
        received.write_bytes(b"secret")
        store.keep(received, hashlib.sha256(b"secret").hexdigest(), "r.bin", "a")
    finally:
        os.umask(old)
    for path in [store.root, *store.root.rglob("*")]:
        wanted = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == wanted, path
