"""The fleet-wide event stream over /control/v1, watched from outside: a real `orrery serve`,
a real `orrery device` process, and a control client subscribed to every device event.
The test reads the stream as it comes (no polling): the device connects, goes busy with a
star, and, killed with SIGKILL, is declared lost by the heartbeats."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from agents.events import DeviceJoined, DeviceLeft, DeviceStateChanged, Event
from app.client import Orrery
from tests.e2e.processes import enroll, start_device, start_serve, stop

WAIT = 60.0

SLOW = """
name: long-nap
stars:
  - id: nap
    tool: shell.run
    args: {cmd: sleep 60}
"""


async def test_a_subscriber_sees_a_device_connect_go_busy_and_be_lost(tmp_path: Path) -> None:
    home = tmp_path / "server"
    serve, aip, control = start_serve(home, 0, "--heartbeat", "0.5")
    device = None
    try:
        token = enroll(home, "mover")
        async with Orrery(control, data_dir=home) as client:
            stream = client.events(types={"device.joined", "device.state", "device.left"})
            seen: list[Event] = []

            async def until(predicate: type[Event], **fields: object) -> Event:
                async with asyncio.timeout(WAIT):
                    async for event in stream:
                        seen.append(event)
                        if isinstance(event, predicate) and all(
                            getattr(event, k) == v for k, v in fields.items()
                        ):
                            return event
                raise AssertionError(f"the stream ended before {predicate.__name__} {fields}")

            subscribed = asyncio.ensure_future(until(DeviceJoined, device="mover"))
            await asyncio.sleep(0)  # the subscription is made before the device starts
            device = start_device(tmp_path / "mover", aip, "mover", token, "--max-tasks", "1")
            joined = await subscribed
            assert isinstance(joined, DeviceJoined)
            assert "shell.run" in joined.tools
            assert joined.max_tasks == 1
            run = await client.submit(SLOW)
            busy = await until(DeviceStateChanged, device="mover", state="busy")
            assert isinstance(busy, DeviceStateChanged)
            assert busy.running == 1
            os.kill(device.pid, signal.SIGKILL)
            lost = await until(DeviceStateChanged, device="mover", state="lost")
            left = await until(DeviceLeft, device="mover")
            assert isinstance(left, DeviceLeft)
            assert left.lost
            assert lost.seq < left.seq
            await stream.aclose()
            await run.cancel("the test is over")
        states = [e.state for e in seen if isinstance(e, DeviceStateChanged)]
        assert states[0] == "online"
        assert "busy" in states
        assert states[-1] == "lost"
        seqs = [e.seq for e in seen]
        assert seqs == sorted(set(seqs))
    finally:
        stop([device, serve])
