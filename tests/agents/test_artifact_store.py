"""The orchestrator's artifact store, and artifact transfers over real AIP connections."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.artifact_store import ArtifactStore
from app.device_processes import DeviceProcesses
from devices.agent import DeviceAgent
from devices.artifact_channel import ArtifactTransferFailed
from devices.tools import ToolContext, ToolError
from devices.tools.artifacts import ArtifactGetArgs, ArtifactGetTool
from memory import Store
from tests.served import Served


def test_the_store_keeps_content_once_under_its_hash(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = b"report\n" * 100
    digest = hashlib.sha256(data).hexdigest()
    for name in ("a.txt", "b.txt"):
        received = tmp_path / "incoming" / name
        received.write_bytes(data)
        kept = store.keep(received, digest, name)
        assert not received.exists()
    assert kept.read_bytes() == data
    assert store.find(digest) == (kept, "b.txt")
    assert len([p for p in (tmp_path / "objects").iterdir() if p.suffix != ".name"]) == 1
    assert store.find("0" * 64) is None
    assert store.find("../../etc/passwd") is None


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


@pytest.fixture
def agent(fleet: tuple[Served, DeviceAgent]) -> DeviceAgent:
    return fleet[1]


async def test_a_round_trip_through_the_orchestrator_is_byte_exact(
    agent: DeviceAgent, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(range(256)) * 8192 + b"tail")  # 2 MiB + 4: several chunks
    uploaded = await agent.artifacts.upload(source, "big.bin")
    assert uploaded.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert uploaded.size == source.stat().st_size
    back = await agent.artifacts.download(uploaded.sha256, tmp_path / "copy" / "big.bin")
    assert (tmp_path / "copy" / "big.bin").read_bytes() == source.read_bytes()
    assert back.size == uploaded.size


async def test_fetching_an_unknown_artifact_names_it(agent: DeviceAgent, tmp_path: Path) -> None:
    with pytest.raises(ArtifactTransferFailed, match=r"no artifact f{64} is stored here"):
        await agent.artifacts.download("f" * 64, tmp_path / "x")
    assert not (tmp_path / "x").exists()


async def test_artifact_tools_without_an_orchestrator_say_so(tmp_path: Path) -> None:
    args = ArtifactGetArgs(artifact="a" * 64, path="x.bin")
    with pytest.raises(ToolError, match="need a connection to an orchestrator"):
        await ArtifactGetTool().run(args, ToolContext(workspace=tmp_path))


async def test_an_upload_the_orchestrator_refuses_fails_at_once_with_its_reason(
    fleet: tuple[Served, DeviceAgent], tmp_path: Path
) -> None:
    orchestra, agent = fleet
    assert orchestra.aip.artifacts is not None
    orchestra.aip.artifacts.max_size = 1 << 20  # the orchestrator's limit: 1 MiB
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * (3 << 20))  # several chunks
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ArtifactTransferFailed, match="exceeds the limit"):
        await agent.artifacts.upload(source, "big.bin")
    assert loop.time() - started < 10  # refused, not waited out (the timeout is 600 s)
