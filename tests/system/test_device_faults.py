"""Faults of a device, with real `orrery device` processes against a served orchestrator:
each star's effect is a line appended to a shared file, and the test counts the lines.

- SIGKILL mid-star: the star's processes die with the device (no orphan finishes the
  effect later), and the star runs again elsewhere: its line appears exactly once, both
  when the device comes back at once (the attempt fails over at the reconnect, reported
  interrupted) and when it stays away (after the reconnect grace).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from agents.constellation import ConstellationStatus
from agents.events import Event, StarStarted
from app.device_processes import DeviceProcesses
from tests.served import Served
from tests.system.faults import alive, group_alive, lines, plan, traced_star, wait_for

pytestmark = pytest.mark.slow


async def _started(
    orchestra: Served, fleet: DeviceProcesses, names: list[str], events: list[Event]
) -> None:
    for name in names:
        fleet.add(name, ["worker"])
        fleet.start(name, orchestra.url)
    await orchestra.wait_for_devices(len(names), within=60)
    orchestra.stream.listen(events.append)


@pytest.mark.heartbeat(5.0)  # a 15 s grace: the fail-over below cannot come from it
async def test_a_device_killed_mid_star_and_restarted_takes_its_child_and_hands_over_at_once(
    orchestra: Served, fleet: DeviceProcesses, traces: tuple[Path, Path]
) -> None:
    shared, pids = traces
    events: list[Event] = []
    await _started(orchestra, fleet, ["kept", "killed"], events)
    star = traced_star("effect", shared, pids, 1.5)
    running = asyncio.create_task(orchestra.run(plan({"name": "kill-9", "stars": [star]})))
    pid_file = pids / "effect"
    await wait_for(pid_file.exists, what="the star's shell to start")
    shell = int(pid_file.read_text())
    (first,) = [e for e in events if isinstance(e, StarStarted)]
    pid_file.unlink()

    fleet.kill(first.device)  # SIGKILL, mid-sleep: no goodbye, no result
    await wait_for(lambda: not group_alive(shell), within=10, what="the star's processes to die")
    assert not alive(shell)
    assert lines(shared) == []  # killed, not finished: a shell that ended by itself wrote first
    fleet.start(first.device, orchestra.url)  # the same data dir: a restart
    final = await asyncio.wait_for(running, 60)

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    attempts = final.stars["effect"].attempts
    assert len(attempts) == 2
    assert "came back without this attempt" in (attempts[0].error or ""), attempts[0].error
    assert lines(shared) == ["effect"]


@pytest.mark.heartbeat(1.0)
async def test_a_device_killed_for_good_mid_star_fails_over_after_the_grace_once(
    orchestra: Served, fleet: DeviceProcesses, traces: tuple[Path, Path]
) -> None:
    shared, pids = traces
    events: list[Event] = []
    await _started(orchestra, fleet, ["first", "second", "third"], events)
    stars = [traced_star(f"s{i}", shared, pids, 1.5) for i in range(3)]
    running = asyncio.create_task(orchestra.run(plan({"name": "three", "stars": stars})))
    await wait_for(lambda: len(list(pids.iterdir())) == 3, what="three shells")
    victim = next(e for e in events if isinstance(e, StarStarted))
    shell = int((pids / victim.star_id).read_text())
    victims_stars = [
        e.star_id for e in events if isinstance(e, StarStarted) and e.device == victim.device
    ]

    fleet.kill(victim.device, signal.SIGKILL)
    await wait_for(lambda: not group_alive(shell), within=10, what="the star's processes to die")
    assert victim.star_id not in lines(shared)  # killed before its line
    final = await asyncio.wait_for(running, 60)

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    for star_id in victims_stars:
        assert "lost" in (final.stars[star_id].attempts[0].error or "")
    assert sorted(lines(shared)) == ["s0", "s1", "s2"]
