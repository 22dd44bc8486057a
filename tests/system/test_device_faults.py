"""Faults of a device, with real `orrery device` processes against a served orchestrator:
each star's effect is a line appended to a shared file, and the test counts the lines.

- SIGKILL mid-star: the star's processes die with the device (no orphan finishes the
  effect later), and the star runs again elsewhere: its line appears exactly once, both
  when the device comes back at once (the attempt fails over at the reconnect, reported
  interrupted) and when it stays away (after the reconnect grace).
- SIGSTOP until declared lost, then SIGCONT: the star fails over; the paused device's late
  result is refused by fencing (the effect of its shell, which was not paused, happens).
- The link cut and restored (a TCP relay of the test's own): the attempt stays with its
  device and its result is taken; the effect happens once.
- A slow link (every chunk toward the orchestrator held 0.6 s): nothing is taken for lost.
- A device clock a year off, either way: its stars run once and it is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agents.constellation import ConstellationStatus
from agents.events import DeviceLeft, DeviceStateChanged, Event, StarStarted
from app.device_processes import DEVICE_TOKEN_ENV, DeviceProcesses
from devices.outbox import Outbox
from memory import Store
from protocol.private import open_private, private_dir
from tests.served import Served
from tests.system.faults import (
    Relay,
    alive,
    group_alive,
    lines,
    plan,
    traced_star,
    wait_for,
)

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


def _outbox_size(path: Path) -> int:
    with contextlib.closing(Outbox.open(path)) as outbox:
        return len(outbox.pending())


@pytest.mark.heartbeat(1.0)
async def test_a_device_paused_until_declared_lost_has_its_late_result_refused(
    orchestra: Served, fleet: DeviceProcesses, store: Store, traces: tuple[Path, Path]
) -> None:
    """SIGSTOP reveals itself only through missing heartbeats. The paused device's shell
    runs on (it is not stopped with it) and finishes its effect: that repeat is the
    documented cost of a pause. Its late result, sent after SIGCONT, is refused by
    fencing and never replaces the result of the attempt that ran elsewhere."""
    shared, pids = traces
    events: list[Event] = []
    await _started(orchestra, fleet, ["paused"], events)
    gate = pids.parent / "go"
    star = traced_star("effect", shared, pids, 0, gate=gate)
    star["args"] = {"cmd": f"{star['args']['cmd']}; echo $PWD"}  # type: ignore[index]
    running = asyncio.create_task(orchestra.run(plan({"name": "pause", "stars": [star]})))
    await wait_for((pids / "effect").exists, what="the star's shell to start")
    fleet.add("spare", ["worker"])
    fleet.start("spare", orchestra.url)
    await orchestra.wait_for_devices(2, within=60)
    device = fleet.devices["paused"]
    assert device.process is not None
    device.process.send_signal(signal.SIGSTOP)
    try:
        await wait_for(
            lambda: any(isinstance(e, DeviceLeft) and e.lost for e in events),
            within=20,
            what="the paused device to be declared lost",
        )
        gate.touch()  # the paused device's shell goes on, and so will the retry's
        final = await asyncio.wait_for(running, 60)
    finally:
        device.process.send_signal(signal.SIGCONT)

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    first, second = final.stars["effect"].attempts
    assert (first.device, second.device) == ("paused", "spare")
    assert "lost" in (first.error or "")
    assert "spare" in final.stars["effect"].output["stdout"]  # type: ignore[index]
    # Resumed, the device sends attempt 1's result; it is refused and dropped.
    refused = f"result of {final.id}/effect#1 refused"
    await wait_for(lambda: refused in device.log_path.read_text(), within=30, what="the refusal")
    outbox = device.data_dir / "outbox.db"  # it logs the refusal, then drops the entry
    await wait_for(lambda: _outbox_size(outbox) == 0, within=10, what="the entry to go")
    assert [(r.star_id, r.attempt) for r in store.results(final.id)] == [("effect", 2)]
    assert lines(shared) == ["effect", "effect"]  # the paused shell's effect, and the retry's


@pytest.mark.heartbeat(2.0)  # a 6 s grace: the link comes back well within it
async def test_a_link_cut_and_restored_mid_star_keeps_the_attempt_and_runs_it_once(
    orchestra: Served, fleet: DeviceProcesses, traces: tuple[Path, Path]
) -> None:
    shared, pids = traces
    relay = Relay(orchestra.endpoint.port)
    port = await relay.start()
    events: list[Event] = []
    orchestra.stream.listen(events.append)
    fleet.add("remote", ["worker"])
    fleet.start("remote", f"ws://127.0.0.1:{port}/aip/v1")
    await orchestra.wait_for_devices(1, within=60)
    star = traced_star("effect", shared, pids, 2.0)
    running = asyncio.create_task(orchestra.run(plan({"name": "cut", "stars": [star]})))
    try:
        await wait_for((pids / "effect").exists, what="the star's shell to start")
        relay.cut()  # both directions drop; new connections are refused meanwhile
        await wait_for(
            lambda: any(isinstance(e, DeviceStateChanged) and e.state == "offline" for e in events),
            what="the orchestrator to see the link gone",
        )
        relay.restore()
        final = await asyncio.wait_for(running, 60)
    finally:
        await relay.close()

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    assert [a.number for a in final.stars["effect"].attempts] == [1]
    assert relay.links >= 2  # it did reconnect
    assert lines(shared) == ["effect"]


@pytest.mark.heartbeat(1.0)  # lost after 3 s of silence; the link delays everything 0.6 s
async def test_a_device_whose_results_arrive_slowly_is_not_taken_for_lost(
    orchestra: Served, fleet: DeviceProcesses, traces: tuple[Path, Path]
) -> None:
    shared, pids = traces
    relay = Relay(orchestra.endpoint.port, delay_up=0.6)
    port = await relay.start()
    events: list[Event] = []
    orchestra.stream.listen(events.append)
    fleet.add("slow", ["worker"])
    fleet.start("slow", f"ws://127.0.0.1:{port}/aip/v1")
    try:
        await orchestra.wait_for_devices(1, within=60)
        stars = [traced_star(f"s{i}", shared, pids, 0.2) for i in range(3)]
        final = await asyncio.wait_for(orchestra.run(plan({"name": "slow", "stars": stars})), 90)
    finally:
        await relay.close()

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    assert all(len(star.attempts) == 1 for star in final.stars.values())
    assert not any(isinstance(e, DeviceLeft) for e in events)
    assert sorted(lines(shared)) == ["s0", "s1", "s2"]


def _device_with_clock_off(
    fleet: DeviceProcesses, name: str, url: str, offset: float
) -> subprocess.Popen[bytes]:
    """`orrery device` whose wall clock (`time.time`) runs `offset` seconds off."""
    device = fleet.devices[name]
    private_dir(device.data_dir)
    code = (
        "import sys, time; real = time.time; "
        f"time.time = lambda: real() + {offset!r}; "
        "from app.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = ["--data-dir", str(device.data_dir), "device", "--server", url, "--name", name]
    with open_private(device.log_path, "ab") as log_file:
        device.process = subprocess.Popen(
            [sys.executable, "-c", code, *argv, "--labels", ",".join(device.labels)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, DEVICE_TOKEN_ENV: fleet.token(name)},
        )
    return device.process


@pytest.mark.heartbeat(1.0)
@pytest.mark.parametrize("offset", [-86_400.0 * 365, 86_400.0 * 365])
async def test_a_device_whose_clock_is_a_year_off_runs_its_stars_and_stays(
    orchestra: Served, fleet: DeviceProcesses, traces: tuple[Path, Path], offset: float
) -> None:
    """Liveness, timeouts and fencing run on the orchestrator's clock; the device's
    timestamps (in its envelopes) are never compared with it."""
    shared, pids = traces
    events: list[Event] = []
    orchestra.stream.listen(events.append)
    fleet.add("skewed", ["worker"])
    _device_with_clock_off(fleet, "skewed", orchestra.url, offset)
    await orchestra.wait_for_devices(1, within=60)
    star = traced_star("effect", shared, pids, 3.5)  # longer than the 3 s loss deadline
    star["timeout"] = 30
    final = await asyncio.wait_for(orchestra.run(plan({"name": "skew", "stars": [star]})), 60)

    assert final.status is ConstellationStatus.SUCCEEDED, final.reason
    assert len(final.stars["effect"].attempts) == 1
    assert not any(isinstance(e, DeviceLeft) for e in events)
    assert lines(shared) == ["effect"]
