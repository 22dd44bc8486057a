"""End to end: the planner and `orrery devices list` see MCP tools as real devices
announce them in their `hello`.

A served runtime (`tests.served.Served`) in the test's loop, and two `orrery device`
subprocesses: `clock` with `mcp-server-time` from PyPI, `fragile` with the tests' own
`crashy.py`, one of whose tools takes a required object argument.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agents.fleet_dispatcher import merged_tool_schemas
from agents.planner.context import PlanningContext
from agents.planner.schema import plan_schema
from app.device_processes import DeviceProcesses
from memory import Store
from tests.e2e.processes import device_processes, orrery
from tests.served import Served

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
CRASHY = Path(__file__).parents[1] / "mcp_servers" / "crashy.py"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open_path(tmp_path / "orrery.db") as opened:
        yield opened


@pytest.fixture
async def served(store: Store, tmp_path: Path) -> AsyncIterator[Served]:
    async with Served(store, tmp_path) as running:
        yield running


@pytest.fixture
def fleet(store: Store, tmp_path: Path) -> Iterator[DeviceProcesses]:
    with device_processes(store, tmp_path / "devices") as processes:
        yield processes


def with_policy(fleet: DeviceProcesses, name: str, policy: str) -> list[str]:
    device = fleet.add(name)
    path = device.data_dir.parent / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(policy)
    return ["--policy", str(path)]


async def test_the_planner_gets_mcp_tools_from_the_hello_and_refuses_unenforceable_ones(
    served: Served, fleet: DeviceProcesses, tmp_path: Path
) -> None:
    clock = with_policy(
        fleet, "clock", f'[mcp.servers.time]\ncommand = "{BIN / "mcp-server-time"}"\n'
    )
    fragile = with_policy(
        fleet,
        "fragile",
        f'[mcp.servers.crashy]\ncommand = "{sys.executable}"\n'
        f'args = ["{CRASHY}", "{tmp_path / "crashy.pid"}"]\n',
    )
    fleet.start("clock", served.url, extra=clock)
    fleet.start("fragile", served.url, extra=fragile)
    await served.wait_for_devices(2, within=60)

    # What the runtime's planner is given: the devices' hello schemas, merged.
    schemas = merged_tool_schemas([served.aip])
    assert schemas["mcp.time.get_current_time"]["required"] == ["timezone"]
    context = PlanningContext.from_devices(served.aip.devices(), schemas)
    assert "mcp.time.get_current_time" in context.tools
    assert context.devices_with("mcp.time.get_current_time") == ["clock"]
    assert "mcp.crashy.echo" in context.tools
    assert "mcp.crashy.configure" not in context.tools
    assert context.refused["mcp.crashy.configure"] == (
        "required argument 'settings' is an object, which the grammar cannot give"
    )
    generation = plan_schema(context)
    alternatives = json.dumps(generation)
    assert '"const": "mcp.time.get_current_time"' in alternatives
    args = generation["$defs"]["args-mcp-time-get_current_time"]
    assert args["required"] == ["timezone"]
    assert "args-mcp-crashy-configure" not in generation["$defs"]

    # `orrery devices list` shows each device's MCP tools.
    listed = await asyncio.to_thread(
        subprocess.run,
        orrery(tmp_path, "devices", "list", "--server", served.control_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    clock_line = next(i for i, line in enumerate(lines) if line.startswith("clock "))
    assert lines[clock_line + 1].split() == [
        "mcp:",
        "mcp.time.convert_time,",
        "mcp.time.get_current_time",
    ]
    fragile_line = next(i for i, line in enumerate(lines) if line.startswith("fragile "))
    assert "mcp.crashy.configure" in lines[fragile_line + 1]
