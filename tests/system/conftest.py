"""Fixtures of the fault tests: a real SQLite store, a served orchestrator in the test's
loop (`tests.served.Served`) and `orrery device` processes (`DeviceProcesses`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.device_processes import DeviceProcesses
from memory import Store
from protocol.session import ServerConfig
from tests.e2e.processes import device_processes
from tests.served import Served


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open_path(tmp_path / "orrery.db") as opened:
        yield opened


@pytest.fixture
async def orchestra(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Served]:
    # `@pytest.mark.heartbeat(s)` sets the interval; a device silent for 3 is lost.
    marker = request.node.get_closest_marker("heartbeat")
    interval = float(marker.args[0]) if marker else 1.0
    config = ServerConfig(heartbeat_interval=interval, heartbeat_misses=3)
    async with Served(store, tmp_path, config=config) as running:
        yield running


@pytest.fixture
def fleet(store: Store, tmp_path: Path) -> Iterator[DeviceProcesses]:
    with device_processes(store, tmp_path / "devices") as processes:
        yield processes


@pytest.fixture
def traces(tmp_path: Path) -> tuple[Path, Path]:
    """(the shared file stars append to, the folder their pid files go to)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    return tmp_path / "shared.txt", pids
