"""The orchestrator's artifact store, and artifact transfers over real AIP connections."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.artifact_store import ArtifactStore
from agents.constellation import Constellation, ConstellationStatus
from agents.constellation.plan_file import parse_plan
from app.device_processes import DeviceProcesses
from app.runtime.assembly import fleet_tools
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
    assert len([p for p in (tmp_path / "objects").iterdir() if not p.suffix]) == 1
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


ROUND_TRIP = """
name: round-trip
stars:
  - id: put
    tool: artifact.put
    args: {path: big.bin}
  - id: get
    after: [put]
    tool: artifact.get
    args: {artifact: "${put.output.artifact}", path: copy/big.bin}
"""


def plan(text: str) -> Constellation:
    return parse_plan(text, known_tools=fleet_tools())


async def test_a_round_trip_through_the_orchestrator_is_byte_exact(
    fleet: tuple[Served, DeviceAgent],
) -> None:
    orchestra, agent = fleet
    source = agent.workspace / "big.bin"
    source.write_bytes(bytes(range(256)) * 8192 + b"tail")  # 2 MiB + 4: several chunks
    done = await asyncio.wait_for(orchestra.run(plan(ROUND_TRIP)), 60)
    assert done.status is ConstellationStatus.SUCCEEDED, done.stars["put"].error
    put = done.stars["put"].output
    assert put["artifact"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert put["size"] == source.stat().st_size
    assert (agent.workspace / "copy" / "big.bin").read_bytes() == source.read_bytes()
    assert done.stars["get"].output["size"] == put["size"]


async def test_fetching_an_unknown_artifact_names_it(agent: DeviceAgent, tmp_path: Path) -> None:
    with pytest.raises(ArtifactTransferFailed, match=r"no artifact f{64} is stored here"):
        await agent.artifacts.download("f" * 64, tmp_path / "x")
    assert not (tmp_path / "x").exists()


async def test_artifact_tools_without_an_orchestrator_say_so(tmp_path: Path) -> None:
    args = ArtifactGetArgs(artifact="a" * 64, path="x.bin")
    with pytest.raises(ToolError, match="need a connection to an orchestrator"):
        await ArtifactGetTool().run(args, ToolContext(workspace=tmp_path))


async def test_an_upload_the_orchestrator_refuses_fails_at_once_with_its_reason(
    fleet: tuple[Served, DeviceAgent],
) -> None:
    orchestra, agent = fleet
    assert orchestra.aip.artifacts is not None
    orchestra.aip.artifacts.max_size = 1 << 20  # the orchestrator's limit: 1 MiB
    (agent.workspace / "big.bin").write_bytes(b"x" * (3 << 20))  # several chunks
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = await asyncio.wait_for(orchestra.run(plan(ROUND_TRIP)), 60)
    assert done.status is ConstellationStatus.FAILED
    assert "exceeds the limit" in (done.stars["put"].error or "")
    assert loop.time() - started < 10  # refused, not waited out (the timeout is 600 s)
