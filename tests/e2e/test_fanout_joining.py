"""End to end: a third `orrery device` started while a fan-out that takes joining devices
runs gets its branch, and the summary waiting for all branches writes its output too.

The orchestrator is a served runtime (`tests.served.Served`: AIP on 127.0.0.1, SQLite
store) in the test's event loop; every device is a real `python -m app.cli device`
process. The timing is the test's: `gate` on atlas waits for a file the test creates
only once the new branch is in the plan, and every wait is for an event, bounded.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agents.constellation import ConstellationStatus
from agents.constellation.plan_file import parse_plan
from agents.events import EditApplied, Event, StarFinished
from app.device_processes import DeviceProcesses
from app.runtime.assembly import fleet_tools
from memory import Store
from protocol.private import private_dir
from protocol.session import ServerConfig
from tests.e2e.processes import device_processes
from tests.served import Served

pytestmark = pytest.mark.slow

WAIT = 60.0  # bound on each wait for a device or an event; never a delay

PLAN = """
name: hosts
stars:
  - id: gate
    tool: shell.run
    on: atlas
    args:
      cmd: "for i in $(seq 1200); do [ -e go ] && exit 0; sleep 0.1; done; exit 1"
      timeout: 150
  - id: host
    tool: shell.run
    on: {each: true, labels: [workers], joining: true}
    args: {cmd: "cat name.txt"}
  - id: summary
    tool: fs.write
    on: atlas
    args: {path: hosts.txt, content: "hosts:\\n${host.output.stdout}"}
    after: [gate, host]
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open_path(tmp_path / "orrery.db") as opened:
        yield opened


@pytest.fixture
async def orchestra(store: Store, tmp_path: Path) -> AsyncIterator[Served]:
    config = ServerConfig(heartbeat_interval=1.0, heartbeat_misses=3)
    async with Served(store, tmp_path, config=config) as running:
        yield running


@pytest.fixture
def fleet(store: Store, tmp_path: Path) -> Iterator[DeviceProcesses]:
    with device_processes(store, tmp_path / "devices") as processes:
        yield processes


def workspace(fleet: DeviceProcesses, name: str, labels: list[str]) -> Path:
    """Enrol device `name`; its workspace, holding a name.txt with its name."""
    device = fleet.add(name, labels)
    place = private_dir(device.data_dir) / "workspace"
    place.mkdir()
    (place / "name.txt").write_text(name)
    return place


class Seen:
    """Events of the run as they come; `wait(test)` returns the first that passes."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait(self, test: object) -> Event:
        async with asyncio.timeout(WAIT):
            while True:
                for event in self.events:
                    if test(event):  # type: ignore[operator]
                        return event
                self.changed.clear()
                await self.changed.wait()


async def test_a_device_started_mid_run_gets_its_branch_and_the_summary_its_output(
    orchestra: Served, fleet: DeviceProcesses, tmp_path: Path
) -> None:
    atlas = workspace(fleet, "atlas", ["reports"])
    workspace(fleet, "borealis", ["workers"])
    for name in ("atlas", "borealis"):
        fleet.start(name, orchestra.url)
    await orchestra.wait_for_devices(2, within=WAIT)
    seen = Seen()
    orchestra.stream.listen(seen)
    plan = parse_plan(PLAN, known_tools=fleet_tools())
    running = asyncio.create_task(orchestra.run(plan))
    await seen.wait(lambda e: isinstance(e, StarFinished) and e.star_id == "host-borealis")

    workspace(fleet, "cygnus", ["workers"])
    fleet.start("cygnus", orchestra.url)
    edit = await seen.wait(lambda e: isinstance(e, EditApplied))
    assert isinstance(edit, EditApplied)
    assert (edit.version, edit.rationale) == (2, "device cygnus joined: host-cygnus of host")
    (atlas / "go").touch()  # now the gate opens; summary waits for host-cygnus too

    final = await asyncio.wait_for(running, WAIT)

    assert final.status is ConstellationStatus.SUCCEEDED, final.status
    assert final.stars["host-cygnus"].attempts[-1].device == "cygnus"
    assert (atlas / "hosts.txt").read_text() == "hosts:\nborealis\ncygnus"
    # `orrery show` says so, from the data dir's store.
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "--data-dir", str(tmp_path), "show", plan.id],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "edit to version 2: device cygnus joined: host-cygnus of host" in shown.stdout
    assert "fan-out: host takes joining devices; branches on borealis, cygnus (joined)" in (
        shown.stdout
    )
